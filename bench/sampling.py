"""A sampling round trip through the hub against the same round trip direct, in both protocol
eras (report only: no target yet).

One `sample` call of the asking server (tests/peers/asking.py), which asks its client's model
once (an SDK `Client` whose sampling callback answers at once): direct, client -> server; and
through the hub in-process over stdio (`hub --no-share`, the proxy) -> server. Handshake era
(`mode="legacy"`): the server's request comes within the call, and the hub relays it as a request
in the client's call. 2026-07-28 (`mode="auto"`): the server answers `input_required` and is
called again with the answer; through the hub against a handshake-era server, the hub parks the
call and answers `input_required` itself (two client round trips); against a 2026-07-28 server
(`protocol = "auto"`), both. Sides are opened once and kept warm; each round makes CALLS calls
per side (order rotating per round), a side's figure is its median per call.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import anyio
import mcp.types as types
from mcp import Client, StdioServerParameters
from paired import Rounds, load, spread

ROOT = Path(__file__).resolve().parents[1]
ASKING = ROOT / "tests" / "peers" / "asking.py"
ROUNDS = int(os.environ.get("BENCH_ROUNDS", 8))
CALLS = int(os.environ.get("BENCH_CALLS", 50))


async def answer(ctx: Any, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
    return types.CreateMessageResult(
        role="assistant", model="m", content=types.TextContent(type="text", text="ok")
    )


async def open_side(stack: AsyncExitStack, params: StdioServerParameters, mode: str, tool: str) -> Any:
    client = await stack.enter_async_context(Client(params, mode=mode, sampling_callback=answer))  # type: ignore[arg-type]
    with anyio.fail_after(60):  # a server the hub has never seen is listed once it has started
        while tool not in {t.name for t in (await client.list_tools()).tools}:
            await anyio.sleep(0.05)
    for _ in range(10):  # warm-up (and, through the hub, start the downstream server)
        await call(client, tool)
    return client, tool


async def call(client: Client, tool: str) -> None:
    result = await client.call_tool(tool, {"prompt": "hi"})
    if result.is_error:
        raise RuntimeError(f"{tool} failed: {result.content}")


def side(client: Client, tool: str) -> Callable[[], Awaitable[float]]:
    async def measure() -> float:
        times = []
        for _ in range(CALLS):
            started = time.perf_counter()
            await call(client, tool)
            times.append(time.perf_counter() - started)
        return statistics.median(times)

    return measure


async def run() -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "hub.toml").write_text(
            f'[servers.a]\ncommand = "{sys.executable}"\nargs = ["{ASKING}"]\n'
            f'[servers.a26]\ncommand = "{sys.executable}"\nargs = ["{ASKING}"]\nprotocol = "auto"\n'
        )
        env = {"PATH": os.environ["PATH"], "HUB_STATE_DIR": tmp, "HUB_LOG_LEVEL": "warning", "HUB_SHARE": "0"}
        direct = StdioServerParameters(command=sys.executable, args=[str(ASKING)])
        hub = StdioServerParameters(
            command=sys.executable,
            args=["-m", "hub", "--plugins", "proxy", "--config", f"{tmp}/hub.toml"],
            env=env,
        )
        rounds = Rounds()
        async with AsyncExitStack() as stack:
            sides = {
                "direct_handshake": side(*await open_side(stack, direct, "legacy", "sample")),
                "hub_handshake": side(*await open_side(stack, hub, "legacy", "a__sample")),
                "direct_2026": side(*await open_side(stack, direct, "auto", "sample")),
                "hub_2026_to_handshake_server": side(*await open_side(stack, hub, "auto", "a__sample")),
                "hub_2026_to_2026_server": side(*await open_side(stack, hub, "auto", "a26__sample")),
            }
            await rounds.run(ROUNDS, sides)
    return {
        "benchmark": "sampling",
        "rounds": ROUNDS,
        "calls_per_round": CALLS,
        "per_call_ms": {name: rounds.side(name) for name in rounds.values},
        "hub_vs_direct_handshake": rounds.ratio("hub_handshake", "direct_handshake"),
        "hub_added_ms_handshake": rounds.added("hub_handshake", "direct_handshake"),
        "hub_vs_direct_2026_to_handshake_server": rounds.ratio("hub_2026_to_handshake_server", "direct_2026"),
        "hub_vs_direct_2026_to_2026_server": rounds.ratio("hub_2026_to_2026_server", "direct_2026"),
        "hub_added_ms_2026": spread(
            [
                (a - b) * 1000
                for a, b in zip(
                    rounds.values["hub_2026_to_2026_server"], rounds.values["direct_2026"], strict=True
                )
            ]
        ),
        **rounds.loads(),
        "load_now": load(),
    }


def main() -> dict[str, object]:
    return anyio.run(run)


if __name__ == "__main__":
    import json

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    print(json.dumps(main(), indent=2))
