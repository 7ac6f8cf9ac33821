"""`batch_execute` against the same calls made directly to the downstream by an SDK client with
the same concurrency, in paired rounds (bench/paired.py).

The downstream is the test server's `sleep` tool over stdio. Scenarios: 1,000 calls of 20 ms at
concurrency 50, warm (connections open) and cold (the first call spawns the downstream server; for
the hub, the hub itself is already running), and 5,000 calls of 0 ms at 50 (ops/s). Targets (issue
15): warm at most 1.0x the direct client, cold at most 1.05x; paired medians.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
from mcp import Client, StdioServerParameters
from paired import Rounds, summary

ROOT = Path(__file__).resolve().parents[1]
DOWNSTREAM = ROOT / "tests" / "peers" / "downstream.py"
# Its rounds swing ±15 % from one to the next: more of them for a steady median.
WARM_ROUNDS = int(os.environ.get("BENCH_ROUNDS", 12))
COLD_ROUNDS = max(2, WARM_ROUNDS // 2)
N, CONCURRENCY = 1000, 50
FAST_N = 5000


async def direct_calls(client: Client, n: int, concurrency: int, seconds: float) -> None:
    left = iter(range(n))
    arguments = {"seconds": seconds}

    async def worker() -> None:
        for _ in left:
            result = await client.call_tool("sleep", arguments)
            assert not result.is_error

    async with anyio.create_task_group() as tg:
        for _ in range(concurrency):
            tg.start_soon(worker)


async def via_hub(client: Client, n: int, concurrency: int, seconds: float) -> None:
    request: dict[str, Any] = {
        "server": "d",
        "operations": [{"tool": "sleep", "arguments": {"seconds": seconds}}] * n,
    }
    request["options"] = {"maxConcurrent": concurrency, "include": "errors"}
    result = await client.call_tool("batch_execute", request)
    assert not result.is_error and result.structured_content["summary"]["ok"] == n, result


async def run() -> dict[str, Any]:
    direct = StdioServerParameters(command=sys.executable, args=[str(DOWNSTREAM)])
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "hub.toml").write_text(
            f'[servers.d]\ncommand = "{sys.executable}"\nargs = ["{DOWNSTREAM}"]\n'
            f"[plugins.batchit]\nmax_operations = {FAST_N}\n"
        )
        env = {"PATH": os.environ["PATH"], "HUB_STATE_DIR": tmp, "HUB_LOG_LEVEL": "warning", "HUB_SHARE": "0"}
        hub = StdioServerParameters(
            command=sys.executable,
            args=["-m", "hub", "--plugins", "batchit", "--config", f"{tmp}/hub.toml"],
            env=env,
        )
        warm, fast, cold = Rounds(), Rounds(), Rounds()
        async with Client(direct, mode="legacy") as d_client, Client(hub, mode="legacy") as h_client:
            await direct_calls(d_client, CONCURRENCY, CONCURRENCY, 0.02)  # warm-up
            await via_hub(h_client, CONCURRENCY, CONCURRENCY, 0.02)  # starts the downstream too

            def timed(fn: Any, client: Client, n: int, seconds: float) -> Any:
                async def measure() -> float:
                    started = time.perf_counter()
                    await fn(client, n, CONCURRENCY, seconds)
                    return time.perf_counter() - started

                return measure

            await warm.run(
                WARM_ROUNDS,
                {"direct": timed(direct_calls, d_client, N, 0.02), "hub": timed(via_hub, h_client, N, 0.02)},
            )
            await fast.run(
                COLD_ROUNDS,
                {
                    "direct": timed(direct_calls, d_client, FAST_N, 0),
                    "hub": timed(via_hub, h_client, FAST_N, 0),
                },
            )

        async def direct_cold() -> float:
            started = time.perf_counter()
            async with Client(direct, mode="legacy") as client:
                await direct_calls(client, N, CONCURRENCY, 0.02)
            return time.perf_counter() - started

        async def hub_cold() -> float:
            async with Client(hub, mode="legacy") as client:
                started = time.perf_counter()
                await via_hub(client, N, CONCURRENCY, 0.02)
                return time.perf_counter() - started

        await cold.run(COLD_ROUNDS, {"direct": direct_cold, "hub": hub_cold})
    ops = {side: [FAST_N / t for t in fast.values[side]] for side in ("direct", "hub")}
    return {
        "benchmark": "batch_execute",
        "warm_1000x20ms_at_50": {
            "seconds": {side: warm.side(side, 1.0) for side in warm.values},
            **summary(warm, {"ratio": (warm.ratio("hub", "direct"), 1.0)}),
        },
        "cold_1000x20ms_at_50": {
            "seconds": {side: cold.side(side, 1.0) for side in cold.values},
            **summary(cold, {"ratio": (cold.ratio("hub", "direct"), 1.05)}),
        },
        "ops_per_s_5000x0ms_at_50": {
            **{
                side: {"median": round(sorted(v)[len(v) // 2]), "min": round(min(v)), "max": round(max(v))}
                for side, v in ops.items()
            },
            "hub_time_ratio": fast.ratio("hub", "direct"),
            **fast.loads(),
        },
    }


def main() -> dict[str, Any]:
    return anyio.run(run)


if __name__ == "__main__":
    import json

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    print(json.dumps(main(), indent=2))
