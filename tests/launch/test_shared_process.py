"""One hub for every session: `hub serve` over stdio bridges to one shared hub process per launch.

Real processes only: bridges spawned as Claude Code spawns them (`hub serve`, stdio), the shared
process they start, the real Claude Code CLI. Every test ends with no process left behind."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from hubtests import DOWNSTREAM, TESTS, gone, hub_env, wait_for

FAKE_CLAUDE = TESTS / "peers" / "fake_claude.py"
VENV_BIN = str(Path(sys.executable).parent)
INIT = {
    "protocolVersion": "2025-11-25",
    "capabilities": {},
    "clientInfo": {"name": "test", "version": "0"},
}


class BridgeClient:
    """`hub serve` over stdio, spoken to with raw JSON-RPC lines."""

    def __init__(self, env: dict[str, str], cwd: Path, *args: str) -> None:
        self.stderr_path = cwd / f"bridge-{time.monotonic_ns()}.log"
        self.proc = subprocess.Popen(
            [os.path.join(VENV_BIN, "hub"), "serve", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr_path.open("w"),
            env=env,
            cwd=cwd,
        )
        self.next_id = 0
        self.extra: list[dict[str, Any]] = []

    def send(self, message: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(message).encode() + b"\n")
        self.proc.stdin.flush()

    def request(self, method: str, params: dict[str, Any] | None = None, wait: bool = True) -> Any:
        self.next_id += 1
        self.send({"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params or {}})
        return self.reply(self.next_id) if wait else self.next_id

    def reply(self, request_id: Any) -> dict[str, Any]:
        assert self.proc.stdout is not None
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise EOFError(f"the bridge closed stdout; stderr: {self.stderr_path.read_text()}")
            message = json.loads(line)
            if message.get("id") == request_id and "method" not in message:
                return message
            self.extra.append(message)

    def initialize(self) -> dict[str, Any]:
        reply = self.request("initialize", INIT)
        self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        return reply

    def call(self, tool: str, **arguments: Any) -> dict[str, Any]:
        reply = self.request("tools/call", {"name": tool, "arguments": arguments})
        assert "result" in reply and not reply["result"].get("isError"), reply
        return reply["result"].get("structuredContent") or {}

    def close(self) -> int:
        if self.proc.stdin and not self.proc.stdin.closed:
            self.proc.stdin.close()
        try:
            return self.proc.wait(timeout=30)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()


def shared_processes(env: dict[str, str], cwd: Path) -> list[dict[str, Any]]:
    out = subprocess.run(
        [os.path.join(VENV_BIN, "hub"), "status", "--json"], env=env, cwd=cwd, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.fixture
def shared_env(tmp_path) -> Iterator[dict[str, str]]:
    """Sharing on, a short idle exit, and every shared process ended after the test."""
    env = hub_env(tmp_path, HUB_SHARE="1", HUB_PLUGINS="pool,proxy", FAKE_CLAUDE_LOG=str(tmp_path))
    env["PATH"] = os.pathsep.join([VENV_BIN, env["PATH"]])
    (tmp_path / "hub.toml").write_text(
        "[daemon]\nidle_exit_s = 1\n"
        f"[plugins.pool]\nclaude_command = '{sys.executable} {FAKE_CLAUDE}'\nslots = 2\n"
        f'[servers.d]\ncommand = "{sys.executable}"\nargs = ["{DOWNSTREAM}"]\n'
        f'env = {{ DOWNSTREAM_MARKER_DIR = "{tmp_path / "markers"}" }}\n'
    )
    (tmp_path / "markers").mkdir()
    env["HUB_CONFIG"] = str(tmp_path / "hub.toml")
    yield env
    for entry in shared_processes(env, tmp_path):
        with_pid = psutil.Process(entry["pid"]) if not gone(entry["pid"]) else None
        if with_pid is not None:
            with_pid.kill()


def test_racing_bridges_share_one_process_that_exits_when_idle(shared_env, tmp_path):
    bridges = [BridgeClient(shared_env, tmp_path) for _ in range(5)]  # spawned at once
    try:
        for i, bridge in enumerate(bridges):
            assert bridge.initialize()["result"]["serverInfo"]["name"] == "hub"
            bridge.call("context_set", key=f"k{i}", value=str(i))
        (one,) = shared_processes(shared_env, tmp_path)  # one process for five sessions
        assert one["sessions"] == 5
        status = bridges[0].request("resources/read", {"uri": "hub://status"})
        sessions = json.loads(status["result"]["contents"][0]["text"])["sessions"]
        assert sorted(s["bridge_pid"] for s in sessions) == sorted(b.proc.pid for b in bridges)
        entries = {k: v for k, v in bridges[4].call("context_list").items() if not k.startswith("@")}
        assert entries == {f"k{i}": str(i) for i in range(5)}  # one context
        socket_path = Path(one["socket"])
        assert stat.S_IMODE(socket_path.parent.stat().st_mode) == 0o700
        assert stat.S_IMODE(socket_path.stat().st_mode) == 0o600
    finally:
        codes = [bridge.close() for bridge in bridges]
    assert codes == [0] * 5
    wait_for(lambda: gone(one["pid"]), what="the idle shared process to exit")  # idle_exit_s = 1
    assert not socket_path.exists()
    assert all(gone(b.proc.pid) for b in bridges)


def test_another_config_or_directory_gets_its_own_process(shared_env, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    bridges = [
        BridgeClient(shared_env, tmp_path),
        BridgeClient(shared_env, tmp_path),
        BridgeClient(shared_env, elsewhere),
        BridgeClient(shared_env, tmp_path, "--set", "plugins.pool.slots=3"),
        BridgeClient({**shared_env, "ANTHROPIC_API_KEY": "another"}, tmp_path),
    ]
    try:
        for bridge in bridges:
            bridge.initialize()
        processes = shared_processes(shared_env, tmp_path)
        assert len(processes) == 4, processes
        assert sorted(p["sessions"] for p in processes) == [1, 1, 1, 2]
    finally:
        for bridge in bridges:
            bridge.close()


def test_a_killed_shared_process_is_restarted_and_the_session_goes_on(shared_env, tmp_path):
    bridge = BridgeClient(shared_env, tmp_path)
    other = BridgeClient(shared_env, tmp_path)
    try:
        bridge.initialize()
        other.initialize()
        bridge.call("context_set", key="kept", value="in the store")
        (first,) = shared_processes(shared_env, tmp_path)
        in_flight = bridge.request(
            "tools/call", {"name": "pool_run", "arguments": {"prompt": "slow [delay=30]"}}, wait=False
        )
        wait_for(lambda: list(tmp_path.glob("*.json")), what="the task to start")
        psutil.Process(first["pid"]).kill()  # kill -9
        failed = bridge.reply(in_flight)
        assert failed["error"]["code"] == -32603
        assert "the hub restarted while this request was running" in failed["error"]["message"]
        # The same session goes on, without a new initialize, on a new shared process.
        assert bridge.call("context_get", key="kept")["value"] == "in the store"
        assert other.call("context_get", key="kept")["value"] == "in the store"
        (second,) = shared_processes(shared_env, tmp_path)
        assert second["pid"] != first["pid"] and second["sessions"] == 2
    finally:
        bridge.close()
        other.close()


def test_a_request_refused_before_initialize_is_not_answered_again_after_a_restart(shared_env, tmp_path):
    """The shared process's own refusal (the session is not initialized) is an answer the bridge
    must hear of, or a restart answers that id a second time."""
    bridge = BridgeClient(shared_env, tmp_path)
    try:
        refused = bridge.request("tools/list")
        assert refused["error"]["code"] == -32600 and "initialize" in refused["error"]["message"]
        bridge.initialize()
        (first,) = shared_processes(shared_env, tmp_path)
        psutil.Process(first["pid"]).kill()  # kill -9
        assert "tools" in bridge.request("tools/list")["result"]  # answered by the next process
        assert [m for m in bridge.extra if m.get("id") == refused["id"]] == []
    finally:
        bridge.close()


def test_work_started_in_one_session_is_seen_and_cancelled_from_another(shared_env, tmp_path):
    one, two = BridgeClient(shared_env, tmp_path), BridgeClient(shared_env, tmp_path)
    try:
        one.initialize()
        two.initialize()
        task = one.call("pool_submit", prompt="long [hang]")["task_id"]
        assert one.close() == 0  # the session that asked for it is gone; the task goes on
        assert wait_for(lambda: two.call("pool_result", task_id=task)["status"] == "running")
        assert two.call("pool_cancel", task_id=task)["cancelled"] is True
    finally:
        two.close()


def test_a_bridge_killed_by_its_client_cancels_its_calls_and_leaves_nothing(shared_env, tmp_path):
    bridge = BridgeClient(shared_env, tmp_path)
    bridge.initialize()
    wait_for(  # a server never seen before is listed once it has been started and asked
        lambda: "d__sleep" in [t["name"] for t in bridge.request("tools/list")["result"]["tools"]],
        what="the downstream server's tools",
    )
    bridge.request("tools/call", {"name": "d__sleep", "arguments": {"seconds": 60, "tag": "t"}}, wait=False)
    (shared,) = shared_processes(shared_env, tmp_path)
    markers = tmp_path / "markers"
    wait_for(lambda: (markers / "started-t").exists(), what="the call to reach the downstream server")
    (downstream,) = [
        p
        for p in psutil.Process(shared["pid"]).children(recursive=True)
        if "downstream" in " ".join(p.cmdline())
    ]
    bridge.proc.terminate()  # SIGTERM, as Claude Code stops a server
    assert bridge.proc.wait(timeout=10) == 0
    wait_for(lambda: (markers / "cancelled-t").exists(), what="the call to be cancelled downstream")
    observer = BridgeClient(shared_env, tmp_path)
    try:
        observer.initialize()
        wait_for(
            lambda: shared_processes(shared_env, tmp_path)[0]["sessions"] == 1, what="the session to end"
        )
    finally:
        observer.close()
    wait_for(lambda: gone(shared["pid"]), what="the idle shared process to exit")
    wait_for(lambda: gone(downstream.pid), what="its downstream server to stop too")


def test_no_share_serves_in_process(shared_env, tmp_path):
    bridge = BridgeClient(shared_env, tmp_path, "--no-share")
    try:
        bridge.initialize()
        assert bridge.call("context_set", key="a", value="b") == {"key": "a", "value": "b"}
        assert shared_processes(shared_env, tmp_path) == []
    finally:
        assert bridge.close() == 0
    with_env = BridgeClient({**shared_env, "HUB_SHARE": "0"}, tmp_path)
    try:
        with_env.initialize()
        assert shared_processes(shared_env, tmp_path) == []
    finally:
        with_env.close()


def test_two_claude_code_sessions_share_one_hub_and_one_downstream_server(tmp_path):
    """Two concurrent `claude -p` runs in one project with the README's `.mcp.json` entry: one
    shared hub process serves both, and both calls reach one downstream server process."""
    from fake_anthropic import FakeAnthropic
    from hubtests import npm_bin, readme_mcp_entry

    project = tmp_path / "project"
    project.mkdir()
    (project / ".mcp.json").write_text(json.dumps({"mcpServers": {"hub": readme_mcp_entry()}}))
    (tmp_path / "home").mkdir()
    (project / "hub.toml").write_text(
        '[plugins]\nenabled = ["proxy"]\n[daemon]\nidle_exit_s = 60\n'
        f'[servers.d]\ncommand = "{sys.executable}"\nargs = ["{DOWNSTREAM}"]\n'
    )
    with FakeAnthropic() as api:
        call = {"type": "tool_use", "name": "mcp__hub__d__echo"}
        api.script(
            [{**call, "id": "toolu_a", "input": {"text": "one"}}],
            [{**call, "id": "toolu_b", "input": {"text": "two"}}],
        )
        env = hub_env(
            tmp_path,
            HOME=str(tmp_path / "home"),
            ANTHROPIC_BASE_URL=api.url,
            ANTHROPIC_API_KEY=api.api_key,
            CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1",
            DISABLE_TELEMETRY="1",
            HUB_CONFIG=str(project / "hub.toml"),
            PATH=os.pathsep.join([VENV_BIN, os.environ["PATH"]]),
        )
        # A server never seen before is listed once the hub has started and asked it: learn its
        # tools once (kept in the store), as a user's earlier session would have.
        first = BridgeClient(env, project, "--no-share")
        try:
            first.initialize()
            wait_for(
                lambda: "d__echo" in [t["name"] for t in first.request("tools/list")["result"]["tools"]],
                what="the downstream server's tools",
            )
        finally:
            first.close()
        env.pop("HUB_SHARE")  # the default: shared
        env.pop("CLAUDECODE", None)
        argv = [
            npm_bin("claude"),
            "-p",
            "use the hub",
            "--mcp-config",
            str(project / ".mcp.json"),
            "--strict-mcp-config",
            "--allowedTools",
            "mcp__hub__d__echo",
            "--model",
            "claude-sonnet-4-5",
        ]
        runs = [
            subprocess.Popen(argv, cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            for _ in range(2)
        ]
        try:
            outcomes = [run.communicate(timeout=180) for run in runs]
            assert [run.returncode for run in runs] == [0, 0], [o[1][-2000:] for o in outcomes]
            results = [
                block
                for m in api.messages
                for block in (m["messages"][-1].get("content") or [])
                if isinstance(block, dict) and block.get("type") == "tool_result"
            ]
            assert sorted(b["tool_use_id"] for b in results) == ["toolu_a", "toolu_b"]
            assert not any(b.get("is_error") for b in results), results
            (shared,) = shared_processes(env, project)  # one hub process for both sessions
            log = Path(tmp_path / "state" / "logs").glob("shared-*.log")
            text = "".join(p.read_text() for p in log)
            assert text.count("shared hub serving") == 1 and text.count("session connected") >= 2
            downstream = [
                p
                for p in psutil.Process(shared["pid"]).children(recursive=True)
                if "downstream" in " ".join(p.cmdline())
            ]
            assert len(downstream) == 1  # one downstream server for both sessions
        finally:
            for entry in shared_processes(env, project):
                psutil.Process(entry["pid"]).kill()


META = {
    "io.modelcontextprotocol/protocolVersion": "2026-07-28",
    "io.modelcontextprotocol/clientInfo": {"name": "test", "version": "1"},
    "io.modelcontextprotocol/clientCapabilities": {},
}


def claude_code_start(bridge: BridgeClient) -> dict[str, Any]:
    """What Claude Code 2.1 sends first (2026-07-28 era), then a call; the list and call answers."""
    bridge.send({"jsonrpc": "2.0", "id": "d", "method": "server/discover", "params": {"_meta": META}})
    bridge.send(
        {
            "jsonrpc": "2.0",
            "id": "l",
            "method": "subscriptions/listen",
            "params": {"_meta": META, "notifications": {"toolsListChanged": True}},
        }
    )
    bridge.send({"jsonrpc": "2.0", "id": "t", "method": "tools/list", "params": {"_meta": META}})
    tools = bridge.reply("t")
    call = {"_meta": META, "name": "context_set", "arguments": {"key": "k", "value": "v"}}
    bridge.send({"jsonrpc": "2.0", "id": "c", "method": "tools/call", "params": call})
    return {"tools": [t["name"] for t in tools["result"]["tools"]], "call": bridge.reply("c")}


def test_a_cold_start_answers_from_the_last_run_and_corrects_a_stale_answer(shared_env, tmp_path):
    def session() -> tuple[dict[str, Any], BridgeClient]:
        bridge = BridgeClient(shared_env, tmp_path)
        return claude_code_start(bridge), bridge

    first, bridge = session()  # cold, nothing kept yet: answered by the shared process
    assert "context_set" in first["tools"]
    bridge.close()
    (shared,) = shared_processes(shared_env, tmp_path)
    psutil.Process(shared["pid"]).terminate()
    wait_for(lambda: gone(shared["pid"]), what="the shared process to stop")
    cache_path = tmp_path / "state" / "fastfront.json"
    cache = json.loads(cache_path.read_text())
    (key,) = [k for k in cache["answers"] if k.startswith("tools/list|")]
    cache["answers"][key]["tools"].append({"name": "gone_tool", "inputSchema": {"type": "object"}})
    cache_path.write_text(json.dumps(cache))

    second, bridge = session()  # cold again: answered from the kept answers while it starts
    try:
        assert "gone_tool" in second["tools"]  # what the last run said
        assert second["call"]["result"]["structuredContent"] == {
            "key": "k",
            "value": "v",
        }  # held, then served
        changed = wait_for(
            lambda: (
                [m for m in bridge.extra if m.get("method") == "notifications/tools/list_changed"]
                or bridge.send({"jsonrpc": "2.0", "id": "p", "method": "ping", "params": {"_meta": META}})
                or (bridge.reply("p") and None)
            ),
            what="tools/list_changed",
        )
        assert changed[0]["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"] == "l"
    finally:
        bridge.close()
    kept = json.loads(cache_path.read_text())["answers"][key]["tools"]
    assert "gone_tool" not in [t["name"] for t in kept]  # corrected for the next cold start


def test_a_bad_config_through_the_bridge_is_said_as_in_process(shared_env, tmp_path):
    (tmp_path / "hub.toml").write_text('[budget]\nlimit_usd = "lots"\n')
    bridge = BridgeClient(shared_env, tmp_path)
    try:
        assert bridge.proc.wait(timeout=60) == 2
    finally:
        bridge.close()
    said = bridge.stderr_path.read_text()
    assert "hub: config error:" in said and "hub.toml: budget.limit_usd:" in said, said
    assert shared_processes(shared_env, tmp_path) == []  # nothing left running


def test_what_a_replay_swallows_is_forgotten_once_answered():
    """After a restart the shared process drops the answers the client already had (the
    replayed handshake's, a replayed listen's acknowledgement). A replayed listen that fails is
    answered instead of acknowledged: nothing is left to look for, so later answers are not
    parsed for the rest of the session."""
    from hub.launch.session import _Session

    session = _Session(None, None, None, swallow={"i", ("ack", "l")})  # type: ignore[arg-type]
    assert not session.on_answer('{"jsonrpc":"2.0","id":"i","result":{"protocolVersion":"2025-11-25"}}')
    assert session.on_answer('{"jsonrpc":"2.0","id":[1],"result":{}}')  # no key: passed on as is
    assert session.on_answer('{"jsonrpc":"2.0","id":"l","error":{"code":-32603,"message":"gone"}}')
    assert session.swallow == set()


def test_an_event_too_large_for_the_bridge_is_left_out_and_the_end_still_reaches_it(monkeypatch):
    """Found by a hostile client: a 3 MB request id filled the bridge's event buffer by itself, so
    the bridge heard nothing more, not even the end of the session, and took the live process for
    a dead one. And the end said in the same turn as an event waited out its whole timeout (the
    scheduled flush removed the writer it waited on)."""
    import socket

    import anyio

    from hub.launch import shared_process as shared
    from hub.launch.shared_process import _Reporter

    monkeypatch.setattr(shared, "BYE_TIMEOUT_S", 600.0)  # waiting it out would fail below

    async def main() -> bytes:
        ours, bridge = socket.socketpair()
        ours.setblocking(False)
        with ours, bridge, anyio.fail_after(30):
            reporter = _Reporter(ours)
            reporter.answered("x" * 3_000_000)
            reporter.answered(7)
            await reporter.bye()
            return bridge.recv(65536)

    assert anyio.run(main) == b"A null\nA 7\nB\n"  # the answer is known to be out, not its id


def _hub(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [os.path.join(VENV_BIN, "hub"), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=60
    )


def test_hub_stop_leaves_a_busy_process_running_and_force_ends_its_sessions(shared_env, tmp_path):
    """`hub status` shows sessions and work; `hub stop` names them and stops nothing; `--force`
    stops the process and its bridge ends (it does not start another one)."""
    bridge = BridgeClient(shared_env, tmp_path)
    try:
        bridge.initialize()
        (before,) = shared_processes(shared_env, tmp_path)
        assert before["answers"] and before["sessions"] == 1 and before["idle_s"] is None
        assert before["config_files"] == [str(tmp_path / "hub.toml")]
        refused = _hub(shared_env, tmp_path, "stop")
        assert refused.returncode == 1, refused
        assert "sessions connected or work in progress" in refused.stderr and "--force" in refused.stderr
        assert not gone(before["pid"])
        stopped = _hub(shared_env, tmp_path, "stop", "--force")
        assert stopped.returncode == 0, stopped.stderr
        assert f"stopped pid {before['pid']}" in stopped.stdout
        assert bridge.proc.wait(timeout=30) == 0
        assert "was stopped (hub stop)" in bridge.stderr_path.read_text()
    finally:
        bridge.close()
    assert gone(before["pid"]) and shared_processes(shared_env, tmp_path) == []
    assert not Path(before["socket"]).exists()


def test_hub_status_shows_the_idle_timer_and_hub_stop_stops_an_idle_process(shared_env, tmp_path):
    (tmp_path / "hub.toml").write_text(
        (tmp_path / "hub.toml").read_text().replace("idle_exit_s = 1", "idle_exit_s = 300")
    )
    bridge = BridgeClient(shared_env, tmp_path)
    try:
        bridge.initialize()
    finally:
        assert bridge.close() == 0
    wait_for(lambda: shared_processes(shared_env, tmp_path)[0]["idle_s"] is not None, what="the idle timer")
    (idle,) = shared_processes(shared_env, tmp_path)
    assert idle["sessions"] == 0 and 250 < idle["exits_in_s"] <= 300
    assert "exits in" in _hub(shared_env, tmp_path, "status").stdout
    other = _hub(shared_env, tmp_path, "stop", "--set", "plugins.pool.slots=3")  # another launch
    assert other.returncode == 0 and "1 other(s) run" in other.stdout
    assert _hub(shared_env, tmp_path, "stop").returncode == 0  # idle: no --force needed
    wait_for(lambda: gone(idle["pid"]), what="the stopped process to exit")


def _notified(bridge: BridgeClient, method: str) -> dict[str, Any]:
    """The first notification `method` the bridge got (kept aside by `reply`, or read now)."""
    for message in bridge.extra:
        if message.get("method") == method:
            return message
    assert bridge.proc.stdout is not None
    while True:
        line = bridge.proc.stdout.readline()
        if not line:
            raise EOFError(f"the bridge closed stdout before {method}")
        message = json.loads(line)
        if message.get("method") == method:
            return message
        bridge.extra.append(message)


@pytest.mark.timeout(90)
def test_tools_loaded_in_one_session_stay_out_of_the_other_sessions_lists(shared_env, tmp_path):
    """`[tools] expose = "search"` on the shared process: a 2026-era session (as Claude Code opens
    one) loads a tool with find_tools and hears list_changed on its own listen stream; a
    handshake-era session's list is unchanged, and its own load is told to it."""
    with open(shared_env["HUB_CONFIG"], "a") as config:
        config.write('[tools]\nexpose = "search"\n')
    modern, legacy = BridgeClient(shared_env, tmp_path), BridgeClient(shared_env, tmp_path)

    def listed(bridge: BridgeClient, meta: dict[str, Any] | None = None) -> list[str]:
        reply = bridge.request("tools/list", {"_meta": meta} if meta else {})
        return [tool["name"] for tool in reply["result"]["tools"]]

    def find(bridge: BridgeClient, query: str, meta: dict[str, Any] | None = None) -> dict[str, Any]:
        params = {"name": "find_tools", "arguments": {"query": query, "limit": 1, "load": True}}
        reply = bridge.request("tools/call", {**params, **({"_meta": meta} if meta else {})})
        return reply["result"]["structuredContent"]

    try:
        legacy.initialize()
        modern.send(
            {
                "jsonrpc": "2.0",
                "id": "listen",
                "method": "subscriptions/listen",
                "params": {"_meta": META, "notifications": {"toolsListChanged": True}},
            }
        )
        _notified(modern, "notifications/subscriptions/acknowledged")
        assert listed(modern, META) == listed(legacy) == ["call_tool", "find_tools"]
        assert find(modern, "set a shared context entry", META)["loaded"] == ["context_set"]
        _notified(modern, "notifications/tools/list_changed")
        own = modern.request("tools/list", {"_meta": META})["result"]
        assert [t["name"] for t in own["tools"]] == ["call_tool", "context_set", "find_tools"]
        assert own["_meta"]["hub/sessionTools"] == ["context_set"]  # not kept for a fast start
        assert listed(legacy) == ["call_tool", "find_tools"]
        assert find(legacy, "slots and queued tasks of the pool")["loaded"] == ["pool_status"]
        _notified(legacy, "notifications/tools/list_changed")
        assert listed(legacy) == ["call_tool", "find_tools", "pool_status"]
        assert listed(modern, META) == ["call_tool", "context_set", "find_tools"]
        status = legacy.request("resources/read", {"uri": "hub://status"})
        sessions = json.loads(status["result"]["contents"][0]["text"])["tools"]["sessions"]
        assert sorted(s["loaded"] for s in sessions) == [["context_set"], ["pool_status"]]
    finally:
        assert [modern.close(), legacy.close()] == [0, 0]


def _shared_pids(cwd: Path) -> list[int]:
    """The `hub shared` processes started in `cwd` (counted by the OS, not by the store)."""
    found = []
    for proc in psutil.process_iter(["cmdline", "cwd"]):
        cmdline = proc.info["cmdline"] or []
        if proc.info["cwd"] == str(cwd) and "shared" in cmdline and "--key" in cmdline:
            found.append(proc.pid)
    return found


@pytest.mark.timeout(90)
def test_a_bridge_killed_while_its_process_starts_leaves_one_process(shared_env, tmp_path):
    """The started process holds the start lock until it listens: the next bridge waits for it
    instead of finding no socket and starting a second process for the launch."""
    first = BridgeClient(shared_env, tmp_path)
    first.send({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": INIT})
    wait_for(lambda: _shared_pids(tmp_path), what="the shared process to be started", timeout=30)
    (starting,) = _shared_pids(tmp_path)
    first.proc.kill()  # its client gave up while the process was still starting
    first.proc.wait(timeout=10)
    second = BridgeClient(shared_env, tmp_path)
    try:
        assert second.initialize()["result"]["serverInfo"]["name"] == "hub"
        assert _shared_pids(tmp_path) == [starting]  # before: a second process, the first unreachable
    finally:
        assert second.close() == 0


@pytest.mark.timeout(120)
def test_a_wedged_process_replaced_by_a_newer_one_is_shown_and_stopped_as_itself(shared_env, tmp_path):
    """A stopped (wedged) process is replaced at its socket path by the launch's next process:
    `hub status` shows each with its own pid (the socket's answer is the newer one's), and
    `hub stop --force` signals the wedged one instead of asking the socket, the newer one's, twice."""
    (tmp_path / "hub.toml").write_text(
        (tmp_path / "hub.toml").read_text().replace("idle_exit_s = 1", "idle_exit_s = 300")
    )
    first = BridgeClient(shared_env, tmp_path)
    try:
        first.initialize()
    finally:
        assert first.close() == 0
    (wedged,) = _shared_pids(tmp_path)
    os.kill(wedged, signal.SIGSTOP)
    second = BridgeClient(shared_env, tmp_path)
    try:
        second.initialize()  # the probe gets no answer: a newer process takes the socket path
    finally:
        assert second.close() == 0
    (newer,) = set(_shared_pids(tmp_path)) - {wedged}
    rows = {entry["pid"]: entry for entry in shared_processes(shared_env, tmp_path)}
    assert set(rows) == {wedged, newer}  # before: the newer pid twice
    assert rows[newer]["answers"] and not rows[wedged]["answers"]
    assert f"answered by pid {newer}" in rows[wedged]["problem"]
    stopped = _hub(shared_env, tmp_path, "stop", "--force")
    assert stopped.returncode == 0, stopped.stderr
    assert f"stopped pid {wedged}" in stopped.stdout and f"stopped pid {newer}" in stopped.stdout
    wait_for(lambda: gone(wedged) and gone(newer), what="both processes to exit")
