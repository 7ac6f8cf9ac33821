"""Faults of downstream servers behind the hub: an answer that is not UTF-8, a server that ignores
the end of its input when the hub is killed, thousands of servers to learn at once, a flood of
notifications from one call. Real processes: the hub (in-process or shared) and `raw_server.py`,
a downstream written with raw JSON lines that misbehaves as an SDK server never would."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from bridges import Bridge, shared_pids
from hubtests import TESTS, gone, hub_env, wait_for

pytestmark = pytest.mark.timeout(90)

RAW = TESTS / "peers" / "raw_server.py"


def _server(name: str, **table: str) -> str:
    extra = "".join(f"{key} = {value}\n" for key, value in table.items())
    return f'[servers.{name}]\ncommand = "{sys.executable}"\nargs = ["{RAW}"]\n{extra}'


@pytest.fixture
def hub_dir(tmp_path) -> Iterator[Path]:
    yield tmp_path
    for pid in shared_pids(tmp_path):
        os.kill(pid, signal.SIGKILL)


def _env(tmp_path: Path, toml: str, **extra: str) -> dict[str, str]:
    (tmp_path / "hub.toml").write_text(toml)
    return hub_env(tmp_path, HUB_PLUGINS="proxy", HUB_CONFIG=str(tmp_path / "hub.toml"), **extra)


def _tools(bridge: Bridge) -> list[str]:
    return [t["name"] for t in bridge.request(f"l{os.urandom(4).hex()}", "tools/list")["result"]["tools"]]


def _call(bridge: Bridge, request_id: str, tool: str, **arguments: object) -> dict:
    reply = bridge.request(request_id, "tools/call", {"name": tool, "arguments": arguments})
    assert "result" in reply, reply
    return reply["result"]


def test_an_answer_that_is_not_utf8_fails_the_call_instead_of_hanging(hub_dir):
    """Found by a hostile test: a downstream answer with bytes that are not UTF-8 was taken for
    "not JSON" and the call waited past 120 s for an answer that had come. The call fails at
    once with an error saying why, on the raw path and on the SDK's (validate_output)."""
    env = _env(hub_dir, _server("raw") + _server("checked", validate_output="true"))
    hub = Bridge(env, hub_dir, "--no-share")
    try:
        hub.initialize()
        wait_for(lambda: {"raw__mangle", "checked__mangle"} <= set(_tools(hub)), what="the tools")
        for n, tool in enumerate(["raw__mangle", "checked__mangle"]):
            result = _call(hub, f"m{n}", tool)
            text = result["content"][0]["text"]
            assert result["isError"] and "not valid UTF-8 (bytes ff fe" in text, text
        assert _call(hub, "e", "raw__echo", text="still here")["content"][0]["text"] == "still here"
    finally:
        assert hub.finish() == 0


def test_a_server_that_ignores_eof_dies_with_a_killed_shared_process(hub_dir):
    """Found by a hostile test: a downstream server that does not exit when its input ends
    outlived kill -9 of the shared process that started it (the pool's workers had the
    parent-death signal; downstream servers did not)."""
    pids = hub_dir / "pids"
    pids.mkdir()
    env = _env(
        hub_dir,
        "[daemon]\nidle_exit_s = 5\n"
        + _server("raw", env=f'{{ RAW_IGNORE_EOF = "1", RAW_PID_DIR = "{pids}" }}'),
        HUB_SHARE="1",
        HUB_FAST_START="0",
    )
    bridge = Bridge(env, hub_dir)
    try:
        bridge.initialize()
        wait_for(lambda: "raw__echo" in _tools(bridge), what="the tools")
        assert _call(bridge, "e", "raw__echo", text="x")["content"][0]["text"] == "x"
        started = [int(p.name) for p in pids.iterdir()]
        assert started and not any(gone(pid) for pid in started)
        (shared,) = shared_pids(hub_dir)
        os.kill(shared, signal.SIGKILL)
        wait_for(lambda: all(gone(pid) for pid in started), timeout=15, what="the servers to die with it")
    finally:
        bridge.proc.kill()
        bridge.finish()
        for pid in [int(p.name) for p in pids.iterdir()]:
            if not gone(pid):
                os.kill(pid, signal.SIGKILL)


def test_servers_learned_at_start_are_started_a_few_at_a_time(hub_dir):
    """Found by a hostile test: 2,000 imported servers were all started at once on the first
    start, to learn their tools. At most `[limits] starting_servers` are starting at any time
    (here 4 of 24, each taking 0.2 s to answer `initialize`)."""
    pids = hub_dir / "pids"
    pids.mkdir()
    table = {"env": f'{{ RAW_INIT_DELAY_S = "0.2", RAW_PID_DIR = "{pids}" }}'}
    servers = "".join(_server(f"s{n}", **table) for n in range(24))
    env = _env(hub_dir, "[limits]\nstarting_servers = 4\n" + servers)
    hub = Bridge(env, hub_dir, "--no-share")
    try:
        hub.initialize()
        wait_for(
            lambda: (
                len(list(pids.iterdir())) == 24
                and all(len(p.read_text().split()) == 2 for p in pids.iterdir())
            ),
            timeout=60,
            what="every server to be started and asked",
        )
        spans = [tuple(map(float, p.read_text().split())) for p in pids.iterdir()]
        events = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
        starting = most = 0
        for _, step in events:
            starting += step
            most = max(most, starting)
        assert most <= 4, f"{most} servers were starting at once"
        assert len([t for t in _tools(hub) if t.endswith("__echo")]) == 24
    finally:
        assert hub.finish() == 0


def test_a_flood_of_notifications_from_one_call_is_coalesced_as_documented(hub_dir):
    """Found by a hostile test: of 20,000 log and 20,000 progress notifications sent during one
    call, 4,445 reached the client, without a word on what was dropped. What the README says:
    the answer is right; progress is coalesced for a client that reads slower than the server
    reports (increasing, and the last report always arrives before the answer)."""
    env = _env(hub_dir, _server("raw"))
    hub = Bridge(env, hub_dir, "--no-share")
    try:
        hub.initialize()
        wait_for(lambda: "raw__flood" in _tools(hub), what="the tools")
        params = {"name": "raw__flood", "arguments": {"logs": 20000, "progress": 20000}}
        reply = hub.request("f", "tools/call", {**params, "_meta": {"progressToken": "p"}})
        assert reply["result"]["content"][0]["text"] == "flooded 40000"
        progress = [
            m["params"]["progress"]
            for m in hub.messages
            if m.get("method") == "notifications/progress" and m["params"]["progressToken"] == "p"
        ]
        assert progress and progress[-1] == 20000
        assert progress == sorted(set(progress))  # strictly increasing
        assert "result" in hub.request("after", "ping")
    finally:
        assert hub.finish() == 0
