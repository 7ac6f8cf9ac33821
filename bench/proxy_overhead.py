"""A tool call through the hub's proxy against the same call made directly to the downstream
server, same client, same run (issue 3 target: at most +1 ms median per call).

Both sides are real processes over stdio: client -> downstream, and client -> hub -> downstream.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import anyio
from mcp import Client, StdioServerParameters

ROOT = Path(__file__).resolve().parents[1]
DOWNSTREAM = ROOT / "tests" / "servers" / "downstream.py"
CALLS = 300


async def timed_calls(params: StdioServerParameters, tool: str) -> list[float]:
    async with Client(params, mode="legacy") as client:
        with anyio.fail_after(30):  # a server the hub has never seen is listed once it has started
            while tool not in {t.name for t in (await client.list_tools()).tools}:
                await anyio.sleep(0.05)
        for _ in range(20):  # warm-up (and, for the hub, start the downstream server)
            await client.call_tool(tool, {"text": "x"})
        times = []
        for _ in range(CALLS):
            started = time.perf_counter()
            await client.call_tool(tool, {"text": "x"})
            times.append(time.perf_counter() - started)
        return times


async def run() -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "hub.toml").write_text(
            f'[servers.d]\ncommand = "{sys.executable}"\nargs = ["{DOWNSTREAM}"]\n'
        )
        env = {"PATH": os.environ["PATH"], "HUB_STATE_DIR": tmp, "HUB_LOG_LEVEL": "warning"}
        direct = StdioServerParameters(command=sys.executable, args=[str(DOWNSTREAM)])
        hub = StdioServerParameters(
            command=sys.executable,
            args=["-m", "hub", "--plugins", "proxy", "--config", f"{tmp}/hub.toml"],
            env=env,
        )
        direct_times, hub_times = [], []
        for _ in range(2):  # alternate, to spread machine noise over both
            direct_times += await timed_calls(direct, "echo")
            hub_times += await timed_calls(hub, "d__echo")
    d, h = statistics.median(direct_times), statistics.median(hub_times)
    return {
        "benchmark": "proxy_overhead",
        "calls": len(direct_times),
        "direct_median_ms": round(d * 1000, 3),
        "hub_median_ms": round(h * 1000, 3),
        "added_ms": round((h - d) * 1000, 3),
        "ratio": round(h / d, 3),
        "target_added_ms": 1.0,
    }


def main() -> dict[str, object]:
    return anyio.run(run)


if __name__ == "__main__":
    import json

    print(json.dumps(main(), indent=2))
