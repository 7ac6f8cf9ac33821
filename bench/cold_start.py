"""Cold start of `hub` over stdio to a completed initialize + tools/list, against a minimal server
on the same SDK, measured in the same run (interleaved, median of N). Also the hub's idle RSS.

Target (issue 2): hub median <= 1.3x the baseline median.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "bench", "version": "0"},
    },
}
INITIALIZED = {"jsonrpc": "2.0", "method": "notifications/initialized"}
LIST = {"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {}}


def one_run(cmd: list[str], env: dict[str, str], measure_rss: bool = False) -> tuple[float, int | None]:
    started = time.perf_counter()
    proc = subprocess.Popen(
        cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True
    )
    assert proc.stdin and proc.stdout
    proc.stdin.write(json.dumps(INIT) + "\n" + json.dumps(INITIALIZED) + "\n" + json.dumps(LIST) + "\n")
    proc.stdin.flush()
    while True:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{cmd} exited early")
        if json.loads(line).get("id") == 2:
            break
    elapsed = time.perf_counter() - started
    rss = None
    if measure_rss:
        time.sleep(1.0)  # idle
        rss = psutil.Process(proc.pid).memory_info().rss
    proc.stdin.close()
    proc.wait(timeout=20)
    return elapsed, rss


def main(runs: int = 9) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "HUB_STATE_DIR": tmp, "HUB_LOG_LEVEL": "warning"}
        hub_cmd = [sys.executable, "-m", "hub"]
        base_cmd = [sys.executable, str(HERE / "minimal_server.py")]
        one_run(hub_cmd, env)  # warm the page cache and create the database
        one_run(base_cmd, env)
        hub_times, base_times = [], []
        for _ in range(runs):
            base_times.append(one_run(base_cmd, env)[0])
            hub_times.append(one_run(hub_cmd, env)[0])
        _, hub_rss = one_run(hub_cmd, env, measure_rss=True)
        _, base_rss = one_run(base_cmd, env, measure_rss=True)
    hub_median, base_median = statistics.median(hub_times), statistics.median(base_times)
    return {
        "benchmark": "cold_start",
        "runs": runs,
        "baseline_median_s": round(base_median, 3),
        "hub_median_s": round(hub_median, 3),
        "ratio": round(hub_median / base_median, 3),
        "target_ratio": 1.3,
        "hub_idle_rss_mib": round((hub_rss or 0) / 2**20, 1),
        "baseline_idle_rss_mib": round((base_rss or 0) / 2**20, 1),
    }


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
