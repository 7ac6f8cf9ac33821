"""Three hubs on one state directory, each doing its share of pool and batch work at once, against
one hub doing the same three shares alone (issue 10).

Each share: 20 pool tasks of 0.2 s (the fake CLI, 4 slots, one `pool_fan_out`) and one batch job of
5 requests sent to the fake Message Batches API and fetched (`batch_fetch` with `wait_s`). While the
work runs, `context_set` is called every 20 ms on the first hub: its latency is what a store write
waits for the write lock with three hubs busy on the store.

Reported, in interleaved rounds (one hub, then three): wall time per round and the paired
ratio (median, min-max), the result downloads per batch job (must be 1: one poller per job),
`context_set` latency p50/p95 alone and with three hubs, and the load average at start and end.
"""

from __future__ import annotations

import json
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
from mcp import Client, StdioServerParameters

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "peers"))
from fake_anthropic import FakeAnthropic  # noqa: E402

FAKE_CLAUDE = ROOT / "tests" / "peers" / "fake_claude.py"
ROUNDS = 3
TASKS = 20
TASK_S = 0.2
REQUESTS = 5


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def hub_params(work: Path, api: FakeAnthropic, name: str, grace: int) -> StdioServerParameters:
    toml = work / "hub.toml"
    toml.write_text(
        '[plugins]\nenabled = ["pool", "batch"]\n'
        f"[plugins.pool]\nclaude_command = '{sys.executable} -S {FAKE_CLAUDE}'\nslots = 4\n"
        f"[plugins.batch]\nresults_dir = '{work / 'results'}'\n"
        "poll_initial_s = 0.2\npoll_factor = 1.0\npoll_jitter = 0\n"
    )
    env = {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", str(work)),
        "HUB_STATE_DIR": str(work / "state"),
        "HUB_LOG_LEVEL": "warning",
        "HUB_SHARE": "0",  # three hub processes, as separate launches would be
        "ANTHROPIC_BASE_URL": api.url,
        "ANTHROPIC_API_KEY": api.api_key,
    }
    cwd = work / name
    cwd.mkdir(exist_ok=True)
    return StdioServerParameters(
        command=sys.executable,
        # Different --set values: these are three hubs, never one process.
        args=["-m", "hub", "--config", str(toml), "--set", f"plugins.pool.busy_grace_s={grace}"],
        env=env,
        cwd=str(cwd),
    )


async def share(client: Client, tag: str) -> str:
    """One hub's share of the work; returns its batch job's id."""
    job: dict[str, Any] = {}

    async def tasks() -> None:
        out = await client.call_tool(
            "pool_fan_out", {"prompts": [f"{tag} task {i} [delay={TASK_S}]" for i in range(TASKS)]}
        )
        assert out.structured_content and out.structured_content["completed"] == TASKS, out

    async def batch() -> None:
        sent = await client.call_tool(
            "send_to_batch", {"requests": [{"prompt": f"{tag} request {i}"} for i in range(REQUESTS)]}
        )
        assert sent.structured_content, sent
        job["id"] = sent.structured_content["job_id"]
        fetched = await client.call_tool("batch_fetch", {"job_id": job["id"], "wait_s": 120})
        assert fetched.structured_content and fetched.structured_content["state"] == "succeeded", fetched

    async with anyio.create_task_group() as tg:
        tg.start_soon(tasks)
        tg.start_soon(batch)
    return str(job["id"])


async def round_of(work: Path, api: FakeAnthropic, hubs: int, shares: int = 3) -> dict[str, Any]:
    """Start `hubs` hubs on one fresh state directory; time `shares` shares run at once, spread
    over them."""
    work.mkdir()
    latencies: list[float] = []
    jobs: list[str] = []
    done = anyio.Event()

    async def writer(client: Client) -> None:
        i = 0
        while not done.is_set():
            started = time.perf_counter()
            await client.call_tool("context_set", {"key": "tick", "value": str(i)})
            latencies.append(time.perf_counter() - started)
            i += 1
            await anyio.sleep(0.02)

    async with Client(hub_params(work, api, "h0", 100), mode="legacy") as first:
        others = [Client(hub_params(work, api, f"h{i}", 100 + i), mode="legacy") for i in range(1, hubs)]
        for other in others:
            await other.__aenter__()
        try:
            clients = [first, *others]
            for client in clients:  # warm: every hub up and its pool started
                await client.call_tool("pool_status", {})
            started = time.perf_counter()
            async with anyio.create_task_group() as tg:
                tg.start_soon(writer, first)

                async def run(client: Client, tag: str) -> None:
                    jobs.append(await share(client, tag))

                async with anyio.create_task_group() as work_group:
                    for n in range(shares):
                        work_group.start_soon(run, clients[n % len(clients)], f"s{n}")
                wall = time.perf_counter() - started
                done.set()
        finally:
            for other in reversed(others):
                await other.__aexit__(None, None, None)
    return {"wall_s": wall, "latencies": latencies, "jobs": jobs}


async def run() -> dict[str, Any]:
    load_start = load()
    alone, together, ratios = [], [], []
    lat_alone: list[float] = []
    lat_together: list[float] = []
    downloads: list[int] = []
    with FakeAnthropic(polls_to_end=2) as api, tempfile.TemporaryDirectory() as tmp:
        for r in range(ROUNDS):
            one = await round_of(Path(tmp) / f"alone{r}", api, 1)
            three = await round_of(Path(tmp) / f"three{r}", api, 3)
            alone.append(one["wall_s"])
            together.append(three["wall_s"])
            ratios.append(three["wall_s"] / one["wall_s"])
            lat_alone += one["latencies"]
            lat_together += three["latencies"]
            for job in one["jobs"] + three["jobs"]:  # the API batch of each job, from its state dir
                where = "three" if job in three["jobs"] else "alone"
                state = Path(tmp) / f"{where}{r}" / "state" / "hub.sqlite"
                with sqlite3.connect(state) as conn:
                    (remote,) = conn.execute(
                        "SELECT remote_id FROM batch_parts WHERE job_id = ?", (job,)
                    ).fetchone()
                downloads.append(api.downloads(remote))
    ms = 1000.0
    return {
        "benchmark": "many_hubs",
        "rounds": ROUNDS,
        "share": f"{TASKS} pool tasks of {TASK_S} s on 4 slots + 1 batch job of {REQUESTS} requests",
        "wall_s_one_hub_three_shares": [round(x, 3) for x in alone],
        "wall_s_three_hubs_at_once": [round(x, 3) for x in together],
        "ratio_three_hubs_vs_one": {
            "median": round(statistics.median(ratios), 3),
            "min": round(min(ratios), 3),
            "max": round(max(ratios), 3),
        },
        "result_downloads_per_job": sorted(set(downloads)),
        "context_set_ms": {
            "one_hub_p50": round(percentile(lat_alone, 0.5) * ms, 2),
            "one_hub_p95": round(percentile(lat_alone, 0.95) * ms, 2),
            "three_hubs_p50": round(percentile(lat_together, 0.5) * ms, 2),
            "three_hubs_p95": round(percentile(lat_together, 0.95) * ms, 2),
            "calls": len(lat_together),
        },
        "load_average": {"start": load_start, "end": load()},
        "target": "downloads per job == 1; three hubs close to one hub doing the same work",
    }


def main() -> dict[str, Any]:
    return anyio.run(run)


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
