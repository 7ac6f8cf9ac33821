"""Forwarded calls and cached lists answered before the SDK sees them (hub.server.shortcuts),
over real stdio: in-process (`--no-share`) and through the bridge, which hands its stdin and
stdout to the shared process (hub.handoff). Both protocol eras, progress, cancellation, list
changes, malformed requests, and a bridge that is not in the way of the messages."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import anyio
import pytest
from hubtests import DOWNSTREAM, StdioPeer, hub_env, stop_shared_hubs, wait_for
from mcp import Client, StdioServerParameters

from hub.testing import result_text

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def project(tmp_path: Path) -> tuple[Path, Path]:
    markers = tmp_path / "markers"
    markers.mkdir(exist_ok=True)
    (tmp_path / "hub.toml").write_text(
        f'[plugins]\nenabled = ["proxy"]\n\n[servers.d]\ncommand = "{sys.executable}"\n'
        f'args = ["{DOWNSTREAM}"]\nenv = {{ DOWNSTREAM_MARKER_DIR = "{markers}" }}\n'
    )
    return tmp_path / "hub.toml", markers


@pytest.mark.parametrize("share", ["0", "1"])
@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_forwarded_calls_lists_and_progress_over_stdio(tmp_path, mode, share):
    config, markers = project(tmp_path)
    env = hub_env(tmp_path, HUB_SHARE=share, XDG_RUNTIME_DIR=str(tmp_path / "run"))
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "hub", "--config", str(config)], env=env, cwd=str(tmp_path)
    )
    try:
        async with Client(params, mode=mode) as client:
            with anyio.fail_after(60):
                while "d__echo" not in {t.name for t in (await client.list_tools()).tools}:
                    await anyio.sleep(0.05)
            first = await client.list_tools()  # answered from the cached text
            again = await client.list_tools()
            assert [t.model_dump() for t in again.tools] == [t.model_dump() for t in first.tools]

            assert result_text(await client.call_tool("d__echo", {"text": "hé"})) == "hé"
            added = await client.call_tool("d__add", {"a": 2, "b": 3})
            assert added.structured_content == {"result": 5}
            bad = await client.call_tool("d__add", {"a": "two", "b": 3})
            assert bad.is_error and "invalid arguments for d__add: a:" in result_text(bad)
            failed = await client.call_tool("d__fail", {})
            assert failed.is_error and "Error executing tool fail" in result_text(failed)

            seen: list[float] = []

            async def on_progress(progress: float, total: float | None, message: str | None) -> None:
                seen.append(progress)

            counted = await client.call_tool("d__count", {"to": 3}, progress_callback=on_progress)
            assert counted.structured_content == {"result": 3} and seen == [1, 2, 3]

            with anyio.move_on_after(1):  # the client gives up: the downstream hears of it
                await client.call_tool("d__sleep", {"seconds": 30, "tag": "gave-up"})
            with anyio.fail_after(10):
                while not (markers / "cancelled-gave-up").exists():
                    await anyio.sleep(0.05)

            # A list that changes downstream is not answered from the old text.
            await client.call_tool("d__grow", {"name": "extra"})
            with anyio.fail_after(30):
                while "d__extra" not in {t.name for t in (await client.list_tools()).tools}:
                    await anyio.sleep(0.05)
            assert result_text(await client.call_tool("d__extra", {})) == "I am extra"
    finally:
        stop_shared_hubs(env, tmp_path)


@pytest.mark.parametrize("share", ["0", "1"])
def test_raw_requests_to_forwarded_tools_get_the_regular_answers(tmp_path, share):
    config, markers = project(tmp_path)
    env = hub_env(tmp_path, HUB_SHARE=share, XDG_RUNTIME_DIR=str(tmp_path / "run"))
    peer = StdioPeer(["--config", str(config)], env, tmp_path)
    try:
        early = peer.request("tools/call", {"name": "d__echo", "arguments": {"text": "x"}})
        assert early["error"]["code"] == -32600 and "initialize" in early["error"]["message"]
        peer.initialize()
        wait_for(
            lambda: "d__echo" in {t["name"] for t in peer.request("tools/list")["result"]["tools"]},  # type: ignore[index]
            what="the proxied tools",
        )
        # Progress with the caller's own token, then the answer.
        peer.send(
            {
                "jsonrpc": "2.0",
                "id": "count",
                "method": "tools/call",
                "params": {"name": "d__count", "arguments": {"to": 2}, "_meta": {"progressToken": "tok"}},
            }
        )
        import json

        notes = []
        while True:
            message = json.loads(peer.proc.stdout.readline())  # type: ignore[union-attr]
            if message.get("id") == "count":
                break
            notes.append(message)
        assert [(n["params"]["progressToken"], n["params"]["progress"]) for n in notes] == [
            ("tok", 1),
            ("tok", 2),
        ]
        assert message["result"]["structuredContent"] == {"result": 2}

        # Cancelled by the client: the downstream hears it and the request gets no answer.
        sleeping = peer.request(
            "tools/call", {"name": "d__sleep", "arguments": {"seconds": 30, "tag": "raw"}}, wait=False
        )
        wait_for(lambda: (markers / "started-raw").exists(), what="the call to start")
        peer.send({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": sleeping}})
        wait_for(lambda: (markers / "cancelled-raw").exists(), what="the cancellation downstream")
        after = peer.request("tools/call", {"name": "d__echo", "arguments": {"text": "next"}})
        assert after["result"]["content"][0]["text"] == "next"  # and nothing came for `sleeping`

        # Malformed forwarded calls are answered as any malformed request is.
        peer.send(
            {
                "jsonrpc": "2.0",
                "id": 90,
                "method": "tools/call",
                "params": {"name": "d__echo", "arguments": "x"},
            }
        )
        assert peer.read_reply(90)["error"]["code"] == -32602  # as the SDK answers it, not run
        peer.proc.stdin.write(
            '{"jsonrpc":"2.0","id":91,"method":"tools/call","params":{"name":"d__echo","arguments":{"text":"\\ud800"}}}\n'
        )  # type: ignore[union-attr]
        peer.proc.stdin.flush()  # type: ignore[union-attr]
        assert peer.read_reply(91)["error"]["code"] == -32602
        peer.proc.stdin.write(
            '{"jsonrpc":"2.0","id":"\\ud800","method":"tools/call","params":{"name":"d__echo","arguments":{"text":"x"}}}\n'
        )  # type: ignore[union-attr]
        peer.proc.stdin.flush()  # type: ignore[union-attr]
        assert peer.read_reply("\ud800")["error"]["code"] == -32602  # refused, not run
        unknown = peer.request("tools/call", {"name": "d__nope", "arguments": {}})
        assert "nope" in json.dumps(unknown)
    finally:
        peer.close()
        stop_shared_hubs(env, tmp_path)


def test_the_bridge_is_not_in_the_way_of_the_messages(tmp_path):
    """The bridge hands its stdin and stdout over: with the bridge stopped (SIGSTOP), calls are
    still answered. Stopping it for good (SIGTERM) cancels the session's calls downstream."""
    config, markers = project(tmp_path)
    env = hub_env(tmp_path, HUB_SHARE="1", XDG_RUNTIME_DIR=str(tmp_path / "run"))
    peer = StdioPeer(["--config", str(config)], env, tmp_path)
    try:
        peer.initialize()
        wait_for(
            lambda: "d__echo" in {t["name"] for t in peer.request("tools/list")["result"]["tools"]},  # type: ignore[index]
            what="the proxied tools",
        )
        os.kill(peer.proc.pid, signal.SIGSTOP)
        try:
            answer = peer.request("tools/call", {"name": "d__echo", "arguments": {"text": "past the bridge"}})
            assert answer["result"]["content"][0]["text"] == "past the bridge"
            assert peer.request("ping") == {"jsonrpc": "2.0", "id": peer._next_id, "result": {}}
        finally:
            os.kill(peer.proc.pid, signal.SIGCONT)
        peer.request(
            "tools/call", {"name": "d__sleep", "arguments": {"seconds": 30, "tag": "bridge"}}, wait=False
        )
        wait_for(lambda: (markers / "started-bridge").exists(), what="the call to start")
        peer.proc.terminate()
        assert peer.proc.wait(timeout=10) == 0
        wait_for(lambda: (markers / "cancelled-bridge").exists(), what="the cancellation downstream")
    finally:
        peer.close()
        stop_shared_hubs(env, tmp_path)


def test_what_the_shortcut_must_not_take(tmp_path):
    """Found by a hostile review: an answer is kept as a list's only if it is one; a 2026-era
    request is taken only on a connection of that era with its whole envelope; a hook's failure
    on one line costs no other line."""
    import json

    config, _ = project(tmp_path)
    env = hub_env(tmp_path)
    peer = StdioPeer(["--config", str(config)], env, tmp_path)
    modern = {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientInfo": {"name": "t", "version": "0"},
    }
    try:
        assert "result" in peer.request("ping")  # this connection is of the handshake era now
        peer.initialize()
        wait_for(
            lambda: "d__echo" in {t["name"] for t in peer.request("tools/list")["result"]["tools"]},  # type: ignore[index]
            what="the proxied tools",
        )
        # The same id for a ping and a list, at once: the ping's {} is not kept as the list.
        assert peer.proc.stdin is not None
        peer.proc.stdin.write(
            '{"jsonrpc":"2.0","id":99,"method":"ping"}\n{"jsonrpc":"2.0","id":99,"method":"prompts/list"}\n'
        )
        peer.proc.stdin.flush()
        peer.read_reply(99)
        peer.read_reply(99)
        assert "prompts" in peer.request("prompts/list")["result"]  # type: ignore[index]
        # A 2026-era call on a handshake-era connection: the SDK's refusal, not an answer.
        refused = peer.request("tools/call", {"name": "d__echo", "arguments": {"text": "x"}, "_meta": modern})
        assert "error" in refused, refused
        # So is a null version in the envelope, and a request that carries an error member.
        nulled = peer.request("tools/list", {"_meta": {"io.modelcontextprotocol/protocolVersion": None}})
        assert "error" in nulled, nulled
        peer.send(
            {
                "jsonrpc": "2.0",
                "id": "e",
                "method": "tools/call",
                "error": {"code": 1, "message": "x"},
                "params": {"name": "d__echo", "arguments": {"text": "x"}},
            }
        )
        assert peer.read_reply("e")["error"]["code"] == -32600
        # An id no hook can use as a key, and a ping in the same write: both answered.
        peer.proc.stdin.write(
            '{"jsonrpc":"2.0","id":[1],"method":"tools/list"}\n{"jsonrpc":"2.0","id":7,"method":"ping"}\n'
        )
        peer.proc.stdin.flush()
        first = json.loads(peer.proc.stdout.readline())  # type: ignore[union-attr]
        second = json.loads(peer.proc.stdout.readline())  # type: ignore[union-attr]
        assert {first.get("id"), second.get("id")} == {None, 7}
    finally:
        peer.close()
    fresh = StdioPeer(["--config", str(config)], env, tmp_path)
    try:  # 2026 era without clientCapabilities: the SDK's -32602, as for the hub's own tools
        wait_for(
            lambda: (
                "d__echo"
                in {
                    t["name"]
                    for t in fresh.request(
                        "tools/list", {"_meta": {**modern, "io.modelcontextprotocol/clientCapabilities": {}}}
                    )["result"]["tools"]
                }
            ),  # type: ignore[index]
            what="the proxied tools",
        )
        bare = fresh.request("tools/call", {"name": "d__echo", "arguments": {"text": "x"}, "_meta": modern})
        assert bare.get("error", {}).get("code") == -32602, bare  # type: ignore[union-attr]
    finally:
        fresh.close()


def test_the_shortcut_follows_the_era_the_sdk_fixed():
    """The era comes from the first request the SDK gets (`saw_request`, after `MessageCheck`),
    not from a line it refused: a client that pings before `initialize` is of the handshake era,
    and the shortcut still learns the handshake's version."""
    from hub.plugin.registry import Registry
    from hub.server.dispatch import Dispatch
    from hub.server.shortcuts import LineShortcut

    fast = Dispatch(Registry(), None)  # type: ignore[arg-type]
    fast.texts[("tools/list", "2025-11-25", "")] = '{"tools":[]}'
    shortcut = LineShortcut(fast, emit=None, spawn=lambda *a: None, done=lambda _: None)  # type: ignore[arg-type]
    listing = '{"jsonrpc":"2.0","id":2,"method":"tools/list"}'
    assert shortcut.take(listing) is None and shortcut.era is None  # nothing fixed yet
    shortcut.saw_request("ping", 1, None)
    assert shortcut.era == "legacy"
    shortcut.saw_request("initialize", "i", {"protocolVersion": "2025-11-25"})
    assert shortcut.take(listing) is None  # not before the handshake's answer
    shortcut.answered("i", {"protocolVersion": "2025-11-25", "capabilities": {}})
    assert shortcut.legacy_version == "2025-11-25"
    assert shortcut.take(listing) == 2


LONE_SURROGATE_SERVER = r"""
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if "id" not in m:
        continue
    method = m["method"]
    if method == "initialize":
        result = {"protocolVersion": m["params"]["protocolVersion"], "serverInfo": {"name": "s", "version": "0"},
                  "capabilities": {"tools": {}, "prompts": {}}}
    elif method == "tools/list":
        result = {"tools": [{"name": "sur", "inputSchema": {"type": "object"}}]}
    elif method == "prompts/list":
        result = {"prompts": [{"name": "sur"}]}
    elif method in ("tools/call", "prompts/get"):  # valid JSON text that UTF-8 cannot carry raw
        body = '{"content":[{"type":"text","text":"a\\ud800b"}]}' if method == "tools/call" else (
            '{"messages":[{"role":"user","content":{"type":"text","text":"a\\ud800b"}}]}')
        sys.stdout.write('{"jsonrpc":"2.0","id":%s,"result":%s}\n' % (json.dumps(m["id"]), body))
        sys.stdout.flush()
        continue
    else:
        result = {}
    print(json.dumps({"jsonrpc": "2.0", "id": m["id"], "result": result}), flush=True)
"""


@pytest.mark.parametrize("share", ["0", "1"])
def test_a_lone_surrogate_from_a_downstream_is_passed_on_escaped(tmp_path, share):
    """Found by a hostile review: a downstream answer with `"\\ud800"` (valid JSON, not valid
    UTF-8 raw) ended the hub from the SDK's path and came out as "?" from the shortcut. Both
    now write it as the escape it came as, and the session goes on."""
    import json

    server = tmp_path / "surrogate_server.py"
    server.write_text(LONE_SURROGATE_SERVER)
    (tmp_path / "hub.toml").write_text(
        f'[plugins]\nenabled = ["proxy"]\n\n[servers.s]\ncommand = "{sys.executable}"\nargs = ["{server}"]\n'
    )
    env = hub_env(tmp_path, HUB_SHARE=share, XDG_RUNTIME_DIR=str(tmp_path / "run"))
    peer = StdioPeer(["--config", str(tmp_path / "hub.toml")], env, tmp_path)
    try:
        peer.initialize()
        wait_for(
            lambda: "s__sur" in {t["name"] for t in peer.request("tools/list")["result"]["tools"]},  # type: ignore[index]
            what="the proxied tools",
        )
        called = peer.request("tools/call", {"name": "s__sur", "arguments": {}})  # the shortcut
        assert called["result"]["content"][0]["text"] == "a\ud800b", called
        wait_for(lambda: "s__sur" in json.dumps(peer.request("prompts/list")), what="the proxied prompt")
        prompted = peer.request("prompts/get", {"name": "s__sur"})  # the SDK's path
        assert prompted["result"]["messages"][0]["content"]["text"] == "a\ud800b", prompted
        assert peer.request("ping")["result"] == {}  # type: ignore[index]
    finally:
        peer.close()
        stop_shared_hubs(env, tmp_path)


def test_a_forwarded_result_that_is_not_json_is_still_answered():
    """A plugin's ForwardedTool that returns something JSON cannot carry (a bug in the plugin):
    the request is answered with an error result naming the tool, not left unanswered."""
    import json

    from hub.plugin.items import ForwardedTool
    from hub.plugin.registry import Registry
    from hub.server.dispatch import Dispatch
    from hub.server.shortcuts import LineShortcut

    async def handler(arguments: dict, call: object) -> dict:
        return {"content": [], "blob": b"\x00"}

    registry = Registry()
    registry.add(ForwardedTool("p__bad", handler, "returns bytes", input_schema={"type": "object"}), "p")
    fast = Dispatch(registry, None)  # type: ignore[arg-type]
    lines: list[str] = []

    async def emit(text: str, answer_id: object = None) -> None:
        lines.append(text)

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            shortcut = LineShortcut(fast, emit, tg.start_soon, lambda _: None)
            shortcut.saw_request("initialize", 0, {})
            shortcut.answered(0, {"protocolVersion": "2025-11-25"})
            call = '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"p__bad","arguments":{}}}'
            assert shortcut.take(call) == 1

    anyio.run(main)
    (answer,) = [json.loads(line) for line in lines]
    assert answer["id"] == 1 and answer["result"]["isError"], answer
    assert "p__bad returned a result that is not JSON" in answer["result"]["content"][0]["text"]
