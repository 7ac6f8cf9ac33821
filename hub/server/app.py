"""The MCP face of the hub: the SDK's low-level `Server` over the live registry.

Tool arguments are validated before a plugin sees them; plugin failures become `isError` results
and never take the server down; unknown tools and resources are JSON-RPC errors. When a list
changes, clients are told in both protocol eras: handshake-era sessions get
`notifications/*/list_changed`, 2026-era clients get it on their `subscriptions/listen` stream.
Lists, `initialize` and `server/discover` wait for the plugins' holds on them (each at most its
`wait_s`: `PluginContext.hold_lists`), and the instructions carry each plugin's part
(`PluginContext.set_instructions`), as they are when a session asks.

Only the handlers live here; tool calls run in `hub.server.dispatch`; how clients reach them is
`hub.server.stdio` (through `hub.launch.session`) and `hub.server.http` (`serve_http`, bearer
auth and DNS-rebinding checks).
"""

from __future__ import annotations

import base64
import json
import time
import warnings
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.lowlevel
import mcp.types as types
import structlog
from mcp.server import NotificationOptions, Server, ServerRequestContext
from mcp.server.models import InitializationOptions
from mcp.shared.exceptions import MCPDeprecationWarning, MCPError
from mcp.shared.subscriptions import PromptsListChanged, ResourcesListChanged, ServerEvent, ToolsListChanged
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import BaseModel

from hub import __version__
from hub.errors import ToolError
from hub.plugin.items import ResourceBody, ResourceTemplate
from hub.plugin.registry import HoldKind, ListKind, Registry
from hub.server.discovery import SEARCH_INSTRUCTIONS, Discovery, ToolsSetting
from hub.server.dispatch import Dispatch, to_call_result
from hub.server.relay import ClientBus, ClientRelay
from hub.server.sdk import connection_of

#: Run a background task (the host's task group): `spawn(fn, *args, name=...)`.
Spawn = Callable[..., None]

__all__ = ["HubServer", "to_call_result"]

log = structlog.get_logger("hub.server")

#: The requests that wait for plugins' holds (`PluginContext.hold_lists`), and the kind of each.
HELD_METHODS: dict[str, HoldKind] = {
    "tools/list": "tools",
    "resources/list": "resources",
    "resources/templates/list": "resources",
    "prompts/list": "prompts",
    "initialize": "instructions",
    "server/discover": "instructions",
}

INSTRUCTIONS = (
    "The hub hosts several tool families (plugins) behind one server. Read hub://status for the "
    "loaded plugins, the shared budget and downstream servers."
)


def resource_contents(
    uri: str, mime_type: str | None, body: ResourceBody
) -> list[types.TextResourceContents | types.BlobResourceContents]:
    if isinstance(body, types.ReadResourceResult):
        return body.contents
    if isinstance(body, bytes):
        return [
            types.BlobResourceContents(uri=uri, mime_type=mime_type, blob=base64.b64encode(body).decode())
        ]
    if isinstance(body, BaseModel):
        body = body.model_dump(mode="json")
    text = body if isinstance(body, str) else json.dumps(body, indent=2, ensure_ascii=False, default=str)
    return [types.TextResourceContents(uri=uri, mime_type=mime_type, text=text)]


class _HubMCPServer(Server[Any]):
    """Advertises `listChanged` for tools, resources and prompts to handshake-era clients too
    (the SDK's HTTP manager calls `create_initialization_options()` with no arguments), and gives
    the hub's instructions with each plugin's part (`Registry.composed_instructions`), read when
    asked: `server/discover` and every session's initialization options see the current text."""

    registry: Registry | None = None
    _base_instructions: str | None = None

    @property  # type: ignore[override]
    def instructions(self) -> str | None:
        base = self._base_instructions
        if self.registry is None or base is None:
            return base
        return self.registry.composed_instructions(base)

    @instructions.setter
    def instructions(self, value: str | None) -> None:
        self._base_instructions = value

    def create_initialization_options(
        self,
        notification_options: NotificationOptions | None = None,
        experimental_capabilities: dict[str, dict[str, Any]] | None = None,
        extensions: dict[str, dict[str, Any]] | None = None,
    ) -> InitializationOptions:
        return super().create_initialization_options(
            notification_options
            or NotificationOptions(prompts_changed=True, resources_changed=True, tools_changed=True),
            experimental_capabilities,
            extensions,
        )


class HubServer:
    """Builds the SDK server over a `Registry` and keeps connected clients informed of changes.

    `spawn` runs background work (the host's task group); `status` gives what `hub://status`
    shows (for the HTTP and dashboard pages that ask); `tools` is `[tools]` (what is listed,
    `hub.server.discovery`) and `notes(server)` a downstream server's instructions."""

    def __init__(
        self,
        registry: Registry,
        spawn: Spawn,
        *,
        status: Callable[[], Awaitable[dict[str, Any]]] | None = None,
        tools: ToolsSetting | None = None,
        notes: Callable[[str], str | None] | None = None,
    ) -> None:
        self.registry = registry
        self.spawn = spawn
        self.status = status
        self.bus = ClientBus()  # subscriptions/listen, knowing each stream's session
        # Handshake-era connections that can receive list_changed, keyed by connection identity.
        self._legacy_sessions: dict[int, Any] = {}
        self._pending: set[ListKind] = set()
        self._flush_scheduled = False
        # Clients, log levels, roots, completion, subscriptions (`hub.server.relay`).
        self.relay = ClientRelay(registry, self.bus)
        self.streamed_sessions = self.relay.streamed_sessions
        relay = self.relay
        with warnings.catch_warnings():  # logging and roots are deprecated at 2026-07-28 (SEP-2577)
            warnings.simplefilter("ignore", MCPDeprecationWarning)
            self.mcp = _HubMCPServer(
                "hub",
                version=__version__,
                instructions=(
                    f"{INSTRUCTIONS} {SEARCH_INSTRUCTIONS}"
                    if tools and tools.expose != "all"
                    else INSTRUCTIONS
                ),
                on_list_tools=self._list_tools,
                on_call_tool=self._call_tool,
                on_list_resources=self._list_resources,
                on_list_resource_templates=self._list_templates,
                on_read_resource=self._read_resource,
                on_subscribe_resource=relay.subscribe,
                on_unsubscribe_resource=relay.unsubscribe,
                on_list_prompts=self._list_prompts,
                on_get_prompt=self._get_prompt,
                on_completion=relay.complete,
                on_set_logging_level=relay.set_level,
                on_roots_list_changed=relay.roots_changed,
                on_subscriptions_listen=relay.listen,
            )
        self.mcp.registry = registry
        self.mcp.middleware.append(self._track_session)
        self.mcp.middleware.append(self._when_ready)  # plugins' holds (PluginContext.hold_lists)
        self.dispatch = Dispatch(registry, self.mcp, spawn)  # every tool call, and the cached lists
        self.dispatch.inbound_of = relay.inbound
        self.dispatch.client_opened = relay.client_opened
        self.dispatch.client_of = relay.client_state  # a request's client: whose list it is
        # What is listed to whom ([tools] expose), find_tools and call_tool.
        self.discovery = Discovery(registry, self.dispatch, tools, notes=notes, bus=self.bus)
        self.mcp.middleware.append(self.dispatch)
        registry.add_listener(self.dispatch.invalidate)  # the caches go first,
        registry.add_listener(self._changed)  # then clients are told

    # -- change notifications ----------------------------------------------------------------

    async def _track_session(self, ctx: ServerRequestContext[Any, Any], call_next: Any) -> Any:
        if ctx.protocol_version not in MODERN_PROTOCOL_VERSIONS:
            connection = connection_of(ctx.session)
            key = id(connection) if connection is not None else id(ctx.session)
            if key not in self._legacy_sessions:
                self._legacy_sessions[key] = ctx.session
                if connection is not None:
                    connection.exit_stack.callback(self._legacy_sessions.pop, key, None)
        return await call_next(ctx)

    async def resource_updated(self, uri: str) -> None:
        """Tell the clients subscribed to `uri` that it changed (`hub.server.relay`)."""
        await self.relay.resource_updated(uri)

    async def _when_ready(self, ctx: ServerRequestContext[Any, Any], call_next: Any) -> Any:
        """Answer lists, `initialize` and `server/discover` once the plugins' holds on them are
        released (each waited for at most its `wait_s`); an `initialize` answer carries the
        instructions as they are then (its session's options were made when it connected)."""
        kind = HELD_METHODS.get(ctx.method)
        if kind is None:
            return await call_next(ctx)
        if self.registry.held(kind):
            started = time.monotonic()
            missed = await self.registry.wait_for_holds(kind)
            if missed:
                log.warning(
                    "answered before every hold was released; what is missing arrives with list_changed",
                    request=ctx.method,
                    waited_s=round(time.monotonic() - started, 2),
                    missed=[f"{hold.plugin}: {hold.reason}" for hold in missed],
                )
        result = await call_next(ctx)
        if ctx.method == "initialize" and isinstance(result, dict):
            instructions = self.mcp.instructions
            if instructions:
                result["instructions"] = instructions
        return result

    def notify_changed(self, kind: ListKind) -> None:
        """Tell connected clients the `kind` list changed (the registry tells this server of its
        own changes; a session whose start-up answers were out of date calls it too)."""
        self.registry.changed(kind)

    def _changed(self, kind: ListKind) -> None:
        """Registry listener: batch changes made in one go into one notification per list."""
        self._pending.add(kind)
        if self._flush_scheduled:
            return
        try:
            self.spawn(self._flush, name="hub:list_changed")
        except RuntimeError:  # the hub is not running yet (or any more): nobody to tell
            return
        self._flush_scheduled = True

    async def _flush(self) -> None:
        await anyio.lowlevel.checkpoint()  # let the rest of a burst of registrations land first
        kinds, self._pending = self._pending, set()
        self._flush_scheduled = False
        events: dict[ListKind, ServerEvent] = {
            "tools": ToolsListChanged(),
            "resources": ResourcesListChanged(),
            "prompts": PromptsListChanged(),
        }
        for kind in sorted(kinds):
            await self.bus.publish(events[kind])
            for key, session in list(self._legacy_sessions.items()):
                try:
                    if kind == "tools":
                        await session.send_tool_list_changed()
                    elif kind == "resources":
                        await session.send_resource_list_changed()
                    else:
                        await session.send_prompt_list_changed()
                except Exception as exc:  # a client that went away
                    log.debug("dropping a session that cannot be notified", error=str(exc))
                    self._legacy_sessions.pop(key, None)

    # -- tools -------------------------------------------------------------------------------

    async def _list_tools(
        self, ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        return self.discovery.list_result(ctx)

    async def _call_tool(
        self, ctx: ServerRequestContext[Any, Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        """The SDK's handler: `Dispatch` runs every known tool, and leaves to this one unknown
        tools and calls whose params it does not take (the SDK refuses most of those first)."""
        tool = self.registry.tools.get(params.name)
        if tool is None:
            raise MCPError(types.INVALID_PARAMS, f"Unknown tool: {params.name}", data={"tool": params.name})
        call = {"name": params.name, "arguments": params.arguments}
        wire = await self.dispatch.forward(
            tool, call, ctx.request_id, ctx.session.report_progress, ctx.session, self.relay.inbound(ctx)
        )
        return types.CallToolResult.model_validate(wire)

    # -- resources ---------------------------------------------------------------------------

    async def _list_resources(
        self, ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
    ) -> types.ListResourcesResult:
        return types.ListResourcesResult(resources=[r.to_mcp() for r in self.registry.resources.values()])

    async def _list_templates(
        self, ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
    ) -> types.ListResourceTemplatesResult:
        return types.ListResourceTemplatesResult(
            resource_templates=[t.to_mcp() for t in self.registry.templates.values()]
        )

    async def _read_resource(
        self, ctx: ServerRequestContext[Any, Any], params: types.ReadResourceRequestParams
    ) -> types.ReadResourceResult:
        uri = str(params.uri)
        found = self.registry.find_resource(uri)
        if found is None:
            raise MCPError(types.INVALID_PARAMS, f"Unknown resource: {uri}", data={"uri": uri})
        item, uri_params = found
        try:
            body = await (item.read(uri_params) if isinstance(item, ResourceTemplate) else item.read())
        except ToolError as exc:
            raise MCPError(types.INVALID_PARAMS, str(exc), data={"uri": uri}) from None
        except Exception as exc:
            log.exception("resource read raised", uri=uri, plugin=item.plugin)
            raise MCPError(
                types.INTERNAL_ERROR, f"reading {uri} failed: {type(exc).__name__}: {exc}"
            ) from None
        return types.ReadResourceResult(contents=resource_contents(uri, item.mime_type, body))

    # -- prompts -----------------------------------------------------------------------------

    async def _list_prompts(
        self, ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
    ) -> types.ListPromptsResult:
        return types.ListPromptsResult(prompts=[p.to_mcp() for p in self.registry.prompts.values()])

    async def _get_prompt(
        self, ctx: ServerRequestContext[Any, Any], params: types.GetPromptRequestParams
    ) -> types.GetPromptResult:
        prompt = self.registry.prompts.get(params.name)
        if prompt is None:
            raise MCPError(
                types.INVALID_PARAMS, f"Unknown prompt: {params.name}", data={"prompt": params.name}
            )
        try:
            arguments = prompt.check_arguments(params.arguments)
            rendered = await prompt.render(arguments)
        except ToolError as exc:
            raise MCPError(types.INVALID_PARAMS, str(exc)) from None
        except Exception as exc:
            log.exception("prompt render raised", prompt=prompt.name, plugin=prompt.plugin)
            raise MCPError(
                types.INTERNAL_ERROR, f"prompt {prompt.name} failed: {type(exc).__name__}: {exc}"
            ) from None
        if isinstance(rendered, types.GetPromptResult):
            return rendered
        if isinstance(rendered, str):
            messages = [
                types.PromptMessage(role="user", content=types.TextContent(type="text", text=rendered))
            ]
        else:
            messages = rendered
        return types.GetPromptResult(description=prompt.description, messages=messages)
