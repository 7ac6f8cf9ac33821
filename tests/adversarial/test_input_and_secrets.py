"""Hostile input and leaking secrets, with real processes: server names the hub refuses, secrets in
`hub config`, on pool workers' command lines (what `ps` shows every user), in files another local
user can read, an option smuggled in as a session id, and malformed values over HTTP and stdio."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest
from fake_anthropic import FakeAnthropic
from hubtests import TESTS, HubProcess, StdioPeer, hub_env, stop_shared_hubs, wait_for
from mounts import other_user_can_read

pytestmark = pytest.mark.timeout(120)
FAKE_CLAUDE = TESTS / "peers" / "fake_claude.py"
SECRET = "sk-ant-api03-NEVER-SHOW-ME-0123456789"


def hub(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hub", *args],
        env=hub_env(tmp_path, **env),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_import_renames_or_skips_names_the_hub_refuses(tmp_path):
    """After `hub servers import`, the hub still starts: every name follows its rule."""
    entry = {"command": "mcp-server-time"}
    names = ['a"b', "dotted.name", "", "line\nbreak", "ok-name", "x" * 40, "...", "clash_1", "clash.1"]
    (tmp_path / ".mcp.json").write_text(json.dumps({"mcpServers": {name: entry for name in names}}))
    done = hub(tmp_path, "servers", "import")
    assert done.returncode == 0, done.stderr
    said = done.stdout
    assert "imported 'dotted.name' as 'dotted_name'" in said and "imported 'a\"b' as 'a_b'" in said
    assert "imported 'line\\nbreak' as 'line_break'" in said and "imported 'ok-name'" in said
    assert "skipped ''" in said and "skipped '...'" in said
    assert "skipped 'clash.1': it would be renamed 'clash_1', which is another server's name" in said
    listed = hub(tmp_path, "servers", "list", "--json")
    assert listed.returncode == 0, listed.stderr  # the hub accepts its configuration
    assert sorted(row["name"] for row in json.loads(listed.stdout)) == sorted(
        ["a_b", "dotted_name", "line_break", "ok-name", "x" * 32, "clash_1"]
    )


def test_hub_config_masks_every_secret_of_every_plugin(tmp_path):
    workers = {"mcpServers": {"gh": {"command": "gh-mcp", "env": {"GITHUB_TOKEN": SECRET}}}}
    remote = {"mcpServers": {"r": {"type": "http", "url": "https://x", "headers": {"X-Key": SECRET}}}}
    (tmp_path / "hub.toml").write_text(
        f'[plugins.batch]\napi_key = "{SECRET}"\n'
        f"[plugins.pool]\nworker_mcp_config = {json.dumps(json.dumps(remote))}\n"
        f'[servers.s]\ncommand = "srv"\nargs = ["--key", "{SECRET}"]\nenv = {{ TOKEN = "{SECRET}" }}\n'
    )
    shown = hub(tmp_path, "config", HUB_HTTP_TOKEN=SECRET)
    assert shown.returncode == 0, shown.stderr
    assert SECRET not in shown.stdout and "NEVER-SHOW-ME" not in shown.stdout, shown.stdout
    data = json.loads(shown.stdout)
    assert data["plugins"]["batch"]["api_key"] == "***" and data["http"]["token"] == "***"
    assert "X-Key" in json.dumps(data["plugins"]["pool"]["worker_mcp_config"])  # what is set shows
    # The same with the workers' servers as a table rather than JSON text.
    (tmp_path / "hub.toml").write_text(f"[plugins.pool.worker_mcp_config]\nmcpServers = {_toml(workers)}\n")
    shown = hub(tmp_path, "config")
    assert SECRET not in shown.stdout and "GITHUB_TOKEN" in shown.stdout, shown.stdout


def _toml(value: object) -> str:
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {_toml(v)}" for k, v in value.items()) + " }"
    return json.dumps(value)


def _pool_args(*extra: str) -> list[str]:
    return [
        "--plugins",
        "pool",
        "--set",
        f'plugins.pool.claude_command="{sys.executable} {FAKE_CLAUDE}"',
        "--set",
        "plugins.pool.slots=1",
        *extra,
    ]


def _command_lines() -> list[str]:
    """Every process's command line, as `ps` shows them to any user."""
    lines = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                lines.append((entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
    return lines


def test_pool_workers_carry_no_secret_on_their_command_line(tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    workers = json.dumps({"mcpServers": {"gh": {"command": "gh-mcp", "env": {"GITHUB_TOKEN": SECRET}}}})
    config = tmp_path / "hub.toml"  # not on the hub's own command line either
    config.write_text(f"[plugins.pool]\nworker_mcp_config = {json.dumps(workers)}\n")
    env = hub_env(tmp_path, FAKE_CLAUDE_LOG=str(runs))
    peer = HubProcess(tmp_path, "a", env, *_pool_args("--config", str(config)))
    try:
        peer.call("context_set", key="deploy_password", value="hunter2-context-secret")
        task = peer.call("pool_submit", prompt="work [hang]")["task_id"]
        worker = wait_for(
            lambda: [line for line in _command_lines() if str(FAKE_CLAUDE) in line and " -p " in line],
            what="the worker's process",
        )
        assert "hunter2" not in worker[0] and SECRET not in worker[0], worker
        assert not any("hunter2" in line or SECRET in line for line in _command_lines())
        wait_for(lambda: list(runs.glob("*.json")), what="the worker's record of its files")
        peer.call("pool_cancel", task_id=task)
    finally:
        peer.close()
    (record,) = [json.loads(p.read_text()) for p in runs.glob("*.json")]
    system, servers = record["system_prompt_file"], record["mcp_config_file"]
    assert "hunter2-context-secret" in system["text"] and SECRET in servers["text"]  # given by file,
    assert system["mode"] == servers["mode"] == "0o600"  # private,
    assert not Path(system["path"]).exists() and not Path(servers["path"]).exists()  # removed after


def test_a_session_id_cannot_smuggle_an_option_to_the_cli(tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    peer = HubProcess(tmp_path, "a", hub_env(tmp_path, FAKE_CLAUDE_LOG=str(runs)), *_pool_args())
    try:
        for tool in ("pool_run", "pool_submit"):
            error = peer.call_error(tool, prompt="hi", session_id="--dangerously-skip-permissions")
            assert f"invalid arguments for {tool}: session_id" in error and "UUID" in error, error
        assert not list(runs.glob("*.json"))  # no CLI ran
        peer.call("pool_run", prompt="hi", session_id="2F1C9A4E-0B7D-4C1E-9A53-6D2F8E1B7C40")
        (record,) = [json.loads(p.read_text()) for p in runs.glob("*.json")]
        assert record["argv"][-2:] == ["--resume=2f1c9a4e-0b7d-4c1e-9a53-6d2f8e1b7c40", "--"]
    finally:
        peer.close()


@pytest.fixture
def open_to_others() -> Iterator[Path]:
    """A directory another local user could enter (0755, outside pytest's private tmp): what the
    hub puts in it must protect itself."""
    base = Path(tempfile.mkdtemp(prefix="hub-modes-", dir="/tmp"))
    base.chmod(0o755)
    yield base
    shutil.rmtree(base, ignore_errors=True)


def test_state_logs_results_and_sockets_are_private_whatever_the_umask(tmp_path, open_to_others):
    """With umask 022, through the bridge and the shared process (state, logs, the socket), a
    downstream server (its stderr log) and a batch job (its result files): another local user
    reads nothing."""
    base = open_to_others
    control = base / "control.txt"  # the check can fail: a 0644 file here is readable by others
    control.write_text("x")
    control.chmod(0o644)
    assert other_user_can_read(control)
    (base / "packets").mkdir()
    (base / "packets" / "p.md").write_text("a prompt another user must not read")
    with FakeAnthropic() as api:
        env = hub_env(tmp_path, HUB_SHARE="1", HUB_STATE_DIR=str(base / "state"), HUB_FAST_START="0")
        env.pop("XDG_RUNTIME_DIR", None)  # the socket goes to <state_dir>/run
        settings = {
            "plugins.batch.api_key": json.dumps(api.api_key),
            "plugins.batch.base_url": json.dumps(api.url),
            "plugins.batch.results_dir": json.dumps(str(base / "results")),
            "plugins.batch.packet_roots": json.dumps([str(base / "packets")]),
            "plugins.batch.poll_initial_s": "0.05",
            "plugins.batch.poll_factor": "1.0",
            "servers.d.command": json.dumps(sys.executable),
            "servers.d.args": json.dumps([str(TESTS / "peers" / "downstream.py")]),
        }
        args = ["--plugins", "batch,proxy"]
        for key, value in settings.items():
            args += ["--set", f"{key}={value}"]
        old = os.umask(0o022)
        try:
            session = HubProcess(tmp_path, "s", env, *args)
        finally:
            os.umask(old)
        try:

            def listed() -> bool:  # the proxy learns a new server's tools in the background
                reply = session.request("tools/list")
                return isinstance(reply, dict) and "d__echo" in {t["name"] for t in reply["result"]["tools"]}

            wait_for(listed, what="the downstream's tools")
            assert session.call("d__echo", text="hello")  # the downstream runs: its stderr is logged
            sent = session.call("send_to_batch", packet_path=str(base / "packets" / "p.md"))
            fetched = session.call("batch_fetch", job_id=sent["job_id"], wait_s=30)
            assert fetched["state"] == "succeeded", fetched
            # The socket, while it exists (the process removes it when it stops).
            (sock,) = (base / "state" / "run").glob("*.sock")
            assert (
                sock.stat().st_mode & 0o777 == 0o600
                and (base / "state" / "run").stat().st_mode & 0o777 == 0o700
            )
        finally:
            stop_shared_hubs(env, tmp_path / "s")
            session.close()
    made = [p for p in base.rglob("*") if p != control and not p.is_relative_to(base / "packets")]
    expected = {"state", "state/hub.sqlite", "state/logs", "results"}
    assert expected <= {str(p.relative_to(base)) for p in made}, made
    assert any(p.name == "d.stderr.log" for p in made), made
    for path in made:
        mode = path.stat().st_mode & 0o777
        if path.is_dir():
            assert mode == 0o700 or path.parent != base, (path, oct(mode))
        elif not path.is_socket() and path.suffix != ".lock":  # an empty lock, in a 0700 directory
            assert mode & 0o077 == 0, (path, oct(mode))
    for path in [base / "state", base / "results", *(p for p in made if p.is_file())]:
        assert not other_user_can_read(path), path


def _http_hub(tmp_path: Path) -> Iterator[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "hub", "--plugins", "", "serve", "-t", "http", "--port", "0"],
        stdin=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=hub_env(tmp_path),
        cwd=tmp_path,
        text=True,
    )
    try:
        assert proc.stderr is not None
        port = next(
            int(m.group(1)) for line in proc.stderr if (m := re.search(r"listening on port (\d+)", line))
        )
        threading.Thread(target=proc.stderr.read, daemon=True).start()
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def _call_bytes(request_id: int, arguments: bytes) -> bytes:
    return (
        b'{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"context_set","arguments":%s}}'
        % (request_id, arguments)
    )


CASES = [  # (arguments as sent, what the answer must say)
    (b'{"key":"k","value":"caf\xe9 \xff"}', None),  # not UTF-8: served with U+FFFD, as over stdio
    (b'{"key":"k","value":"v","scope":1e400}', "invalid arguments for context_set: scope: Infinity"),
    (b'{"key":"k","value":NaN}', "invalid arguments for context_set: value: NaN"),
]


def test_malformed_values_get_the_same_answer_over_http_and_stdio(tmp_path):
    answers: dict[str, list[dict]] = {"http": [], "stdio": []}
    http_hub = _http_hub(tmp_path)
    url = next(http_hub)
    try:
        headers = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
        with httpx2.Client(timeout=10, headers=headers) as http:
            init = http.post(
                url,
                json={
                    "jsonrpc": "2.0",
                    "id": 0,
                    "method": "initialize",
                    "params": {
                        "protocolVersion": "2025-11-25",
                        "capabilities": {},
                        "clientInfo": {"name": "t", "version": "0"},
                    },
                },
            )
            session = {"mcp-session-id": init.headers["mcp-session-id"]}
            for i, (arguments, _) in enumerate(CASES, 1):
                response = http.post(url, content=_call_bytes(i, arguments), headers=session)
                text = response.text
                payload = text[text.index("{") :].splitlines()[0] if text.startswith("event") else text
                answers["http"].append(json.loads(payload))
    finally:
        http_hub.close()
    peer = StdioPeer(["--plugins", "", "serve"], hub_env(tmp_path), tmp_path)
    try:
        peer.initialize()
        assert peer.proc.stdin is not None
        for i, (arguments, _) in enumerate(CASES, 1):
            peer.proc.stdin.flush()
            peer.proc.stdin.buffer.write(_call_bytes(i, arguments) + b"\n")
            peer.proc.stdin.buffer.flush()
            answers["stdio"].append(peer.read_reply(i))
    finally:
        peer.close()
    for transport, got in answers.items():
        for (_, expected), answer in zip(CASES, got, strict=True):
            assert answer.get("id") is not None and "result" in answer, (transport, answer)
            text = answer["result"]["content"][0]["text"]
            if expected is None:
                assert not answer["result"].get("isError"), (transport, answer)
            else:
                assert answer["result"]["isError"] and expected in text, (transport, text)
