"""Faults of the shared hub process behind `hub serve` bridges: kill -9 under a burst, a process
that deletes its successor's socket, a listener that never answers, over-long request lines,
hostile socket directories. Real processes throughout (bridges, the shared process, the test
downstream server)."""

from __future__ import annotations

import os
import random
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from bridges import Bridge, shared_pids
from hubtests import DOWNSTREAM, hub_env, wait_for

pytestmark = pytest.mark.timeout(240)

RESTARTED = "the hub restarted while this request was running"


@pytest.fixture
def shared_env(tmp_path) -> Iterator[dict[str, str]]:
    """Sharing on, the proxy and the test downstream server, and no process left afterwards."""
    env = hub_env(tmp_path, HUB_SHARE="1", HUB_PLUGINS="proxy", HUB_FAST_START="0")
    (tmp_path / "hub.toml").write_text(
        f'[daemon]\nidle_exit_s = 2\n[servers.d]\ncommand = "{sys.executable}"\nargs = ["{DOWNSTREAM}"]\n'
    )
    env["HUB_CONFIG"] = str(tmp_path / "hub.toml")
    yield env
    for pid in shared_pids(tmp_path):
        os.kill(pid, signal.SIGKILL)


def _burst(session: int, trial: int) -> tuple[bytes, list[str]]:
    """20 calls: a 1 s downstream sleep, a context_set and an echo, in turn; one write."""
    lines, ids = [], []
    for n in range(20):
        request_id = f"s{session}-t{trial}-{n}"
        if n % 3 == 0:
            call = {"name": "d__sleep", "arguments": {"seconds": 1}}
        elif n % 3 == 1:
            call = {"name": "context_set", "arguments": {"key": f"k{session}", "value": request_id}}
        else:
            call = {"name": "d__echo", "arguments": {"text": request_id}}
        lines.append(
            f'{{"jsonrpc":"2.0","id":"{request_id}","method":"tools/call","params":{_json(call)}}}\n'
        )
        ids.append(request_id)
    return "".join(lines).encode(), ids


def _json(value: object) -> str:
    import json

    return json.dumps(value)


def test_kill_9_under_a_burst_answers_every_request_exactly_once(shared_env, tmp_path):
    """Found by a hostile test: three sessions send 20 calls at once and the shared process is
    killed 10-20 ms into the burst; the lines it had read but not yet reported to the bridges
    got no reply at all. Every request must get exactly one: its result, or the error saying the
    hub restarted."""
    sessions = [Bridge(shared_env, tmp_path) for _ in range(3)]
    try:
        for bridge in sessions:
            bridge.initialize()
        wait_for(  # the proxy learns the downstream's tools once, in the background
            lambda: (
                "d__sleep"
                in [
                    t["name"]
                    for t in sessions[0].request(f"l{time.monotonic_ns()}", "tools/list")["result"]["tools"]
                ]
            ),
            what="the downstream server's tools",
        )
        rng = random.Random(27)
        sent: list[list[str]] = [[] for _ in sessions]
        restarted = 0
        for trial in range(5):
            (pid,) = wait_for(lambda: shared_pids(tmp_path), what="the shared process")
            for i, bridge in enumerate(sessions):  # each session served by the live process
                bridge.request(f"p{i}-{trial}", "ping")
            bursts = [_burst(i, trial) for i in range(len(sessions))]
            delay = rng.uniform(0.010, 0.020)
            start = time.monotonic()
            for bridge, (data, _ids) in zip(sessions, bursts, strict=True):
                bridge.write(data)
            time.sleep(max(0.0, start + delay - time.monotonic()))
            os.kill(pid, signal.SIGKILL)
            for i, (bridge, (_, ids)) in enumerate(zip(sessions, bursts, strict=True)):
                sent[i] += ids
                bridge.wait_replies(ids)
            restarted += sum(
                RESTARTED in str(r.get("error", {}).get("message", ""))
                for b, s in zip(sessions, sent, strict=True)
                for rid in s[-20:]
                for r in b.replies(rid)
            )
        assert restarted > 0  # the kills did land on requests in flight
    finally:
        codes = [bridge.finish() for bridge in sessions]  # every answer written, then the end
    assert codes == [0, 0, 0]
    for bridge, ids in zip(sessions, sent, strict=True):
        counts = bridge.answer_counts()
        twice = {rid: counts[rid] for rid in ids if counts[rid] != 1}
        assert twice == {}, f"answered other than once: {twice}"
        assert bridge.garbage == []


def _peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def _long_line(bridge: Bridge, request_id: str, megabytes: int, *, id_last: bool) -> None:
    """A `context_set` request with a value of `megabytes` MB, written 1 MB at a time (never
    whole in memory); its id first, or last as the TypeScript SDK (Claude Code) writes it."""
    head = b'{"jsonrpc":"2.0",' + (b"" if id_last else f'"id":"{request_id}",'.encode())
    bridge.write(
        head + b'"method":"tools/call","params":{"name":"context_set","arguments":{"key":"k","value":"'
    )
    chunk = b"x" * (1 << 20)
    for _ in range(megabytes):
        bridge.write(chunk)
    bridge.write(b'"}}' + (f',"id":"{request_id}"' if id_last else "").encode() + b"}\n")


def test_a_400_mb_request_line_is_refused_with_flat_memory_and_the_session_goes_on(shared_env, tmp_path):
    """Found by a hostile test: a 400 MB request line on stdio took the shared process to
    1.29 GB (HTTP caps bodies at 4 MB; stdio had no cap): one session could take memory from
    all. A line over `[limits] max_line_bytes` is read past, answered with an error naming the
    limit (with its id, found at its start or its end), and the session goes on."""
    bridge, other = Bridge(shared_env, tmp_path), Bridge(shared_env, tmp_path)
    try:
        bridge.initialize()
        other.initialize()
        (pid,) = shared_pids(tmp_path)
        before = _peak_rss(pid)
        _long_line(bridge, "big", 400, id_last=True)
        bridge.wait_replies(["big"], timeout=120)
        (refused,) = bridge.replies("big")
        assert refused["error"]["code"] == -32600
        assert "over the hub's limit of 4,194,304 bytes" in refused["error"]["message"]
        assert "max_line_bytes" in refused["error"]["message"]
        assert _peak_rss(pid) - before < 64 << 20  # it was 1.2 GB more
        ok = bridge.request("after", "tools/call", {"name": "context_get", "arguments": {"key": "k"}})
        assert "result" in ok
        assert "result" in other.request("other", "ping")
    finally:
        bridge.finish()
        other.finish()


def test_an_over_long_line_in_process_is_refused_and_the_session_goes_on(shared_env, tmp_path):
    peer = Bridge(shared_env, tmp_path, "--no-share", "--set", "limits.max_line_bytes=100000")
    try:
        peer.initialize()
        _long_line(peer, "long", 1, id_last=False)
        peer.wait_replies(["long"])
        (refused,) = peer.replies("long")
        assert "over the hub's limit of 100,000 bytes" in refused["error"]["message"]
        assert "result" in peer.request("after", "ping")
    finally:
        assert peer.finish() == 0
