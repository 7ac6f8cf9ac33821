"""The dashboard's pure parts: the chart's buckets in local time, and HTML that escapes what a
snapshot holds (a panel's text, a server's error)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hub.dashboard.render import fragments, page
from hub.dashboard.spend import NO_SESSION, chart_data, since


def _hour(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H")


def test_spend_is_bucketed_by_range_plugin_and_session():
    now = datetime(2026, 12, 5, 15, 30).astimezone()
    rows = [
        {"hour": _hour(now), "plugin": "pool", "session": "claude abcdef12", "usd": 0.25},
        {"hour": _hour(now - timedelta(hours=1)), "plugin": "batch", "session": None, "usd": 0.5},
        {"hour": _hour(now - timedelta(days=3)), "plugin": "pool", "session": None, "usd": 1.0},
        {"hour": _hour(now - timedelta(days=40)), "plugin": "pool", "session": None, "usd": 9.0},
    ]
    chart = chart_data(rows, now)
    day, week, month = chart["day"], chart["week"], chart["month"]
    assert len(day["x"]) == 24 and len(week["x"]) == 7 and len(month["x"]) == 30
    assert day["total"] == 0.75 and week["total"] == 1.75 and month["total"] == 1.75
    assert day["by"]["plugin"]["pool"][-1] == 0.25 and day["by"]["plugin"]["batch"][-2] == 0.5
    assert day["by"]["session"] == {
        "claude abcdef12": [0.0] * 23 + [0.25],
        NO_SESSION: [0.0] * 22 + [0.5, 0.0],
    }
    assert week["by"]["plugin"]["pool"][-4] == 1.0 and week["by"]["plugin"]["pool"][-1] == 0.25
    assert since(now) <= now - timedelta(days=29)


def test_what_a_snapshot_holds_is_escaped():
    evil = "<img src=x onerror=alert(1)>"
    snapshot = {
        "target": {"instance": "abc"},
        "hub": {"pid": 1, "instance": "abc", "version": "0", "config": evil},
        "panels": [
            {
                "plugin": "p",
                "name": "n",
                "title": evil,
                "view": {
                    "facts": {evil: evil},
                    "tables": [
                        {
                            "title": None,
                            "columns": ["status", ""],
                            "rows": [
                                [evil, {"button": evil, "action": "a", "args": {"x": evil}, "confirm": evil}]
                            ],
                            "empty": "none",
                        }
                    ],
                    "note": evil,
                },
            }
        ],
        "servers": {
            "d": {"state": "died", "last_error": evil, "tools": {"t": {"calls": 1, "last_error": evil}}}
        },
        "sessions": [{"session": 1, "cwd": evil}],
    }
    parts = fragments(snapshot, None)
    html = page(parts, "/events")
    assert "<img" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html
