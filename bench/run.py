"""Run the benchmarks: `python3 dev.py bench [NAME...]` (default: all). Prints JSON per benchmark
and writes bench/results/NAME.json. Every benchmark measures the hub and its baseline (or peer) in
paired rounds and gives verdicts on the median per-round ratio, with the load average at start and
end; a run on a machine too loaded to judge says so (bench/paired.py)."""

from __future__ import annotations

import importlib
import json
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = [
    "cold_start",
    "proxy_overhead",
    "http_call",
    "http_breakdown",
    "tools_list",
    "batch_execute",
    "batch_jobs",
    "pool",
    "claude_startup",
    "tokens",
    "many_hubs",
    "workers",
    "shared_hub",
    "sampling",
    "soak",
    "discovery",
]


def main(argv: list[str]) -> int:
    sys.path.insert(0, str(HERE))
    # The hub in-process (`--no-share`) unless a benchmark asks for the shared process behind the
    # stdio bridge (shared_hub and proxy_overhead measure both): each figure then means what its
    # target says. Benchmarks that build a hub's environment from scratch say HUB_SHARE=0 there.
    os.environ.setdefault("HUB_SHARE", "0")
    names = argv or BENCHMARKS
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}", file=sys.stderr)
        return 2
    (HERE / "results").mkdir(exist_ok=True)
    for name in names:
        result = importlib.import_module(name).main()
        text = json.dumps(result, indent=2)
        print(text)
        (HERE / "results" / f"{name}.json").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
