"""MCP log levels, least severe first, and whether a message at one level reaches a client
that asked for another (both sides of the hub filter log messages)."""

from __future__ import annotations

from typing import Any

__all__ = ["LOG_LEVELS", "level_passes", "most_verbose"]

LOG_LEVELS = ("debug", "info", "notice", "warning", "error", "critical", "alert", "emergency")


def level_passes(level: Any, wanted: str | None) -> bool:
    """Whether a log message at `level` reaches a client that asked for `wanted` (None: all;
    a level the hub does not know passes)."""
    if wanted is None:
        return True
    try:
        return LOG_LEVELS.index(str(level)) >= LOG_LEVELS.index(wanted)
    except ValueError:
        return True


def most_verbose(levels: Any) -> str | None:
    """The least severe of `levels` (None when there is none)."""
    known = [level for level in levels if level in LOG_LEVELS]
    return min(known, key=LOG_LEVELS.index) if known else None
