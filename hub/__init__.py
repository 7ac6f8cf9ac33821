"""hub: one MCP server that hosts plugins.

Plugin authors import what they need from here::

    from hub import hookimpl, Tool, ToolCall, ToolError, Resource, ResourceTemplate, Prompt
"""

from __future__ import annotations

__version__ = "0.1.0"

from hub.errors import BudgetExceeded, HubError, ToolError
from hub.hookspecs import hookimpl
from hub.registry import Prompt, PromptArgument, Resource, ResourceTemplate, Tool, ToolCall

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
