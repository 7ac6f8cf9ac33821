"""hub: one MCP server that hosts plugins.

Plugin authors import what they need from here::

    from hub import hookimpl, Tool, ToolCall, ToolError, Resource, ResourceTemplate, Prompt

The names are imported on first use, so `hub statusline` starts without loading the MCP SDK.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from hub.errors import BudgetExceeded, HubError, ToolError
    from hub.hookspecs import hookimpl
    from hub.registry import Prompt, PromptArgument, Resource, ResourceTemplate, Tool, ToolCall

_EXPORTS = {
    "BudgetExceeded": "hub.errors",
    "HubError": "hub.errors",
    "ToolError": "hub.errors",
    "hookimpl": "hub.hookspecs",
    "Prompt": "hub.registry",
    "PromptArgument": "hub.registry",
    "Resource": "hub.registry",
    "ResourceTemplate": "hub.registry",
    "Tool": "hub.registry",
    "ToolCall": "hub.registry",
}

__all__ = [
    "BudgetExceeded",
    "HubError",
    "Prompt",
    "PromptArgument",
    "Resource",
    "ResourceTemplate",
    "Tool",
    "ToolCall",
    "ToolError",
    "__version__",
    "hookimpl",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'hub' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
