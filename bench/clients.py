"""Clients for the benchmarks: one SDK `ClientSession` per side, over stdio, streamable HTTP or
SSE, and raw requests on it (`raw`: the JSON-RPC result dict, no result model), so what is timed
is the server under test plus the same client transport cost on every side."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import anyio
from mcp import ClientSession, StdioServerParameters
from mcp.client.sse import sse_client
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client

ROOT = Path(__file__).resolve().parents[1]


async def stdio_session(
    stack: AsyncExitStack, command: str, args: list[str], env: dict[str, str] | None = None
) -> ClientSession:
    read, write = await stack.enter_async_context(
        stdio_client(StdioServerParameters(command=command, args=args, env=env), errlog=open(os.devnull, "w"))
    )
    session = await stack.enter_async_context(ClientSession(read, write))
    await session.initialize()
    return session


async def http_session(stack: AsyncExitStack, url: str) -> ClientSession:
    read, write = await stack.enter_async_context(streamable_http_client(url))
    session = await stack.enter_async_context(ClientSession(read, write))
    await session.initialize()
    return session


async def sse_session(stack: AsyncExitStack, url: str) -> ClientSession:
    read, write = await stack.enter_async_context(sse_client(url))
    session = await stack.enter_async_context(ClientSession(read, write))
    await session.initialize()
    return session


async def raw(session: ClientSession, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    """A request as plain JSON-RPC over the session: the result dict."""
    return await session._dispatcher.send_raw_request(method, params, {})  # type: ignore[no-any-return]


async def wait_for_tools(session: ClientSession, count: int) -> list[str]:
    """Tool names once at least `count` are listed (a proxy learns its servers' lists at start)."""
    with anyio.fail_after(120):
        while True:
            names = [t["name"] for t in (await raw(session, "tools/list"))["tools"]]
            if len(names) >= count:
                return names
            await anyio.sleep(0.1)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.asynccontextmanager
async def hub_over_http(config: Path, state_dir: Path, plugins: str) -> AsyncIterator[str]:
    """`hub serve --transport http` on a free loopback port; yields its URL once it answers."""
    import httpx2 as httpx

    port = free_port()
    env = {
        "PATH": os.environ["PATH"],
        "HUB_STATE_DIR": str(state_dir),
        "HUB_LOG_LEVEL": "warning",
        "HUB_SHARE": "0",
    }
    process = subprocess.Popen(  # noqa: ASYNC220 (a server for the whole run)
        [
            sys.executable,
            "-m",
            "hub",
            "--plugins",
            plugins,
            "--config",
            str(config),
            "serve",
            "--transport",
            "http",
            "--port",
            str(port),
        ],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=open(state_dir / "hub-http.log", "w"),
    )
    url = f"http://127.0.0.1:{port}/mcp"
    try:
        async with httpx.AsyncClient() as http:
            with anyio.fail_after(60):
                while True:
                    if process.poll() is not None:
                        raise RuntimeError(f"the hub exited: see {state_dir / 'hub-http.log'}")
                    try:
                        await http.get(url)
                        break
                    except httpx.HTTPError:
                        await anyio.sleep(0.1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
