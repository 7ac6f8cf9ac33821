"""The hub's own errors, shared by every room: what a plugin raises to give the caller a clear
message instead of a traceback, and what the hub says when it cannot start."""

from __future__ import annotations

__all__ = [
    "BudgetExceeded",
    "ConfigError",
    "HubError",
    "ListenError",
    "PluginLoadError",
    "StoreError",
    "StoreLost",
    "StoreUnavailable",
    "ToolError",
]


class HubError(Exception):
    """Base class for the hub's own errors."""


class ToolError(HubError):
    """Raised by a tool handler: the caller gets an `isError` result with this message only.

    Use it for every failure a user can fix (unknown id, bad combination of arguments, ...);
    any other exception is reported too, but logged with its traceback as a bug.
    """


class BudgetExceeded(ToolError):
    """A reservation the shared budget cannot cover."""


class StoreError(ToolError):
    """The store (the state directory's SQLite database, or the PostgreSQL database of
    `state_url`) cannot be used: full, read-only, damaged, locked, unreachable, or gone. One sentence naming the file, the cause and the fix; a tool that needed the
    store gets it as its error, and a command that cannot open the store exits 2 with it."""


class StoreLost(StoreError):
    """The database file was deleted or replaced while this hub had it open: writing on would
    split the state in two (this hub's writes in a file no other hub sees), so it stops."""


class StoreUnavailable(StoreError):
    """The store cannot be reached for now: a PostgreSQL server that is down or restarting, the
    network cut, a failover under way. The hub keeps running, takes no new work that needs the
    store, and carries on by itself once it answers again."""


class ListenError(HubError):
    """The HTTP port cannot be listened on (in use, or not allowed); one sentence with the fix."""


class ConfigError(Exception):
    """A configuration problem the user must fix; the message names file, key and problem."""


class PluginLoadError(HubError):
    """A plugin the user asked for by name could not be loaded or started."""
