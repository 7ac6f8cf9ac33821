"""The fast start over stdio: list requests answered from the last run's answers while the hub
imports the SDK, the rest held and handed over, stale answers corrected with list_changed."""

from __future__ import annotations

import json
import queue
import threading
import time
from pathlib import Path
from typing import Any

from hubtests import StdioPeer, hub_env

META = {
    "io.modelcontextprotocol/protocolVersion": "2026-07-28",
    "io.modelcontextprotocol/clientInfo": {"name": "test", "version": "1"},
    "io.modelcontextprotocol/clientCapabilities": {},
}


def session(
    tmp_path: Path, expect_list_changed: bool = False, **env: str
) -> tuple[list[dict[str, Any]], str]:
    """What Claude Code 2.1 sends first, then a call; every message the hub wrote, and its stderr.
    With `expect_list_changed`, it also waits (on the message, not a clock) for tools/list_changed."""
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
        messages = read_until(peer, lambda got: {"d", "t", "c"} <= {m.get("id") for m in got}, seconds=120)
        if expect_list_changed:
            messages += read_until(
                peer,
                lambda got: any(m.get("method") == "notifications/tools/list_changed" for m in got),
                seconds=120,
            )
        messages += read_until(peer, lambda got: False, seconds=0.5)  # anything that follows soon
        assert peer.proc.stdin is not None
        peer.proc.stdin.close()
        peer.proc.wait(timeout=20)
        return messages, peer.stderr()
    finally:
        peer.close()


def read_until(peer: StdioPeer, done: Any, seconds: float) -> list[dict[str, Any]]:
    """Messages until `done(messages)` or `seconds` pass. Lines are read by a thread into a queue:
    select() on the pipe missed lines already in the reader's buffer (two messages arriving in one
    chunk), so a message could wait for the deadline and the test fail on a loaded machine."""
    assert peer.proc.stdout is not None
    lines: queue.Queue[str] | None = getattr(peer, "lines", None)
    if lines is None:
        lines = peer.lines = queue.Queue()  # type: ignore[attr-defined]
        stdout = peer.proc.stdout

        def pump() -> None:
            for line in stdout:
                lines.put(line)
            lines.put("")

        threading.Thread(target=pump, daemon=True).start()
    got: list[dict[str, Any]] = []
    deadline = time.monotonic() + seconds
    while not done(got):
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            break
        if not line:
            lines.put("")  # end of output, for the next call too
            break
        got.append(json.loads(line))
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
    messages, stderr = session(tmp_path, expect_list_changed=True)
    assert "gone_tool" in tool_names(messages)  # what the client was told at first
    assert any(m.get("method") == "notifications/tools/list_changed" for m in messages), messages
    assert "the start-up answers were out of date; clients were told" in stderr
    kept = json.loads(path.read_text())["answers"]["tools/list|2026-07-28"]["tools"]
    assert "gone_tool" not in [t["name"] for t in kept]  # and the next start is right again


def test_hub_fast_start_0_turns_it_off(tmp_path):
    session(tmp_path)
    _, stderr = session(tmp_path, HUB_FAST_START="0")
    assert "answered list requests from the last run" not in stderr


def test_only_a_list_answer_is_kept_for_a_list(tmp_path):
    """Found by a hostile client: a refused `tools/list` left its id waiting, and a call reusing
    the id was kept as the list, for every later cold start. An error forgets the id; a result
    that is not a list answer is not kept."""
    from hub.launch.fast_start import AnswerCache

    cache = AnswerCache(tmp_path / "fastfront.json", "fp")
    listing = json.dumps({"jsonrpc": "2.0", "id": "x", "method": "tools/list", "params": {"_meta": META}})
    key = "tools/list|2026-07-28"
    cache.saw_request(listing)
    refused = '{"jsonrpc":"2.0","id":"x","error":{"code":-32602,"message":"no"}}'
    assert cache.saw_answer(refused) == ("x", key, None)
    assert cache.saw_answer('{"jsonrpc":"2.0","id":"x","result":{"content":[]}}') is None  # forgotten
    cache.saw_request(listing)  # and the same id for a call at once: its answer is not the list's
    assert cache.saw_answer('{"jsonrpc":"2.0","id":"x","result":{"content":[]}}') == ("x", key, None)
    assert cache.answers == {}
    cache.saw_request(listing)
    assert cache.saw_answer('{"jsonrpc":"2.0","id":"x","result":{"tools":[]}}') == ("x", key, True)
    assert cache.answers == {key: {"tools": []}}
    cache.saw_request(listing)  # a session's own list (tools it loaded with find_tools): not kept
    own = '{"jsonrpc":"2.0","id":"x","result":{"tools":[],"_meta":{"hub/sessionTools":["a"]}}}'
    assert cache.saw_answer(own) == ("x", key, None)
    assert cache.answers == {key: {"tools": []}}


def test_the_fast_start_answers_only_what_the_hub_would(tmp_path):
    """Found by a hostile client: the fast start answered requests the hub refuses (a wrong
    `jsonrpc`, an id of another type, a partial envelope, a connection of the handshake era)."""
    import os

    from hub.launch.fast_start import AnswerCache, EarlyAnswers, _answer

    cache = AnswerCache(tmp_path / "fastfront.json", "fp")
    cache.answers["tools/list|2026-07-28"] = {"tools": []}
    read_fd, write_fd = os.pipe()

    def listing(**fields: Any) -> bytes:
        message = {"jsonrpc": "2.0", "method": "tools/list", "params": {"_meta": META}, **fields}
        return json.dumps(message).encode()

    modern = EarlyAnswers()
    assert not _answer(listing(id=[1]), cache, modern, write_fd)
    assert not _answer(listing(id=2, jsonrpc="1.0"), cache, modern, write_fd)
    partial = {"io.modelcontextprotocol/protocolVersion": "2026-07-28"}
    assert not _answer(listing(id=3, params={"_meta": partial}), cache, modern, write_fd)
    assert _answer(listing(id=4), cache, modern, write_fd)
    assert json.loads(os.read(read_fd, 65536)) == {"jsonrpc": "2.0", "id": 4, "result": {"tools": []}}

    handshake = EarlyAnswers()  # a first request without the envelope: the hub answers the rest
    assert not _answer(b'{"jsonrpc":"2.0","id":0,"method":"ping"}', cache, handshake, write_fd)
    assert not _answer(listing(id=5), cache, handshake, write_fd)
    os.close(read_fd)
    os.close(write_fd)
