"""The `hub` command end to end: real subprocesses over stdio and HTTP, signals, bad config."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import anyio
import httpx2
import psutil
import pytest
from hubtests import DOWNSTREAM, StdioPeer, hub_env, readme_mcp_entry, stop_shared_hubs, wait_for
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

from hub.config.expand import expand_vars
from hub.testing import result_json


def hub(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hub", *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=60
    )


def test_version_and_help(tmp_path):
    env = hub_env(tmp_path)
    assert hub("--version", env=env, cwd=tmp_path).stdout.strip() == "hub 0.1.0"
    text = hub("--help", env=env, cwd=tmp_path).stdout
    for word in (
        "serve",
        "plugins",
        "config",
        "--config",
        "--plugins",
        "--budget-usd",
        "--set",
        "--state-dir",
        "--log-format",
        "HUB_PLUGINS",
        "HUB_HTTP_TOKEN",
    ):
        assert word in text, word
    serve_help = hub("serve", "--help", env=env, cwd=tmp_path).stdout
    for word in ("--transport", "--host", "--port", "--path", "--plugins", "--set"):
        assert word in serve_help, word


def test_invalid_config_exits_non_zero_naming_file_key_and_problem(tmp_path):
    (tmp_path / "hub.toml").write_text("[budget]\nlimit_usd = 'ten'\n[servers.fs]\ncomand = 'npx'\n")
    for command in ([], ["config"], ["plugins"]):
        out = hub(*command, env=hub_env(tmp_path), cwd=tmp_path)
        assert out.returncode == 2
        assert "hub.toml: budget.limit_usd: Input should be a valid number" in out.stderr
        assert "hub.toml: servers.fs.comand: unknown key" in out.stderr
    (tmp_path / "hub.toml").write_text("[budget\n")
    out = hub(env=hub_env(tmp_path), cwd=tmp_path)
    assert out.returncode == 2 and "hub.toml: invalid TOML: " in out.stderr


def test_config_command_masks_secrets(tmp_path):
    (tmp_path / "hub.toml").write_text(
        '[servers.a]\ncommand = "x"\nenv = { ANTHROPIC_API_KEY = "sk-ant-supersecret" }\n[http]\ntoken = "tok123"\n'
    )
    out = hub("config", "--set", "budget.limit_usd=3", env=hub_env(tmp_path), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["budget"]["limit_usd"] == 3
    assert data["servers"]["a"]["env"] == {"ANTHROPIC_API_KEY": "***"}
    assert "supersecret" not in out.stdout and "tok123" not in out.stdout


@pytest.mark.anyio
async def test_readme_mcp_json_entry_works_as_written(tmp_path):
    entry = readme_mcp_entry()
    assert entry["type"] == "stdio"
    env = hub_env(tmp_path)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env["PATH"]])  # where pip put `hub`
    expanded_env = {k: expand_vars(v, env, where=k) for k, v in entry.get("env", {}).items()}
    params = StdioServerParameters(
        command=expand_vars(entry["command"], env, where="command"),
        args=[expand_vars(a, env, where="args") for a in entry.get("args", [])],
        env={**{k: env[k] for k in ("PATH", "HUB_STATE_DIR", "XDG_CONFIG_HOME")}, **expanded_env},
        cwd=str(tmp_path),
    )
    try:
        async with Client(params) as client:
            names = {tool.name for tool in (await client.list_tools()).tools}
            assert {"context_set", "context_get", "context_list", "context_delete"} <= names
            result = await client.call_tool("context_set", {"key": "k", "value": "v"})
            assert result_json(result) == {"key": "k", "value": "v"}
    finally:  # the entry runs the bridge: one shared hub process served it
        assert len(stop_shared_hubs(env, tmp_path)) == 1


@pytest.fixture
def hub_with_downstream(tmp_path, thirdparty_path):
    """A hub subprocess (plugin `hello`) that has started downstream server `d`: (peer, server pid)."""
    (tmp_path / "hub.toml").write_text(
        f'[servers.d]\ncommand = "{sys.executable}"\nargs = ["{DOWNSTREAM}"]\n'
    )
    peer = StdioPeer(["--plugins", "hello"], hub_env(tmp_path, thirdparty_path), tmp_path)
    try:
        peer.initialize()
        reply = peer.request("tools/call", {"name": "hello_via", "arguments": {"server": "d", "text": "hi"}})
        assert not reply["result"].get("isError"), reply
        server_pid = reply["result"]["structuredContent"]["server_pid"]
        assert server_pid in {p.pid for p in psutil.Process(peer.proc.pid).children(recursive=True)}
        yield peer, server_pid
    finally:
        peer.close()


def wait_gone(pids: set[int], timeout: float = 10) -> set[int]:
    """The pids still present after `timeout` (a zombie counts as present: nobody reaped it)."""
    deadline = time.monotonic() + timeout
    while any(psutil.pid_exists(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    return {pid for pid in pids if psutil.pid_exists(pid)}


def test_sigterm_during_a_call_exits_cleanly_and_reaps_children(hub_with_downstream):
    peer, server_pid = hub_with_downstream
    call = {"name": "hello_wait", "arguments": {"seconds": 60}, "_meta": {"progressToken": "wait"}}
    peer.request("tools/call", call, wait=False)
    assert peer.wait_for("notifications/progress")["params"]["progressToken"] == "wait"  # the call runs
    started = time.monotonic()
    peer.proc.send_signal(signal.SIGTERM)
    assert peer.proc.wait(timeout=20) == 0, peer.stderr()
    assert time.monotonic() - started < 15
    assert "signal received; shutting down" in peer.stderr()
    # No orphan and no zombie: the downstream server went with the hub and was reaped.
    assert wait_gone({server_pid}) == set()


def test_stdin_close_shuts_down_children(hub_with_downstream):
    peer, server_pid = hub_with_downstream
    children = {p.pid for p in psutil.Process(peer.proc.pid).children(recursive=True)}
    assert peer.proc.stdin is not None
    peer.proc.stdin.close()
    assert peer.proc.wait(timeout=20) == 0, peer.stderr()
    assert wait_gone(children | {server_pid}) == set()


def test_downstream_that_cannot_start_leaves_the_hub_serving(tmp_path, thirdparty_path):
    (tmp_path / "hub.toml").write_text('[servers.bad]\ncommand = "no-such-server-binary"\n')
    peer = StdioPeer(["--plugins", "hello"], hub_env(tmp_path, thirdparty_path), tmp_path)
    try:
        peer.initialize()
        reply = peer.request("tools/call", {"name": "hello_via", "arguments": {"server": "bad", "text": "x"}})
        assert reply["result"]["isError"] is True
        assert "command 'no-such-server-binary' not found" in reply["result"]["content"][0]["text"]
        ok = peer.request("tools/call", {"name": "hello", "arguments": {"name": "still"}})
        assert ok["result"]["structuredContent"] == {"message": "hello, still!"}
        status = peer.request("resources/read", {"uri": "hub://status"})
        servers = json.loads(status["result"]["contents"][0]["text"])["servers"]
        assert servers["bad"]["state"] == "failed"
    finally:
        peer.close()


def test_logs_go_to_stderr_and_never_show_secrets(tmp_path):
    (tmp_path / "hub.toml").write_text('log_format = "json"\nlog_level = "debug"\n')
    env = hub_env(tmp_path, ANTHROPIC_API_KEY="sk-ant-api03-verysecretvalue")
    peer = StdioPeer([], env, tmp_path)
    try:
        peer.initialize()
        peer.request(
            "tools/call",
            {"name": "context_set", "arguments": {"key": "token", "value": "Bearer abcdefghijkl"}},
        )
        assert peer.proc.stdin is not None
        peer.proc.stdin.close()
        peer.proc.wait(timeout=20)
        lines = [json.loads(line) for line in peer.stderr().splitlines() if line.startswith("{")]
        assert any(line["event"] == "hub ready" for line in lines)
        assert "verysecretvalue" not in peer.stderr()
        assert "abcdefghijkl" not in peer.stderr()
    finally:
        peer.close()


@pytest.mark.anyio
async def test_http_transport_with_bearer_token(tmp_path):
    env = hub_env(tmp_path, HUB_HTTP_TOKEN="s3cret-token")
    proc = await anyio.open_process(
        [sys.executable, "-m", "hub", "serve", "--transport", "http", "--port", "0"], env=env, cwd=tmp_path
    )
    try:
        port = None
        assert proc.stderr is not None
        buffer = b""
        with anyio.fail_after(30):
            async for chunk in proc.stderr:
                buffer += chunk
                found = re.search(rb"listening on port (\d+)", buffer)
                if found:
                    port = int(found.group(1))
                    break
        assert port, buffer.decode()
        url = f"http://127.0.0.1:{port}/mcp"
        async with httpx2.AsyncClient() as plain:
            response = await plain.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "ping"})
            assert response.status_code == 401
        headers = {"Authorization": "Bearer s3cret-token"}
        async with httpx2.AsyncClient(headers=headers, timeout=30) as http:
            async with Client(streamable_http_client(url, http_client=http), mode="legacy") as client:
                names = {tool.name for tool in (await client.list_tools()).tools}
                assert "context_set" in names
                result = await client.call_tool("context_set", {"key": "via", "value": "http"})
                assert result_json(result) == {"key": "via", "value": "http"}
    finally:
        proc.send_signal(signal.SIGTERM)
        with anyio.fail_after(20):
            assert await proc.wait() == 0


def test_http_refuses_public_host_without_token(tmp_path):
    out = hub(
        "serve",
        "--transport",
        "http",
        "--host",
        "0.0.0.0",
        "--port",
        "0",
        env=hub_env(tmp_path),
        cwd=tmp_path,
    )
    assert out.returncode == 2
    assert "refusing to listen on 0.0.0.0: a non-loopback host needs a bearer token" in out.stderr


def test_statusline_prints_plugin_lines_from_the_store(tmp_path):
    from hub.services import statusline
    from hub.services.sqlite_store import SQLiteStore as Store

    env = hub_env(tmp_path)
    assert hub("statusline", env=env, cwd=tmp_path).stdout == "hub: idle\n"  # no database yet, exit 0

    async def write() -> None:
        store = Store.in_state_dir(tmp_path / "state")
        await statusline.setup(store)
        await statusline.set_line(store, "pool", "pool: 2 busy")
        await statusline.set_line(store, "batch", "batch: 1 pending, 4 done, 0 failed")
        store.close()

    anyio.run(write)
    out = hub("statusline", env=env, cwd=tmp_path)
    assert out.returncode == 0 and out.stdout == "batch: 1 pending, 4 done, 0 failed | pool: 2 busy\n"
    # The state directory can also come from hub.toml, as `hub serve` would read it.
    (tmp_path / "hub.toml").write_text(f'state_dir = "{tmp_path / "state"}"\n')
    del env["HUB_STATE_DIR"]
    assert hub("statusline", env=env, cwd=tmp_path).stdout.startswith("batch: 1 pending")


@pytest.mark.parametrize("command", [["config"], ["serve"], ["plugins"]])
def test_every_plugin_setting_is_checked_by_config_and_at_start(tmp_path, command):
    """Cross-field rules included; every problem at once, one line each, exit 2 (before any
    plugin starts, so the model never sees a hub with the plugin silently gone)."""
    (tmp_path / "hub.toml").write_text(
        "[plugins.pool]\nmin_slots = 5\nmax_slots = 3\n[plugins.batch]\nmax_tokens = 'many'\n"
    )
    out = hub(*command, env=hub_env(tmp_path), cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    lines = [line.strip() for line in out.stderr.splitlines()]
    assert lines[0] == "hub: config error:"
    assert sorted(lines[1:]) == [
        "hub.toml: plugins.batch.max_tokens: Input should be a valid integer, unable to parse string as an "
        "integer (got 'many')",
        "hub.toml: plugins.pool: min_slots (5) is above max_slots (3)",
    ]


@pytest.mark.parametrize(
    ("setup", "command", "expected"),
    [
        (
            {"HUB_PLUGINS": "pol"},
            ["plugins"],
            "HUB_PLUGINS: plugins: unknown plugin 'pol' (did you mean 'pool'? installed: batch, batchit, pool, proxy)",
        ),
        (
            {},
            ["--plugins", "batchi", "serve"],
            "--plugins: plugins: unknown plugin 'batchi' (did you mean 'batchit'? installed:",
        ),
        (
            {"toml": "[plugins.pol]\nslots = 1\n"},
            ["config"],
            "hub.toml: plugins.pol: no plugin 'pol' is installed (did you mean 'pool'? installed:",
        ),
    ],
)
def test_an_unknown_plugin_name_is_an_error_with_the_nearest_name(tmp_path, setup, command, expected):
    setup = dict(setup)
    if "toml" in setup:
        (tmp_path / "hub.toml").write_text(setup.pop("toml"))
    out = hub(*command, env=hub_env(tmp_path, **setup), cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    assert expected in out.stderr
    assert "Traceback" not in out.stderr


def test_settings_of_a_plugin_not_selected_are_checked_too(tmp_path):
    (tmp_path / "hub.toml").write_text(
        '[plugins]\nenabled = ["batchit"]\n[plugins.pool]\nmin_slots = 5\nmax_slots = 3\n'
    )
    out = hub("config", env=hub_env(tmp_path), cwd=tmp_path)
    assert out.returncode == 2
    assert "hub.toml: plugins.pool: min_slots (5) is above max_slots (3)" in out.stderr


def test_plugins_starts_no_downstream_server_and_shows_the_proxys_tools_by_server(tmp_path):
    """`hub plugins` inspects: the proxy's tools come from the lists it last saw (here: a hub run
    that listed server d), grouped by server; no server is started, nothing is warned about, and
    `==SUPPRESS==` never shows in --help."""
    markers = tmp_path / "markers"
    markers.mkdir()
    start = f"touch {markers}/started.$$; exec {sys.executable} {DOWNSTREAM}"  # a file per start
    (tmp_path / "hub.toml").write_text(f'[servers.d]\ncommand = "sh"\nargs = ["-c", "{start}"]\n')
    env = hub_env(tmp_path)
    peer = StdioPeer([], env, tmp_path)
    try:
        peer.initialize()
        wait_for(lambda: "d__echo" in json.dumps(peer.request("tools/list")), what="the proxied tools")
    finally:
        peer.close()
    started = len(list(markers.iterdir()))
    out = hub("plugins", env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert re.search(r"^  tools \(d\): .*\bd__echo\b", out.stdout, re.M), out.stdout
    assert "warning" not in out.stderr.lower() and "could not list" not in out.stderr
    assert len(list(markers.iterdir())) == started  # no downstream server started
    assert "==SUPPRESS==" not in hub("--help", env=env, cwd=tmp_path).stdout
