"""What the proxy relays besides calls and lists, each to the downstream server that owns it.

- **Questions and log messages of a call** (sampling, elicitation, roots; `notifications/message`):
  a proxied call passes its `ToolCall` to the connection cache as the caller, and the hub
  routes what the server asks during the call to that client, in its era (`hub.ToolCall`).
- **Completion**: a mounted prompt's or resource template's `complete` asks its server
  (`completion/complete` with the server's own prompt name or template).
- **Resource subscriptions**: a mounted resource's `subscribe` / `unsubscribe` has the connection
  cache follow the URI on its server (`watch_resource`); the server's
  `notifications/resources/updated` for a URI the proxy serves reaches the hub's subscribers
  (`PluginContext.resource_updated`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import mcp.types as types
from mcp.shared.exceptions import MCPError

from hub import HubError, PluginContext

__all__ = ["completer", "on_resource_updated", "watchers"]

Complete = Callable[[str, str, dict[str, str]], Awaitable[list[str] | types.Completion]]
Watch = Callable[[str], Awaitable[None]]


def completer(
    hub: PluginContext, server: str, ref: types.PromptReference | types.ResourceTemplateReference
) -> Complete:
    """`complete` for a mounted prompt or template: `ref` names it as its server knows it."""

    async def complete(name: str, value: str, context: dict[str, str]) -> types.Completion:
        capabilities = hub.connections.capabilities(server)
        try:
            async with hub.connections.session(server) as session:
                capabilities = capabilities or session.server_capabilities
                if capabilities is None or capabilities.completions is None:
                    return types.Completion(values=[])
                result = await session.complete(ref, {"name": name, "value": value}, context or None)
        except (MCPError, HubError) as exc:
            hub.log.info("completion failed downstream", server=server, error=str(exc))
            return types.Completion(values=[])
        return result.completion

    return complete


def watchers(hub: PluginContext, server: str) -> tuple[Watch, Watch]:
    """`subscribe` and `unsubscribe` for a mounted resource or template of `server`."""

    async def subscribe(uri: str) -> None:
        hub.connections.watch_resource(server, uri)
        if hub.connections.capabilities(server) is None:  # not running: start it, it subscribes
            hub.start_soon(_start, hub, server, name=f"subscribe {server}")

    async def unsubscribe(uri: str) -> None:
        hub.connections.unwatch_resource(server, uri)

    return subscribe, unsubscribe


async def _start(hub: PluginContext, server: str) -> None:
    try:
        async with hub.connections.session(server):
            pass
    except (MCPError, HubError) as exc:
        hub.log.warning("a subscribed server could not start", server=server, error=str(exc))


async def on_resource_updated(hub: PluginContext, server: str, message: Any) -> None:
    """A downstream `notifications/resources/updated` for a URI the hub follows on `server` (one
    of the hub's clients subscribed to it): tell the hub's subscribers."""
    if isinstance(message, types.ResourceUpdatedNotification):
        uri = str(message.params.uri)
        if uri in hub.connections.watched_resources(server):
            await hub.resource_updated(uri)
