"""A proxied tool call over HTTP: the hub's streamable HTTP against `mcp-hub` (npm) on its own
transport, legacy SSE (the only one it serves), in paired rounds; the same call made directly to
the downstream over stdio is the floor.

Both proxies front the same downstream (`tests/peers/downstream.py`, `echo`) over stdio, warm.
Each round makes CALLS sequential calls per side (raw JSON-RPC on an SDK `ClientSession`, order
rotating per round); a side's figure is its median per call. mcp-hub is started offline (see
peers.py). Target (issue 15): the hub at most mcp-hub's time (ratio <= 1.0).
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import anyio
from clients import http_session, hub_over_http, raw, sse_session, stdio_session, wait_for_tools
from mcp import ClientSession
from paired import Rounds, summary
from peers import mcp_hub_server

ROOT = Path(__file__).resolve().parents[1]
DOWNSTREAM = ROOT / "tests" / "peers" / "downstream.py"
ROUNDS = int(os.environ.get("BENCH_ROUNDS", 8))
CALLS = int(os.environ.get("BENCH_CALLS", 60))


def caller(session: ClientSession, tool: str) -> Any:
    params = {"name": tool, "arguments": {"text": "x"}}

    async def measure() -> float:
        times = []
        for _ in range(CALLS):
            started = time.perf_counter()
            await raw(session, "tools/call", params)
            times.append(time.perf_counter() - started)
        return statistics.median(times)

    return measure


async def warm(session: ClientSession, tool: str) -> None:
    for _ in range(20):
        await raw(session, "tools/call", {"name": tool, "arguments": {"text": "x"}})


async def run() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp, "hub.toml")
        config.write_text(
            f'[servers.d]\ncommand = "{sys.executable}"\nargs = ["{DOWNSTREAM}"]\neager = true\n'
        )
        rounds = Rounds()
        async with AsyncExitStack() as stack:
            direct = await stdio_session(stack, sys.executable, [str(DOWNSTREAM)])
            url = await stack.enter_async_context(hub_over_http(config, Path(tmp), "proxy"))
            hub = await http_session(stack, url)
            names = await wait_for_tools(hub, 1)
            while "d__echo" not in names:
                await anyio.sleep(0.1)
                names = await wait_for_tools(hub, 1)
            sides = {"direct_stdio": caller(direct, "echo"), "hub_http": caller(hub, "d__echo")}
            await warm(direct, "echo")
            await warm(hub, "d__echo")
            peer_url = await stack.enter_async_context(
                mcp_hub_server(
                    {"d": {"command": sys.executable, "args": [str(DOWNSTREAM)]}}, Path(tmp, "mcp-hub")
                )
            )
            if peer_url is not None:
                peer = await sse_session(stack, peer_url)
                tool = next(n for n in await wait_for_tools(peer, 1) if n.endswith("echo"))
                await warm(peer, tool)
                sides["mcp_hub_sse"] = caller(peer, tool)
            await rounds.run(ROUNDS, sides)
    checks: dict[str, Any] = {}
    if "mcp_hub_sse" in rounds.values:
        checks["hub_http_vs_mcp_hub_sse"] = (rounds.ratio("hub_http", "mcp_hub_sse"), 1.0)
    return {
        "benchmark": "http_call",
        "calls_per_round": CALLS,
        "transports": "hub: streamable HTTP; mcp-hub: SSE (its only transport); floor: direct stdio",
        "ms": {name: rounds.side(name) for name in rounds.values},
        "hub_added_over_direct_ms": rounds.added("hub_http", "direct_stdio"),
        **summary(rounds, checks),
    }


def main() -> dict[str, Any]:
    return anyio.run(run)


if __name__ == "__main__":
    import json

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    print(json.dumps(main(), indent=2))
