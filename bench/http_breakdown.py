"""Where a proxied call over the hub's streamable HTTP spends its time: the same three requests
made three ways against one warm hub, so the differences name the layers.

- `tools/list` is answered by the hub's HTTP shortcut (`hub.server.shortcuts`) without the SDK
  server or any downstream: over a raw keep-alive socket it is the hub's HTTP handling alone
  (uvicorn, `HttpGuard`, the shortcut);
- `ping` goes through the SDK's server (session manager, dispatcher);
- `tools/call` of `d__echo` adds the hop to the downstream over stdio and the downstream's own
  work (`tests/peers/downstream.py`, the same server `http_call` calls directly as its floor).

Each is made CALLS times, sequentially, over a raw socket (no client cost), over httpx2 (the HTTP
client the SDK uses) and over the SDK's `ClientSession` on `streamable_http_client` (what
`http_call` times); medians in ms, ROUNDS rounds. No target: it explains `http_call`.
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import sys
import tempfile
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import anyio
import httpx2
from clients import http_session, hub_over_http, raw, stdio_session, wait_for_tools

ROOT = Path(__file__).resolve().parents[1]
DOWNSTREAM = ROOT / "tests" / "peers" / "downstream.py"
ROUNDS = int(os.environ.get("BENCH_ROUNDS", 3))
CALLS = int(os.environ.get("BENCH_CALLS", 200))
REQUESTS = {
    "tools_list": ("tools/list", {}),
    "ping": ("ping", {}),
    "tools_call": ("tools/call", {"name": "d__echo", "arguments": {"text": "x"}}),
}
HEADERS = {"accept": "application/json, text/event-stream", "content-type": "application/json"}


def _body(method: str, params: dict[str, Any]) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).encode()


def _raw_socket(port: int, session: str, body: bytes) -> float:
    """Median seconds per request on one keep-alive connection, reading each answer whole."""
    head = (
        f"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: {HEADERS['accept']}\r\n"
        f"Content-Type: application/json\r\nmcp-session-id: {session}\r\n"
        f"mcp-protocol-version: 2025-11-25\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    times = []
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for _ in range(CALLS):
            started = time.perf_counter()
            sock.sendall(head + body)
            data = b""
            while True:
                data += sock.recv(65536)
                top, _, rest = data.partition(b"\r\n\r\n")
                lengths = [line for line in top.split(b"\r\n") if line.lower().startswith(b"content-length")]
                if lengths and len(rest) >= int(lengths[0].split(b":")[1]):
                    break
            times.append(time.perf_counter() - started)
    return statistics.median(times)


async def _httpx(http: httpx2.AsyncClient, url: str, session: str, body: bytes) -> float:
    headers = {"mcp-session-id": session, "mcp-protocol-version": "2025-11-25"}
    times = []
    for _ in range(CALLS):
        started = time.perf_counter()
        (await http.post(url, content=body, headers=headers)).read()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


async def _sdk(session: Any, method: str, params: dict[str, Any]) -> float:
    times = []
    for _ in range(CALLS):
        started = time.perf_counter()
        await raw(session, method, params or None)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


async def _open_session(http: httpx2.AsyncClient, url: str) -> str:
    init = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "b", "version": "0"}}
    answer = await http.post(url, json={"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": init})
    session = answer.headers["mcp-session-id"]
    await http.post(
        url,
        json={"jsonrpc": "2.0", "method": "notifications/initialized"},
        headers={"mcp-session-id": session},
    )
    return session


async def run() -> dict[str, Any]:
    values: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp, "hub.toml")
        config.write_text(
            f'[servers.d]\ncommand = "{sys.executable}"\nargs = ["{DOWNSTREAM}"]\neager = true\n'
        )
        async with AsyncExitStack() as stack:
            direct = await stdio_session(stack, sys.executable, [str(DOWNSTREAM)])
            url = await stack.enter_async_context(hub_over_http(config, Path(tmp), "proxy"))
            sdk = await http_session(stack, url)
            while "d__echo" not in await wait_for_tools(sdk, 1):
                await anyio.sleep(0.1)
            port = int(url.rsplit(":", 1)[1].split("/")[0])
            http = await stack.enter_async_context(httpx2.AsyncClient(headers=HEADERS))
            session = await _open_session(http, url)
            echo = {"name": "echo", "arguments": {"text": "x"}}
            for _ in range(ROUNDS):
                for name, (method, params) in REQUESTS.items():
                    body = _body(method, params)
                    values.setdefault(f"{name}_raw_socket", []).append(_raw_socket(port, session, body))
                    values.setdefault(f"{name}_httpx2", []).append(await _httpx(http, url, session, body))
                    values.setdefault(f"{name}_sdk_client", []).append(await _sdk(sdk, method, params))
                values.setdefault("direct_stdio_echo_sdk_client", []).append(
                    await _sdk(direct, "tools/call", echo)
                )
    ms = {name: round(statistics.median(v) * 1000, 3) for name, v in values.items()}
    return {
        "benchmark": "http_breakdown",
        "calls": CALLS,
        "rounds": ROUNDS,
        "ms": ms,
        "layers_ms": {
            "hub_http_handling (tools_list, raw socket)": ms["tools_list_raw_socket"],
            "sdk_server_path (ping - tools_list, raw socket)": round(
                ms["ping_raw_socket"] - ms["tools_list_raw_socket"], 3
            ),
            "downstream_hop_and_its_work (tools_call - tools_list, raw socket)": round(
                ms["tools_call_raw_socket"] - ms["tools_list_raw_socket"], 3
            ),
            "httpx2_client (httpx2 - raw socket, tools_call)": round(
                ms["tools_call_httpx2"] - ms["tools_call_raw_socket"], 3
            ),
            "sdk_client_over_httpx2 (tools_call)": round(
                ms["tools_call_sdk_client"] - ms["tools_call_httpx2"], 3
            ),
        },
    }


def main() -> dict[str, Any]:
    return anyio.run(run)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    print(json.dumps(main(), indent=2))
