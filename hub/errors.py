"""The hub's own errors, shared by every room: what a plugin raises to give the caller a clear
message instead of a traceback, and what the hub says when it cannot start."""

from __future__ import annotations

__all__ = ["BudgetExceeded", "ConfigError", "HubError", "ListenError", "PluginLoadError", "ToolError"]


class HubError(Exception):
    """Base class for the hub's own errors."""


class ToolError(HubError):
    """Raised by a tool handler: the caller gets an `isError` result with this message only.

    Use it for every failure a user can fix (unknown id, bad combination of arguments, ...);
    any other exception is reported too, but logged with its traceback as a bug.
    """


class BudgetExceeded(ToolError):
    """A reservation the shared budget cannot cover."""


class ListenError(HubError):
    """The HTTP port cannot be listened on (in use, or not allowed); one sentence with the fix."""


class ConfigError(Exception):
    """A configuration problem the user must fix; the message names file, key and problem."""


class PluginLoadError(HubError):
    """A plugin the user asked for by name could not be loaded or started."""
