"""A 10,000-request and a 50,000-request batch job, submitted and fetched through the hub (stdio)
from the fake Message Batches API on loopback: time, and the hub process's peak memory (VmHWM)
against its own idle peak, in paired rounds (bench/paired.py: 10k and 50k alternate; the verdict
is on the median per-round ratio of peaks, with load average; issue 4 target: at most 1.5x).

Requests go in as a JSONL file (`requests_path`), as a job of that size would.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import psutil
from mcp import Client, StdioServerParameters

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "peers"))
from fake_anthropic import FakeAnthropic  # noqa: E402
from paired import Rounds, summary  # noqa: E402

SIZES = [10_000, 50_000]
ROUNDS = int(os.environ.get("BENCH_ROUNDS", 2))


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return psutil.Process(pid).memory_info().rss / 2**20


def hub_pid() -> int:
    for child in psutil.Process().children(recursive=True):
        if "hub" in " ".join(child.cmdline()[1:3]):
            return child.pid
    raise RuntimeError("hub process not found")


async def one(size: int, api: FakeAnthropic, tmp: Path, round_no: int = 0) -> dict[str, Any]:
    work = tmp / f"{size}-{round_no}"
    work.mkdir()
    requests = work / "requests.jsonl"
    with requests.open("w") as f:
        for i in range(size):
            f.write(json.dumps({"custom_id": f"q{i}", "prompt": f"Summarise item {i} in one line."}) + "\n")
    (work / "hub.toml").write_text(
        '[plugins]\nenabled = ["batch"]\n'
        "[plugins.batch]\n"
        f'api_key = "{api.api_key}"\nbase_url = "{api.url}"\n'
        f'results_dir = "{work / "results"}"\npacket_roots = ["{work}"]\n'
        "poll_initial_s = 0.05\npoll_factor = 1.0\npoll_jitter = 0\n"
    )
    env = {
        "PATH": os.environ["PATH"],
        "HUB_STATE_DIR": str(work / "state"),
        "HUB_LOG_LEVEL": "warning",
        "HUB_SHARE": "0",
    }
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "hub", "--config", str(work / "hub.toml")], env=env
    )
    async with Client(params, mode="legacy") as client:
        pid = hub_pid()
        idle = peak_rss_mib(pid)
        started = time.perf_counter()
        sent = await client.call_tool("send_to_batch", {"requests_path": str(requests)})
        assert not sent.is_error, sent
        submitted = time.perf_counter() - started
        job_id = sent.structured_content["job_id"]
        fetched = await client.call_tool(
            "batch_fetch", {"job_id": job_id, "wait_s": 600}, read_timeout_seconds=900
        )
        assert not fetched.is_error, fetched
        assert fetched.structured_content["request_counts"]["succeeded"] == size, fetched.structured_content
        total = time.perf_counter() - started
        peak = peak_rss_mib(pid)
    lines = sum(1 for _ in (work / "results" / f"{job_id}.raw.jsonl").open())
    assert lines == size
    return {
        "requests": size,
        "submit_s": round(submitted, 2),
        "submit_and_fetch_s": round(total, 2),
        "idle_peak_mib": round(idle, 1),
        "peak_mib": round(peak, 1),
        "growth_mib": round(peak - idle, 1),
    }


async def run() -> dict[str, Any]:
    rounds = Rounds()
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp, FakeAnthropic(polls_to_end=2) as api:
        counter = iter(range(10**6))

        def job(size: int) -> Any:
            async def measure() -> float:
                runs.append(await one(size, api, Path(tmp), next(counter)))
                return float(runs[-1]["peak_mib"])

            return measure

        await rounds.run(ROUNDS, {"10k": job(SIZES[0]), "50k": job(SIZES[1])})
    return {
        "benchmark": "batch_jobs",
        "runs": runs,
        "peak_mib": {name: rounds.side(name, 1.0) for name in rounds.values},
        **summary(rounds, {"peak_ratio_50k_over_10k": (rounds.ratio("50k", "10k"), 1.5)}),
    }


def main() -> dict[str, Any]:
    return anyio.run(run)


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
