"""`batch_execute` against the same calls made directly to the downstream by an SDK client with
the same concurrency, same run (issue 3 target: at most 1.1x the direct client, warm).

The downstream is the test server's `sleep` tool at 20 ms, over stdio. Scenarios: 200 calls at
concurrency 10 and 1,000 at 50, each warm (connection open) and cold (the first call spawns the
downstream server; for the hub, the hub itself is already running). Medians of alternating runs.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
from mcp import Client, StdioServerParameters

ROOT = Path(__file__).resolve().parents[1]
DOWNSTREAM = ROOT / "tests" / "servers" / "downstream.py"
SCENARIOS = [(200, 10), (1000, 50)]
WARM_RUNS = 5
COLD_RUNS = 3
SLEEP = {"seconds": 0.02}


async def direct_calls(client: Client, n: int, concurrency: int) -> None:
    left = iter(range(n))

    async def worker() -> None:
        for _ in left:
            result = await client.call_tool("sleep", SLEEP)
            assert not result.is_error

    async with anyio.create_task_group() as tg:
        for _ in range(concurrency):
            tg.start_soon(worker)


async def via_hub(client: Client, n: int, concurrency: int) -> None:
    request = {"server": "d", "operations": [{"tool": "sleep", "arguments": SLEEP}] * n}
    request["options"] = {"maxConcurrent": concurrency}
    result = await client.call_tool("batch_execute", request)
    assert not result.is_error and result.structured_content["summary"]["ok"] == n, result


async def run() -> dict[str, Any]:
    direct = StdioServerParameters(command=sys.executable, args=[str(DOWNSTREAM)])
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "hub.toml").write_text(
            f'[servers.d]\ncommand = "{sys.executable}"\nargs = ["{DOWNSTREAM}"]\n'
            "[plugins.batchit]\nmax_operations = 1000\n"
        )
        env = {"PATH": os.environ["PATH"], "HUB_STATE_DIR": tmp, "HUB_LOG_LEVEL": "warning"}
        hub = StdioServerParameters(
            command=sys.executable,
            args=["-m", "hub", "--plugins", "batchit", "--config", f"{tmp}/hub.toml"],
            env=env,
        )
        scenarios = []
        for n, concurrency in SCENARIOS:
            times: dict[str, list[float]] = {
                "direct_warm": [],
                "hub_warm": [],
                "direct_cold": [],
                "hub_cold": [],
            }
            async with Client(direct, mode="legacy") as d_client, Client(hub, mode="legacy") as h_client:
                await direct_calls(d_client, concurrency, concurrency)  # warm-up
                await via_hub(h_client, concurrency, concurrency)  # starts the downstream too
                for _ in range(WARM_RUNS):  # alternate, to spread machine noise over both
                    started = time.perf_counter()
                    await direct_calls(d_client, n, concurrency)
                    times["direct_warm"].append(time.perf_counter() - started)
                    started = time.perf_counter()
                    await via_hub(h_client, n, concurrency)
                    times["hub_warm"].append(time.perf_counter() - started)
            for _ in range(COLD_RUNS):
                started = time.perf_counter()
                async with Client(direct, mode="legacy") as d_client:
                    await direct_calls(d_client, n, concurrency)
                times["direct_cold"].append(time.perf_counter() - started)
                async with Client(hub, mode="legacy") as h_client:
                    started = time.perf_counter()
                    await via_hub(h_client, n, concurrency)
                    times["hub_cold"].append(time.perf_counter() - started)
            medians = {k: statistics.median(v) for k, v in times.items()}
            scenarios.append(
                {
                    "operations": n,
                    "max_concurrent": concurrency,
                    **{f"{k}_s": round(v, 3) for k, v in medians.items()},
                    "ratio_warm": round(medians["hub_warm"] / medians["direct_warm"], 3),
                    "ratio_cold": round(medians["hub_cold"] / medians["direct_cold"], 3),
                }
            )
    return {
        "benchmark": "batch_execute",
        "tool_sleep_ms": 20,
        "scenarios": scenarios,
        "target_ratio_warm": 1.1,
    }


def main() -> dict[str, Any]:
    return anyio.run(run)


if __name__ == "__main__":
    import json

    print(json.dumps(main(), indent=2))
