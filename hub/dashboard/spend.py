"""The spend chart's data: the budget's ledger (summed by UTC hour, plugin and session:
`hub.services.budget.Budget.spend_by_hour`) bucketed in local time for three ranges.

- ``day``: the last 24 hours, by hour;
- ``week``: the last 7 days, by day;
- ``month``: the last 30 days, by day.

Each range has its bucket starts (epoch seconds, what uPlot takes as x) and one series per
plugin and per session (``(no session)`` where the spend's session is not known), plus totals.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

__all__ = ["RANGES", "chart_data", "since"]

#: range -> (bucket count, bucket length in hours)
RANGES: dict[str, tuple[int, int]] = {"day": (24, 1), "week": (7, 24), "month": (30, 24)}
NO_SESSION = "(no session)"


def since(now: datetime) -> datetime:
    """The earliest moment any range shows (the month's first local day)."""
    return _starts(now, "month")[0]


def _starts(now: datetime, name: str) -> list[datetime]:
    count, hours = RANGES[name]
    local = now.astimezone()
    if hours == 1:
        last = local.replace(minute=0, second=0, microsecond=0)
    else:
        last = local.replace(hour=0, minute=0, second=0, microsecond=0)
    starts = []
    for back in range(count - 1, -1, -1):
        # Local calendar arithmetic (a day is a day across a DST change), then the zone again.
        moment = (last - timedelta(hours=back * hours)).replace(tzinfo=None)
        starts.append(moment.astimezone())
    return starts


def chart_data(rows: list[dict[str, Any]], now: datetime) -> dict[str, Any]:
    """``{range: {"x": [...], "by": {"plugin": {name: [...]}, "session": {...}}, "total": usd}}``."""
    hours = []
    for row in rows:
        moment = datetime.strptime(row["hour"], "%Y-%m-%dT%H").replace(tzinfo=UTC)
        hours.append((moment.astimezone(), row))
    out: dict[str, Any] = {}
    for name in RANGES:
        starts = _starts(now, name)
        by: dict[str, dict[str, list[float]]] = {"plugin": {}, "session": {}}
        total = 0.0
        for moment, row in hours:
            index = _bucket(starts, moment)
            if index is None:
                continue
            total += row["usd"]
            for group, key in (("plugin", row["plugin"]), ("session", row["session"] or NO_SESSION)):
                series = by[group].setdefault(key, [0.0] * len(starts))
                series[index] = round(series[index] + row["usd"], 6)
        out[name] = {"x": [int(s.timestamp()) for s in starts], "by": by, "total": round(total, 6)}
    return out


def _bucket(starts: list[datetime], moment: datetime) -> int | None:
    """The index of the bucket `moment` falls in, or None before the first."""
    if moment < starts[0]:
        return None
    index = 0
    for i, start in enumerate(starts):
        if moment >= start:
            index = i
    return index
