"""Pool workers on one store (issue 30): `hub worker` processes take the tasks that a hub which
only queues (`[plugins.pool] slots = 0`) fans out. On PostgreSQL (a server from Debian's package,
run as the postgres user as the tests run it: tests/support/pgserver.py) and, for comparison, on
SQLite (workers of one machine sharing its state directory).

- Scaling: 64 tasks of 1 s (the fake CLI, `[delay=1]`) in one `pool_fan_out` on 1, 2 and 4
  workers of 4 slots each: wall time against the ideal, 64 / (4 x workers) s. Target at 4 workers:
  at most 1.15x the ideal (4 s). Here every worker shares this machine's cores, so at 4 workers
  16 CLIs start at once on them; the 4 workers are therefore also measured, in paired rounds,
  against one hub running 16 slots itself (the same CLIs at once on this machine, with no worker
  and no queue between processes): that ratio is what spreading the work over workers costs.
- Queue-to-start: for every task of those runs, from the moment it could start (queued, and the
  slot that took it free: the end of the task before it on that slot) to a slot taking it (its
  `started_at`): p50/p95, target p95 <= 200 ms. And the wake-up alone: one task at a time into
  idle workers, from queued to taken and to its CLI running (the fake's record), p50/p95.
- Cancel: `pool_cancel` from the hub of a task that a worker runs, until the worker confirms it
  ended (its process group killed): p50/max, the issue's "within a second".
- Store latency, PostgreSQL against SQLite in paired rounds: `context_set` (the context service's
  write, in-process) and a budget reservation (`Budget.reserve` then `release`, one transaction
  each holding the budget lock); and `context_set` through the hub (an MCP call) while the
  4-worker fan-out runs.

`BENCH_ROUNDS` (default 2) sets the rounds of the scaling runs; the load average is reported at
start and end (bench/paired.py), and the verdicts say "too loaded to judge" past 1.5 x cores.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio
from mcp import Client, StdioServerParameters

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "support"))
from paired import Rounds, spread, summary  # noqa: E402
from pgserver import PostgresServer  # noqa: E402

FAKE_CLAUDE = ROOT / "tests" / "peers" / "fake_claude.py"
TASKS = 64
TASK_S = 1.0
SLOTS = 4
WORKERS = (1, 2, 4)
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "2"))
PAIRED_ROUNDS = int(os.environ.get("BENCH_PAIRED_ROUNDS", "3"))
PROBES = 20
CANCELS = 5
STORE_OPS = 50
STORE_ROUNDS = 8


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def ms_summary(seconds: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(percentile(seconds, 0.5) * 1000, 1),
        "p95_ms": round(percentile(seconds, 0.95) * 1000, 1),
        "max_ms": round(max(seconds) * 1000, 1),
        "n": len(seconds),
    }


def when(text: str) -> float:
    """A store timestamp (ISO text, UTC, milliseconds) as epoch seconds."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


class Cluster:
    """A hub that only queues and `workers` `hub worker` processes on one fresh store; or, with
    `hub_slots`, a hub running that many slots itself and no worker (the baseline)."""

    def __init__(self, work: Path, url: str | None, workers: int, hub_slots: int = 0) -> None:
        self.work, self.url, self.count, self.hub_slots = work, url, workers, hub_slots
        work.mkdir(parents=True)
        self.log = work / "runs"
        self.log.mkdir()
        self.config = work / "hub.toml"
        self.config.write_text(
            '[plugins]\nenabled = ["pool"]\n'
            # Run by this Python directly, without site-packages: it needs only the standard library.
            f"[plugins.pool]\nclaude_command = '{sys.executable} -S {FAKE_CLAUDE}'\n"
            f"slots = {hub_slots}\nqueue = 'bench'\nmax_slots = 16\n"
        )
        self.env = {
            "PATH": os.environ["PATH"],
            "HOME": str(work),
            "HUB_STATE_DIR": str(work / "state"),
            "HUB_LOG_LEVEL": "warning",
            "HUB_SHARE": "0",
            "FAKE_CLAUDE_LOG": str(self.log),
            **({"HUB_STATE_URL": url} if url else {}),
        }
        self.procs: list[subprocess.Popen[bytes]] = []

    def start_workers(self) -> None:
        for i in range(self.count):
            cwd = self.work / f"w{i}"
            cwd.mkdir()
            self.procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "hub",
                        "worker",
                        "--slots",
                        str(SLOTS),
                        "--config",
                        str(self.config),
                    ],
                    env=self.env,
                    cwd=cwd,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=(cwd / "stderr.log").open("w"),
                )
            )

    def hub(self) -> Client:
        (self.work / "hub").mkdir(exist_ok=True)
        params = StdioServerParameters(
            command=sys.executable,
            args=["-m", "hub", "--config", str(self.config)],
            env=self.env,
            cwd=str(self.work / "hub"),
        )
        return Client(params, mode="legacy")

    async def ready(self, client: Client) -> None:
        """Until every worker's slots are listed by pool_status (their first heartbeat)."""
        with anyio.fail_after(60):
            while True:
                status = (await client.call_tool("pool_status", {})).structured_content or {}
                if self.hub_slots:
                    assert status["slot_count"] == self.hub_slots, status
                    return
                workers = [w for w in status.get("workers", []) if w["role"] == "worker"]
                if len(workers) == self.count and all(w["slots"] == SLOTS for w in workers):
                    return
                for proc in self.procs:
                    assert proc.poll() is None, (self.work / "w0" / "stderr.log").read_text()
                await anyio.sleep(0.2)

    def rows(self, ids: list[str]) -> list[dict[str, Any]]:
        from hub.services.backends import read_only_rows

        listed = ", ".join(f"'{i}'" for i in ids)
        return read_only_rows(
            self.work / "state",
            self.url,
            "SELECT id, owner, slot, created_at, started_at, ended_at, status FROM pool_tasks "
            f"WHERE id IN ({listed})",
            quiet=False,
        )

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def waits_for_a_slot(rows: list[dict[str, Any]]) -> list[float]:
    """For each task, from when it could start (queued, its slot free) to its slot taking it."""
    by_slot: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        by_slot.setdefault((row["owner"], row["slot"]), []).append(row)
    waits = []
    for tasks in by_slot.values():
        tasks.sort(key=lambda r: r["started_at"])
        previous_end = 0.0
        for row in tasks:
            could = max(when(row["created_at"]), previous_end)
            waits.append(max(0.0, when(row["started_at"]) - could))
            previous_end = when(row["ended_at"])
    return waits


async def fan_out(
    client: Client, tag: str, during: Callable[[], Awaitable[None]] | None = None
) -> tuple[float, list[str]]:
    """The wall time of one pool_fan_out of TASKS prompts, and its task ids."""
    prompts = [f"{tag} {i} [delay={TASK_S:g}]" for i in range(TASKS)]
    started = time.perf_counter()
    async with anyio.create_task_group() as tg:
        if during is not None:
            tg.start_soon(during)
        out = await client.call_tool("pool_fan_out", {"prompts": prompts})
        tg.cancel_scope.cancel()
    wall = time.perf_counter() - started
    content = out.structured_content or {}
    assert content.get("completed") == TASKS, str(out)[:2000]
    return wall, [r["task_id"] for r in content["results"]]


class Side:
    """One cluster's measurements over the rounds: fan-out wall times and the waits for a slot."""

    def __init__(self, cluster: Cluster, client: Client) -> None:
        self.cluster, self.client = cluster, client
        self.walls: list[float] = []
        self.waits: list[float] = []
        self.writes: list[float] = []

    async def writer(self) -> None:
        """context_set through the hub every 50 ms, while a fan-out runs."""
        i = 0
        while True:
            started = time.perf_counter()
            await self.client.call_tool("context_set", {"key": "tick", "value": str(i)})
            self.writes.append(time.perf_counter() - started)
            i += 1
            await anyio.sleep(0.05)

    async def round(self) -> float:
        wall, ids = await fan_out(self.client, f"r{len(self.walls)}", self.writer)
        self.walls.append(wall)
        self.waits += waits_for_a_slot(self.cluster.rows(ids))
        return wall

    def report(self, ideal: float) -> dict[str, Any]:
        return {
            "wall_s": [round(w, 3) for w in self.walls],
            "ratio_to_ideal": spread([w / ideal for w in self.walls]),
            "queue_to_start": ms_summary(self.waits),
            "context_set_through_the_hub_meanwhile": ms_summary(self.writes),
        }


@asynccontextmanager
async def opened(cluster: Cluster) -> AsyncIterator[Side]:
    cluster.start_workers()
    try:
        async with cluster.hub() as client:
            await cluster.ready(client)
            yield Side(cluster, client)
    finally:
        cluster.stop()


async def scaling(pg: PostgresServer, tmp: Path, workers: int) -> dict[str, Any]:
    """ROUNDS fan-outs on `workers` workers (PostgreSQL)."""
    ideal = TASKS * TASK_S / (SLOTS * workers)
    async with opened(Cluster(tmp / f"postgresql-{workers}", pg.new_url(), workers)) as side:
        for _ in range(ROUNDS):
            await side.round()
    return {"workers": workers, "ideal_s": ideal, **side.report(ideal)}


async def at_four(pg: PostgresServer, tmp: Path, backend: str) -> dict[str, Any]:
    """4 workers against the baseline, one hub running 16 slots itself (the same CLIs at once on
    this machine, with no worker and no queue between processes), in paired rounds; then the
    wake-up and cancel probes on the workers."""
    workers = max(WORKERS)
    ideal = TASKS * TASK_S / (SLOTS * workers)

    def url() -> str | None:
        return pg.new_url() if backend == "postgresql" else None

    rounds = Rounds()
    async with (
        opened(Cluster(tmp / f"{backend}-{workers}", url(), workers)) as spread_out,
        opened(Cluster(tmp / f"{backend}-one-hub", url(), 0, hub_slots=SLOTS * workers)) as one_hub,
    ):
        await rounds.run(PAIRED_ROUNDS, {"workers": spread_out.round, "one_hub": one_hub.round})
        extra = await probes(spread_out.cluster, spread_out.client)
    return {
        "workers": workers,
        "ideal_s": ideal,
        **spread_out.report(ideal),
        "one_hub_16_slots": one_hub.report(ideal),
        "ratio_to_one_hub_16_slots": rounds.ratio("workers", "one_hub"),
        **extra,
    }


async def probes(cluster: Cluster, client: Client) -> dict[str, Any]:
    """One task at a time into idle workers (the wake-up), then cancels of running tasks."""
    ids = []
    for i in range(PROBES):
        out = await client.call_tool("pool_run", {"prompt": f"probe {i}"})
        ids.append((out.structured_content or {})["task_id"])
    rows = {row["id"]: row for row in cluster.rows(ids)}
    cli_start = {}
    for record in cluster.log.glob("*.json"):
        data = json.loads(record.read_text())
        if data["stdin"].startswith("probe "):
            cli_start[data["stdin"].strip()] = record.stat().st_mtime
    taken = [when(rows[t]["started_at"]) - when(rows[t]["created_at"]) for t in ids]
    running = [cli_start[f"probe {i}"] - when(rows[t]["created_at"]) for i, t in enumerate(ids)]
    cancels = []
    for i in range(CANCELS):
        task = (await client.call_tool("pool_submit", {"prompt": f"hang {i} [hang]"})).structured_content
        assert task is not None
        with anyio.fail_after(30):
            while not any(
                json.loads(p.read_text())["stdin"].startswith(f"hang {i} ")
                for p in cluster.log.glob("*.json")
            ):
                await anyio.sleep(0.05)
        started = time.perf_counter()
        out = (await client.call_tool("pool_cancel", {"task_id": task["task_id"]})).structured_content
        cancels.append(time.perf_counter() - started)
        assert out is not None and out["cancelled"] is True, out
    return {
        "wake_queued_to_taken": ms_summary(taken),
        "wake_queued_to_cli_running": ms_summary(running),
        "cancel_to_ended": ms_summary(cancels),
    }


async def store_latency(pg: PostgresServer, tmp: Path) -> dict[str, Any]:
    """context_set and a budget reservation, in-process, SQLite against PostgreSQL, paired rounds
    (each side's figure per round: the median of STORE_OPS operations)."""
    from hub.services.budget import Budget
    from hub.services.context_store import ContextStore
    from hub.services.postgres_store import PostgresStore
    from hub.services.sqlite_store import SQLiteStore

    stores = {
        "sqlite": SQLiteStore(tmp / "latency" / "hub.sqlite"),
        "postgresql": PostgresStore(pg.new_url()),
    }
    context, budgets = {}, {}
    for name, store in stores.items():
        context[name] = ContextStore(store, project=tmp)
        await context[name].setup({})
        budgets[name] = Budget(store, 1_000_000.0, owner="bench")
        await budgets[name].setup()
    rounds = Rounds()

    def timed(op: Callable[[int], Awaitable[Any]]) -> Callable[[], Awaitable[float]]:
        async def measure() -> float:
            times = []
            for i in range(STORE_OPS):
                started = time.perf_counter()
                await op(i)
                times.append(time.perf_counter() - started)
            return statistics.median(times)

        return measure

    def write(name: str) -> Callable[[int], Awaitable[Any]]:
        return lambda i: context[name].set("tick", str(i))

    def reserve(name: str) -> Callable[[int], Awaitable[Any]]:
        async def op(i: int) -> None:
            reservation = await budgets[name].reserve("bench", 0.01, f"op {i}")
            await reservation.release()

        return op

    try:
        await rounds.run(
            STORE_ROUNDS,
            {
                "context_set_sqlite": timed(write("sqlite")),
                "context_set_postgresql": timed(write("postgresql")),
                "reserve_release_sqlite": timed(reserve("sqlite")),
                "reserve_release_postgresql": timed(reserve("postgresql")),
            },
        )
    finally:
        for store in stores.values():
            store.close()
    return {
        "ops_per_round": STORE_OPS,
        "rounds": STORE_ROUNDS,
        **{f"{side}_ms": rounds.side(side) for side in rounds.values},
        "context_set_postgresql_vs_sqlite": rounds.ratio("context_set_postgresql", "context_set_sqlite"),
        "reserve_release_postgresql_vs_sqlite": rounds.ratio(
            "reserve_release_postgresql", "reserve_release_sqlite"
        ),
        "target": "report",
    }


async def run() -> dict[str, Any]:
    rounds = Rounds()  # for the load average and the verdicts
    pg = PostgresServer()
    try:
        with tempfile.TemporaryDirectory() as folder:
            tmp = Path(folder)
            by_workers = {n: await scaling(pg, tmp, n) for n in WORKERS if n != max(WORKERS)}
            by_workers[max(WORKERS)] = await at_four(pg, tmp, "postgresql")
            sqlite_4 = await at_four(pg, tmp, "sqlite")
            latency = await store_latency(pg, tmp)
    finally:
        pg.close()
    four = by_workers[max(WORKERS)]
    p95 = {"median": four["queue_to_start"]["p95_ms"]}
    return {
        "benchmark": "workers",
        "tasks": TASKS,
        "task_s": TASK_S,
        "slots_per_worker": SLOTS,
        "rounds": {"1_and_2_workers": ROUNDS, "4_workers_paired_with_one_hub": PAIRED_ROUNDS},
        "postgresql": {str(n): r for n, r in sorted(by_workers.items())},
        "sqlite_4_workers": sqlite_4,
        "store_latency": latency,
        **summary(
            rounds,
            {
                "ratio_to_ideal_at_4_workers": (four["ratio_to_ideal"], 1.15),
                "ratio_to_one_hub_16_slots_at_4_workers": (four["ratio_to_one_hub_16_slots"], 1.15),
                "queue_to_start_p95_ms_at_4_workers": (p95, 200.0),
            },
        ),
    }


def main() -> dict[str, Any]:
    return anyio.run(run)


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
