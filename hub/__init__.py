"""hub: one MCP server that hosts plugins. This package's top level is the public plugin API.

A plugin imports everything it needs from here, and nothing from ``hub.<module>``::

    from hub import hookimpl, Plugin, PluginContext, RegisterTool, Tool, ToolCall, ToolError

- hooks: `hookimpl`, `Lifecycle` (what lifecycle hooks return), the typed register callables
  `RegisterTool`, `RegisterResource`, `RegisterPrompt`; `Plugin` (base class of a plugin object
  that owns its state) and `PluginContext` (what every hook receives as ``hub``);
- what a plugin registers: `Tool`, `ToolCall`, `Resource`, `ResourceTemplate`, `Prompt`,
  `PromptArgument`, `argument_problems`; on `hub dashboard`: `Panel`, `PanelView`, `PanelTable`,
  `PanelLink`, `PanelAction` (with the `hub_dashboard_panels` hook's `RegisterPanel`);
- what it raises or catches: `HubError`, `ToolError`, `BudgetExceeded`, `RegistrationError`,
  `ServerUnavailable`, `InvalidOutput`, `ConfigError`, `PluginLoadError`, `StoreError`,
  `StoreUnavailable`;
- forwarding downstream calls as they are: `ForwardedTool`, `RawResult`, `call_tool_raw`, and
  `failure_message` (the one sentence a caller is told when a downstream request fails);
- what it handles: `HubConfig`, `ServerConfig`, `expand_vars`, `Store`, `StoreConnection`, `PluginBudget`,
  `Reservation`, `ContextStore`, `ConnectionCache`, `Listings` and `ServerListing` (what each
  downstream server lists), `ListHold` (`PluginContext.hold_lists`), `Instance`, `HEARTBEAT_S`,
  `process_start_token`, `dies_with_parent`, `kill_group_left_behind`, `PluginTelemetry`
  (OpenTelemetry, `PluginContext.telemetry`), and the constants
  `CLAUDE_PREFIX`, `CONTEXT_MAX_KEY_LENGTH`, `CONTEXT_MAX_VALUE_LENGTH`.

docs/plugins.md describes each. The names are imported on first use, so `hub statusline` starts
without loading the MCP SDK.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from hub.client.cache import ConnectionCache
    from hub.client.errors import InvalidOutput, ServerUnavailable, failure_message
    from hub.client.listing import Listings, ServerListing
    from hub.client.raw import call_tool_raw
    from hub.config.expand import expand_vars
    from hub.config.settings import HubConfig, ServerConfig
    from hub.errors import (
        BudgetExceeded,
        ConfigError,
        HubError,
        PluginLoadError,
        StoreError,
        StoreUnavailable,
        ToolError,
    )
    from hub.plugin.base import Plugin
    from hub.plugin.context import PluginContext
    from hub.plugin.items import (
        CLAUDE_PREFIX,
        ForwardedTool,
        Prompt,
        PromptArgument,
        RawResult,
        RegistrationError,
        Resource,
        ResourceTemplate,
        Tool,
        ToolCall,
        argument_problems,
    )
    from hub.plugin.panels import Panel, PanelAction, PanelLink, PanelTable, PanelView, RegisterPanel
    from hub.plugin.registry import ListHold
    from hub.plugin.spec import Lifecycle, RegisterPrompt, RegisterResource, RegisterTool, hookimpl
    from hub.services.budget import PluginBudget, Reservation
    from hub.services.context_store import MAX_KEY_LENGTH as CONTEXT_MAX_KEY_LENGTH
    from hub.services.context_store import MAX_VALUE_LENGTH as CONTEXT_MAX_VALUE_LENGTH
    from hub.services.context_store import ContextStore
    from hub.services.instances import HEARTBEAT_S, Instance, process_start_token
    from hub.services.processes import dies_with_parent, kill_group_left_behind
    from hub.services.store import Connection as StoreConnection
    from hub.services.store import Store
    from hub.telemetry import PluginTelemetry

# Public name -> "module" or "module:attribute" (when the module calls it something else).
_EXPORTS = {
    "BudgetExceeded": "hub.errors",
    "HubError": "hub.errors",
    "ToolError": "hub.errors",
    "ConfigError": "hub.errors",
    "hookimpl": "hub.plugin.spec",
    "Lifecycle": "hub.plugin.spec",
    "RegisterTool": "hub.plugin.spec",
    "RegisterResource": "hub.plugin.spec",
    "RegisterPrompt": "hub.plugin.spec",
    "Plugin": "hub.plugin.base",
    "PluginContext": "hub.plugin.context",
    "PluginLoadError": "hub.errors",
    "CLAUDE_PREFIX": "hub.plugin.items",
    "Prompt": "hub.plugin.items",
    "PromptArgument": "hub.plugin.items",
    "RegistrationError": "hub.plugin.items",
    "Resource": "hub.plugin.items",
    "ResourceTemplate": "hub.plugin.items",
    "Tool": "hub.plugin.items",
    "ToolCall": "hub.plugin.items",
    "argument_problems": "hub.plugin.items",
    "ForwardedTool": "hub.plugin.items",
    "RawResult": "hub.plugin.items",
    "HubConfig": "hub.config.settings",
    "ServerConfig": "hub.config.settings",
    "expand_vars": "hub.config.expand",
    "ConnectionCache": "hub.client.cache",
    "Listings": "hub.client.listing",
    "ServerListing": "hub.client.listing",
    "ListHold": "hub.plugin.registry",
    "Panel": "hub.plugin.panels",
    "PanelAction": "hub.plugin.panels",
    "PanelLink": "hub.plugin.panels",
    "PanelTable": "hub.plugin.panels",
    "PanelView": "hub.plugin.panels",
    "RegisterPanel": "hub.plugin.panels",
    "PluginTelemetry": "hub.telemetry",
    "ServerUnavailable": "hub.client.errors",
    "InvalidOutput": "hub.client.errors",
    "failure_message": "hub.client.errors",
    "call_tool_raw": "hub.client.raw",
    "ContextStore": "hub.services.context_store",
    "CONTEXT_MAX_KEY_LENGTH": "hub.services.context_store:MAX_KEY_LENGTH",
    "CONTEXT_MAX_VALUE_LENGTH": "hub.services.context_store:MAX_VALUE_LENGTH",
    "PluginBudget": "hub.services.budget",
    "Reservation": "hub.services.budget",
    "Store": "hub.services.store",
    "StoreConnection": "hub.services.store:Connection",
    "StoreError": "hub.errors",
    "StoreUnavailable": "hub.errors",
    "HEARTBEAT_S": "hub.services.instances",
    "Instance": "hub.services.instances",
    "process_start_token": "hub.services.instances",
    "dies_with_parent": "hub.services.processes",
    "kill_group_left_behind": "hub.services.processes",
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
    "ListHold",
    "Listings",
    "Panel",
    "PanelAction",
    "PanelLink",
    "PanelTable",
    "PanelView",
    "Plugin",
    "PluginBudget",
    "PluginContext",
    "PluginLoadError",
    "PluginTelemetry",
    "Prompt",
    "PromptArgument",
    "RawResult",
    "RegisterPanel",
    "RegisterPrompt",
    "RegisterResource",
    "RegisterTool",
    "RegistrationError",
    "Reservation",
    "Resource",
    "ResourceTemplate",
    "ServerConfig",
    "ServerListing",
    "ServerUnavailable",
    "Store",
    "StoreConnection",
    "StoreError",
    "StoreUnavailable",
    "Tool",
    "ToolCall",
    "ToolError",
    "__version__",
    "argument_problems",
    "call_tool_raw",
    "dies_with_parent",
    "expand_vars",
    "failure_message",
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
