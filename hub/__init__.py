"""hub: one MCP server that hosts plugins. This package's top level is the public plugin API.

A plugin imports everything it needs from here, and nothing from ``hub.<module>``::

    from hub import hookimpl, Plugin, PluginContext, RegisterTool, Tool, ToolCall, ToolError

- hooks: `hookimpl`, `Lifecycle` (what lifecycle hooks return), the typed register callables
  `RegisterTool`, `RegisterResource`, `RegisterPrompt`; `Plugin` (base class of a plugin object
  that owns its state) and `PluginContext` (what every hook receives as ``hub``);
- what a plugin registers: `Tool`, `ToolCall`, `Resource`, `ResourceTemplate`, `Prompt`,
  `PromptArgument`, `argument_problems`;
- what it raises or catches: `HubError`, `ToolError`, `BudgetExceeded`, `RegistrationError`,
  `ServerUnavailable`, `InvalidOutput`, `ConfigError`, `PluginLoadError`;
- forwarding downstream calls as they are: `ForwardedTool`, `RawResult`, `call_tool_raw`;
- what it handles: `HubConfig`, `ServerConfig`, `expand_vars`, `Store`, `PluginBudget`,
  `Reservation`, `ContextStore`, `ConnectionCache`, `Instance`, `HEARTBEAT_S`,
  `process_start_token`, `dies_with_parent`, `kill_group_left_behind`, and the constants
  `CLAUDE_PREFIX`, `CONTEXT_MAX_KEY_LENGTH`, `CONTEXT_MAX_VALUE_LENGTH`.

docs/plugins.md describes each. The names are imported on first use, so `hub statusline` starts
without loading the MCP SDK.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from hub.budget import PluginBudget, Reservation
    from hub.config import ConfigError, HubConfig, ServerConfig, expand_vars
    from hub.connections import ConnectionCache, InvalidOutput, ServerUnavailable, call_tool_raw
    from hub.context import MAX_KEY_LENGTH as CONTEXT_MAX_KEY_LENGTH
    from hub.context import MAX_VALUE_LENGTH as CONTEXT_MAX_VALUE_LENGTH
    from hub.context import ContextStore
    from hub.errors import BudgetExceeded, HubError, ToolError
    from hub.fastpath import ForwardedTool, RawResult
    from hub.hookspecs import Lifecycle, RegisterPrompt, RegisterResource, RegisterTool, hookimpl
    from hub.host import PluginContext
    from hub.instances import HEARTBEAT_S, Instance, process_start_token
    from hub.pluginbase import Plugin
    from hub.plugins import PluginLoadError
    from hub.processes import dies_with_parent, kill_group_left_behind
    from hub.registry import (
        CLAUDE_PREFIX,
        Prompt,
        PromptArgument,
        RegistrationError,
        Resource,
        ResourceTemplate,
        Tool,
        ToolCall,
        argument_problems,
    )
    from hub.store import Store

# Public name -> "module" or "module:attribute" (when the module calls it something else).
_EXPORTS = {
    "BudgetExceeded": "hub.errors",
    "HubError": "hub.errors",
    "ToolError": "hub.errors",
    "hookimpl": "hub.hookspecs",
    "Lifecycle": "hub.hookspecs",
    "RegisterTool": "hub.hookspecs",
    "RegisterResource": "hub.hookspecs",
    "RegisterPrompt": "hub.hookspecs",
    "Plugin": "hub.pluginbase",
    "PluginContext": "hub.host",
    "PluginLoadError": "hub.plugins",
    "CLAUDE_PREFIX": "hub.registry",
    "Prompt": "hub.registry",
    "PromptArgument": "hub.registry",
    "RegistrationError": "hub.registry",
    "Resource": "hub.registry",
    "ResourceTemplate": "hub.registry",
    "Tool": "hub.registry",
    "ToolCall": "hub.registry",
    "argument_problems": "hub.registry",
    "ConfigError": "hub.config",
    "HubConfig": "hub.config",
    "ServerConfig": "hub.config",
    "expand_vars": "hub.config",
    "ConnectionCache": "hub.connections",
    "ServerUnavailable": "hub.connections",
    "InvalidOutput": "hub.connections",
    "call_tool_raw": "hub.connections",
    "ForwardedTool": "hub.fastpath",
    "RawResult": "hub.fastpath",
    "ContextStore": "hub.context",
    "CONTEXT_MAX_KEY_LENGTH": "hub.context:MAX_KEY_LENGTH",
    "CONTEXT_MAX_VALUE_LENGTH": "hub.context:MAX_VALUE_LENGTH",
    "PluginBudget": "hub.budget",
    "Reservation": "hub.budget",
    "Store": "hub.store",
    "HEARTBEAT_S": "hub.instances",
    "Instance": "hub.instances",
    "process_start_token": "hub.instances",
    "dies_with_parent": "hub.processes",
    "kill_group_left_behind": "hub.processes",
}

__all__ = [
    "CLAUDE_PREFIX",
    "CONTEXT_MAX_KEY_LENGTH",
    "CONTEXT_MAX_VALUE_LENGTH",
    "HEARTBEAT_S",
    "BudgetExceeded",
    "ConfigError",
    "ConnectionCache",
    "ContextStore",
    "ForwardedTool",
    "HubConfig",
    "HubError",
    "Instance",
    "InvalidOutput",
    "Lifecycle",
    "Plugin",
    "PluginBudget",
    "PluginContext",
    "PluginLoadError",
    "Prompt",
    "PromptArgument",
    "RawResult",
    "RegisterPrompt",
    "RegisterResource",
    "RegisterTool",
    "RegistrationError",
    "Reservation",
    "Resource",
    "ResourceTemplate",
    "ServerConfig",
    "ServerUnavailable",
    "Store",
    "Tool",
    "ToolCall",
    "ToolError",
    "__version__",
    "argument_problems",
    "call_tool_raw",
    "dies_with_parent",
    "expand_vars",
    "hookimpl",
    "kill_group_left_behind",
    "process_start_token",
]


def __getattr__(name: str) -> Any:
    target = _EXPORTS.get(name)
    if target is None:
        raise AttributeError(f"module 'hub' has no attribute {name!r}")
    import importlib

    module, _, attribute = target.partition(":")
    value = getattr(importlib.import_module(module), attribute or name)
    globals()[name] = value
    return value
