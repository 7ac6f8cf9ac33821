"""Streamable HTTP answers a request that needs no stream as plain JSON, and keeps the SSE stream
for requests that asked for progress (hub.server.http_replies), on a real uvicorn server."""

from __future__ import annotations

import contextlib
import math
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx2
import hub_proxy
import pytest
from hubtests import DOWNSTREAM
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from hub.host import Hub
from hub.server.http import serve_http
from hub.server.http_replies import wants_stream
from hub.testing import make_config, result_text

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@contextlib.asynccontextmanager
async def http_hub(tmp_path: Path, downstream: dict[str, Any]) -> AsyncIterator[tuple[Hub, str, Any]]:
    """A hub proxying `downstream` (as server `d`) over streamable HTTP on a free loopback port,
    its tools listed: (hub, url, a task group cancelled at the end)."""
    config = make_config(tmp_path, servers={"d": downstream})
    async with (
        Hub(config, extra_plugins={"proxy": hub_proxy.ProxyPlugin}) as hub,
        anyio.create_task_group() as tg,
    ):
        ports: list[int] = []
        ready = anyio.Event()

        def on_ready(port: int) -> None:
            ports.append(port)
            ready.set()

        tg.start_soon(
            lambda: serve_http(hub.server, host="127.0.0.1", port=0, path="/mcp", token=None, ready=on_ready)
        )
        with anyio.fail_after(30):
            await ready.wait()
            while "d__count" not in hub.registry.tools:
                await anyio.sleep(0.02)
        yield hub, f"http://127.0.0.1:{ports[0]}/mcp", tg
        tg.cancel_scope.cancel()


def test_which_requests_get_a_stream():
    assert not wants_stream({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "x"}})
    assert wants_stream(
        {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"_meta": {"progressToken": 1}}}
    )
    assert wants_stream({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}})
    assert wants_stream({"jsonrpc": "2.0", "method": "notifications/initialized"})
    assert wants_stream([{"jsonrpc": "2.0", "id": 1, "method": "ping"}])


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_plain_calls_are_json_and_progress_still_streams(tmp_path, mode):
    markers = tmp_path / "markers"
    markers.mkdir()
    downstream = {
        "command": sys.executable,
        "args": [str(DOWNSTREAM)],
        "env": {"DOWNSTREAM_MARKER_DIR": str(markers)},
    }
    async with http_hub(tmp_path, downstream) as (hub, url, _):
        types_seen: list[str] = []

        async def record(response: httpx2.Response) -> None:
            if response.request.method == "POST":
                types_seen.append(response.headers.get("content-type", ""))

        async with httpx2.AsyncClient(timeout=30, event_hooks={"response": [record]}) as http:
            async with Client(streamable_http_client(url, http_client=http), mode=mode) as client:
                first = await client.list_tools()
                hits = hub.server.dispatch.hits
                again = await client.list_tools()  # from the cache (as text, for the shortcut)
                assert hub.server.dispatch.hits == hits + 1
                # Handshake-era: answered by the HTTP shortcut, from the answer kept as text.
                assert ("tools/list" in {key[0] for key in hub.server.dispatch.texts}) == (mode == "legacy")
                assert [t.model_dump() for t in again.tools] == [t.model_dump() for t in first.tools]
                types_seen.clear()
                before = hub.server.dispatch.shortcut_calls
                assert result_text(await client.call_tool("d__echo", {"text": "hi"})) == "hi"
                assert types_seen[-1] == "application/json"
                # Handshake-era sessions get forwarded calls from the HTTP shortcut; 2026-era
                # requests, checked header by header by the SDK, take its path.
                assert hub.server.dispatch.shortcut_calls == before + (mode == "legacy")
                failed = await client.call_tool("d__fail", {"message": "no luck"})
                assert failed.is_error and "Error executing tool fail" in result_text(failed)
                bad = await client.call_tool("d__add", {"a": "one", "b": 2})
                assert bad.is_error and "invalid arguments for d__add: a:" in result_text(bad)
                seen: list[float] = []

                async def on_progress(progress: float, total: float | None, message: str | None) -> None:
                    seen.append(progress)

                types_seen.clear()
                result = await client.call_tool("d__count", {"to": 3}, progress_callback=on_progress)
                assert not result.is_error and seen == [1, 2, 3]
                assert types_seen[0].startswith("text/event-stream")

                with anyio.move_on_after(1):  # the client gives up: the downstream hears of it
                    await client.call_tool("d__sleep", {"seconds": 30, "tag": mode})
                with anyio.fail_after(10):
                    while not (markers / f"cancelled-{mode}").exists():
                        await anyio.sleep(0.05)
                assert result_text(await client.call_tool("d__echo", {"text": "after"})) == "after"


async def test_the_http_shortcut_keeps_the_sdks_session_rules(tmp_path):
    """Cached list answers and forwarded calls count as requests for the session's idle time, as
    the SDK counts the ones it serves: a session that only polls `tools/list` is not idle. A
    forwarded call cancelled by notification gets the SDK's answer for it (-32800), and so does
    one still running when its session is ended (DELETE)."""
    downstream = {"command": sys.executable, "args": [str(DOWNSTREAM)]}
    async with http_hub(tmp_path, downstream) as (hub, url, tg):
        headers = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
        # Raw requests, as a client that opens no GET stream sends them (an open stream would
        # hold the session anyway).
        async with httpx2.AsyncClient(timeout=30) as http:
            init = {
                "protocolVersion": "2025-11-25",
                "capabilities": {},
                "clientInfo": {"name": "t", "version": "0"},
            }
            opened = await http.post(
                url, json={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": init}, headers=headers
            )
            assert opened.status_code == 200, opened.text
            headers |= {
                "mcp-session-id": opened.headers["mcp-session-id"],
                "mcp-protocol-version": "2025-11-25",
            }
            await http.post(
                url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=headers
            )
            (transport,) = hub.server.mcp.session_manager._server_instances.values()

            async def request(n: int, method: str, params: dict) -> tuple[dict, float]:
                answer = await http.post(
                    url, json={"jsonrpc": "2.0", "id": n, "method": method, "params": params}, headers=headers
                )
                assert answer.status_code == 200, answer.text
                return answer.json(), transport.idle_scope.deadline

            await request(2, "tools/list", {})  # the SDK answers; FastPath keeps the answer
            hits = hub.server.dispatch.hits
            (listed, after_list), (_, again) = [await request(n, "tools/list", {}) for n in (3, 4)]
            assert hub.server.dispatch.hits == hits + 2 and "d__echo" in str(listed)
            called, after_call = await request(
                5, "tools/call", {"name": "d__echo", "arguments": {"text": "hi"}}
            )
            assert called["result"]["content"][0]["text"] == "hi"
            # Each answer started the idle time again, and none is left counted as in flight.
            assert after_list < again < after_call < math.inf, (after_list, again, after_call)
            assert transport._requests_in_flight == 0

            # A call cancelled by notification: its POST is answered as the SDK answers one.
            answers: list[dict] = []

            async def sleeping() -> None:
                answers.append(
                    (await request(6, "tools/call", {"name": "d__sleep", "arguments": {"seconds": 30}}))[0]
                )

            tg.start_soon(sleeping)
            with anyio.fail_after(30):
                while not hub.server.dispatch.shortcut_calls or transport._requests_in_flight == 0:
                    await anyio.sleep(0.02)
                cancel = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 6}}
                assert (await http.post(url, json=cancel, headers=headers)).status_code == 202
                while not answers:
                    await anyio.sleep(0.02)
            assert answers == [
                {"jsonrpc": "2.0", "id": 6, "error": {"code": -32800, "message": "Request cancelled"}}
            ]

            # Ending the session (DELETE) ends the calls it has running, as the SDK ends its own.
            answers.clear()

            async def sleeping_more() -> None:
                answers.append(
                    (await request(7, "tools/call", {"name": "d__sleep", "arguments": {"seconds": 30}}))[0]
                )

            tg.start_soon(sleeping_more)
            with anyio.fail_after(20):
                while transport._requests_in_flight == 0:
                    await anyio.sleep(0.02)
                assert (await http.delete(url, headers=headers)).status_code == 200
                while not answers:
                    await anyio.sleep(0.02)
            assert answers[0]["error"]["code"] == -32800
