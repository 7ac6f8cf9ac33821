"""Cold start of `hub` over stdio to a completed initialize + tools/list, against a minimal server
on the same SDK, in paired rounds (bench/paired.py: the order alternates, the verdict is on the
median per-round ratio, with load average). Also the hub's idle RSS.

Target (issue 2): at most 1.3x the baseline.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
from paired import Rounds, summary

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
        rounds = Rounds()
        rounds.run_sync(
            runs, {"baseline": lambda: one_run(base_cmd, env)[0], "hub": lambda: one_run(hub_cmd, env)[0]}
        )
        _, hub_rss = one_run(hub_cmd, env, measure_rss=True)
        _, base_rss = one_run(base_cmd, env, measure_rss=True)
    return {
        "benchmark": "cold_start",
        "rounds": runs,
        "seconds": {name: rounds.side(name, 1.0) for name in rounds.values},
        **summary(rounds, {"ratio": (rounds.ratio("hub", "baseline"), 1.3)}),
        "hub_idle_rss_mib": round((hub_rss or 0) / 2**20, 1),
        "baseline_idle_rss_mib": round((base_rss or 0) / 2**20, 1),
    }


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    print(json.dumps(main(), indent=2))
