"""`CallMetrics`: calls, errors and latency of each downstream server's tools, kept in memory by
the connection cache (what `hub dashboard` shows per tool).

Recording a call is a dict lookup, two additions and an append to a bounded deque (the latest
`WINDOW` latencies of the tool), so it costs next to nothing on the proxy's hot path; the
percentiles are computed only when asked (`snapshot`).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

__all__ = ["WINDOW", "CallMetrics", "percentile"]

WINDOW = 512  # latencies kept per tool for its percentiles


@dataclass
class _Tool:
    calls: int = 0
    errors: int = 0
    total_s: float = 0.0
    last_error: str | None = None
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=WINDOW))


def percentile(ordered: list[float], fraction: float) -> float:
    """The `fraction` percentile (nearest rank) of an ascending list that is not empty."""
    rank = max(0, min(len(ordered) - 1, math.ceil(fraction * len(ordered)) - 1))
    return ordered[rank]


class CallMetrics:
    """Per (server, tool): calls, errors, total and recent latencies."""

    def __init__(self) -> None:
        self._tools: dict[tuple[str, str], _Tool] = {}

    def record(self, server: str, tool: str, seconds: float, error: str | None = None) -> None:
        """One call of `tool` on `server` that took `seconds`; `error` when it failed (an error
        result or an exception), said in a few words."""
        entry = self._tools.get((server, tool))
        if entry is None:
            entry = self._tools[(server, tool)] = _Tool()
        entry.calls += 1
        entry.total_s += seconds
        entry.latencies.append(seconds)
        if error is not None:
            entry.errors += 1
            entry.last_error = error

    def snapshot(self) -> dict[str, dict[str, dict[str, Any]]]:
        """server -> tool -> calls, errors, last error, mean and p50/p90/p99 latency (ms, over
        the latest `WINDOW` calls)."""
        out: dict[str, dict[str, dict[str, Any]]] = {}
        for (server, tool), entry in sorted(self._tools.items()):
            ordered = sorted(entry.latencies)
            out.setdefault(server, {})[tool] = {
                "calls": entry.calls,
                "errors": entry.errors,
                "last_error": entry.last_error,
                "mean_ms": round(entry.total_s / entry.calls * 1000, 2) if entry.calls else None,
                **{
                    f"p{n}_ms": round(percentile(ordered, n / 100) * 1000, 2) if ordered else None
                    for n in (50, 90, 99)
                },
            }
        return out
