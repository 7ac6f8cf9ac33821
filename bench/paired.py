"""Paired rounds, the way every benchmark here measures: hub and baseline alternate within each
round (the order flips every round), the figure per round is the paired ratio hub / baseline (or
the difference, for "+N ms" targets), and the verdict is on the median of those per-round figures,
with min-max beside it. Machine load moves both sides of a round together, so a paired median
holds where two separate medians would not.

The 1-minute load average is recorded at the start and the end. A run whose load, at either
end, is above `MAX_LOAD` (1.5 runnable tasks per core, `BENCH_MAX_LOAD` to change) says "too
loaded to judge" instead of passing or failing: past that point the two sides no longer get the
CPU evenly within a round.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import anyio

CORES = os.cpu_count() or 1
MAX_LOAD = float(os.environ.get("BENCH_MAX_LOAD", 1.5 * CORES))


def load() -> float:
    return round(os.getloadavg()[0], 2)


async def settle(limit_s: float = 120.0) -> float:
    """Wait, up to `limit_s`, for the load average to fall to half of `MAX_LOAD` (the seconds
    waited). For benchmarks whose setup starts many servers: those start-ups are done and idle
    once the rounds begin, but the 1-minute average would still count them against the run."""
    started = time.monotonic()
    while load() > MAX_LOAD / 2 and time.monotonic() - started < limit_s:
        await anyio.sleep(1)
    return round(time.monotonic() - started, 1)


def spread(values: Sequence[float], digits: int = 3) -> dict[str, float]:
    """median, min and max."""
    return {
        "median": round(statistics.median(values), digits),
        "min": round(min(values), digits),
        "max": round(max(values), digits),
    }


class Rounds:
    """Collects per-round values of named sides and gives paired figures and verdicts."""

    def __init__(self) -> None:
        self.load_start = load()
        self.values: dict[str, list[float]] = {}

    def add(self, side: str, value: float) -> None:
        self.values.setdefault(side, []).append(value)

    async def run(self, rounds: int, sides: dict[str, Callable[[], Awaitable[float]]]) -> None:
        """`rounds` rounds; each measures every side once, in an order that rotates per round."""
        names = list(sides)
        for i in range(rounds):
            order = names[i % len(names) :] + names[: i % len(names)]
            if i % 2:
                order.reverse()
            for name in order:
                self.add(name, await sides[name]())

    def run_sync(self, rounds: int, sides: dict[str, Callable[[], float]]) -> None:
        """`run` for blocking measurements."""
        names = list(sides)
        for i in range(rounds):
            order = names[i % len(names) :] + names[: i % len(names)]
            if i % 2:
                order.reverse()
            for name in order:
                self.add(name, sides[name]())

    def ratio(self, side: str, baseline: str) -> dict[str, float]:
        return spread([a / b for a, b in zip(self.values[side], self.values[baseline], strict=True)])

    def added(self, side: str, baseline: str, scale: float = 1000.0) -> dict[str, float]:
        """Per-round difference side - baseline (times `scale`: ms for seconds)."""
        return spread(
            [(a - b) * scale for a, b in zip(self.values[side], self.values[baseline], strict=True)]
        )

    def side(self, name: str, scale: float = 1000.0) -> dict[str, float]:
        return spread([v * scale for v in self.values[name]])

    def loads(self) -> dict[str, Any]:
        end = load()
        return {
            "load_start": self.load_start,
            "load_end": end,
            "cores": CORES,
            "max_load": MAX_LOAD,
            "too_loaded": max(self.load_start, end) > MAX_LOAD,
        }

    def verdict(self, figure: dict[str, float], target: float) -> str:
        """ "met" / "missed" on the paired median against `target` (at most), or "too loaded to judge"."""
        if max(self.load_start, load()) > MAX_LOAD:
            return f"too loaded to judge (load above {MAX_LOAD:g})"
        return "met" if figure["median"] <= target else "missed"


def summary(rounds: Rounds, checks: dict[str, tuple[dict[str, float], float]]) -> dict[str, Any]:
    """`checks`: name -> (paired figure, target); each with its verdict, plus the loads."""
    return {
        **{
            name: {**figure, "target": target, "verdict": rounds.verdict(figure, target)}
            for name, (figure, target) in checks.items()
        },
        **rounds.loads(),
    }
