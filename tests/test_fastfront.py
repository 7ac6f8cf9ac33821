"""The fast start over stdio: list requests answered from the last run's answers while the hub
imports the SDK, the rest held and handed over, stale answers corrected with list_changed."""

from __future__ import annotations

import json
import os
import select
import time
from pathlib import Path
from typing import Any

from hubtests import StdioPeer, hub_env

META = {
    "io.modelcontextprotocol/protocolVersion": "2026-07-28",
    "io.modelcontextprotocol/clientInfo": {"name": "test", "version": "1"},
    "io.modelcontextprotocol/clientCapabilities": {},
}


def session(tmp_path: Path, **env: str) -> tuple[list[dict[str, Any]], str]:
    """What Claude Code 2.1 sends first, then a call; every message the hub wrote, and its stderr."""
    peer = StdioPeer([], hub_env(tmp_path, HUB_PLUGINS="", **env), tmp_path)
    try:
        peer.send({"jsonrpc": "2.0", "id": "d", "method": "server/discover", "params": {"_meta": META}})
        peer.send(
            {
                "jsonrpc": "2.0",
                "id": "l",
                "method": "subscriptions/listen",
                "params": {"_meta": META, "notifications": {"toolsListChanged": True}},
            }
        )
        peer.send({"jsonrpc": "2.0", "id": "t", "method": "tools/list", "params": {"_meta": META}})
        peer.send(
            {
                "jsonrpc": "2.0",
                "id": "c",
                "method": "tools/call",
                "params": {"_meta": META, "name": "context_set", "arguments": {"key": "k", "value": "v"}},
            }
        )
        messages = read_until(peer, lambda got: {"d", "t", "c"} <= {m.get("id") for m in got}, seconds=30)
        messages += read_until(peer, lambda got: False, seconds=1.0)  # anything that follows soon
        assert peer.proc.stdin is not None
        peer.proc.stdin.close()
        peer.proc.wait(timeout=20)
        return messages, peer.stderr()
    finally:
        peer.close()


def read_until(peer: StdioPeer, done: Any, seconds: float) -> list[dict[str, Any]]:
    """Lines from the hub's stdout until `done(got)` or the deadline. Reads the file descriptor
    itself: a buffered readline can swallow a second line that select() then never reports."""
    assert peer.proc.stdout is not None
    fd = peer.proc.stdout.fileno()
    buffer: bytes = getattr(peer, "_raw", b"")
    got: list[dict[str, Any]] = []
    deadline = time.monotonic() + seconds
    while not done(got) and time.monotonic() < deadline:
        if b"\n" in buffer:
            line, _, buffer = buffer.partition(b"\n")
            got.append(json.loads(line))
            continue
        ready, _, _ = select.select([fd], [], [], 0.05)
        if ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            buffer += chunk
    peer._raw = buffer  # type: ignore[attr-defined]
    return got


def by_id(messages: list[dict[str, Any]], request_id: str) -> dict[str, Any]:
    return next(m for m in messages if m.get("id") == request_id)


def acks(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [m for m in messages if m.get("method") == "notifications/subscriptions/acknowledged"]


def tool_names(messages: list[dict[str, Any]]) -> list[str]:
    return [t["name"] for t in by_id(messages, "t")["result"]["tools"]]


def test_a_second_start_answers_from_the_last_run(tmp_path):
    first, stderr = session(tmp_path)
    assert "answered list requests from the last run" not in stderr  # nothing kept yet
    cache = json.loads((tmp_path / "state" / "fastfront.json").read_text())
    assert set(cache["answers"]) >= {"server/discover|2026-07-28", "tools/list|2026-07-28"}

    second, stderr = session(tmp_path)
    assert "answered list requests from the last run while starting requests=2" in stderr
    assert tool_names(second) == tool_names(first)
    assert by_id(second, "d")["result"] == by_id(first, "d")["result"]
    assert (
        len(acks(second)) == 1
        and acks(second)[0]["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"] == "l"
    )
    assert by_id(second, "c")["result"]["structuredContent"] == {
        "key": "k",
        "value": "v",
    }  # held, then served
    assert "out of date" not in stderr


def test_a_stale_answer_is_corrected_with_list_changed(tmp_path):
    session(tmp_path)
    path = tmp_path / "state" / "fastfront.json"
    cache = json.loads(path.read_text())
    cache["answers"]["tools/list|2026-07-28"]["tools"].append(
        {"name": "gone_tool", "inputSchema": {"type": "object", "properties": {}}}
    )
    path.write_text(json.dumps(cache))
    messages, stderr = session(tmp_path)
    assert "gone_tool" in tool_names(messages)  # what the client was told at first
    assert any(m.get("method") == "notifications/tools/list_changed" for m in messages), messages
    assert "the start-up answers were out of date; clients were told" in stderr
    kept = json.loads(path.read_text())["answers"]["tools/list|2026-07-28"]["tools"]
    assert "gone_tool" not in [t["name"] for t in kept]  # and the next start is right again


def test_hub_fast_start_0_turns_it_off(tmp_path):
    session(tmp_path)
    _, stderr = session(tmp_path, HUB_FAST_START="0")
    assert "answered list requests from the last run" not in stderr
