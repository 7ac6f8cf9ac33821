"""The one executor of tool calls, and the cached list answers (`Dispatch`).

Installed as one `Server.middleware` by `hub.server.app.HubServer`:

- **Cached lists.** `tools/list`, `resources/list`, `resources/templates/list` and `prompts/list`
  (first page: the hub does not paginate) are answered from the wire dict the SDK produced the
  first time, per protocol version (and, for `tools/list`, per set of tools a session loaded:
  `hub.server.discovery`), until the registry changes (then the cache is dropped and clients get
  `list_changed` as before). A hit costs a dict copy instead of rebuilding every `types.Tool`,
  dumping the result and re-validating it for the protocol version. An item with its own
  `definition` (wire JSON: the proxy's, as the downstream listed it) is put in the SDK's answer
  in place of the one made from its fields, so nothing the SDK does not model is lost; the
  `_meta` the hub gives it (search hints) is merged in.
  While a plugin holds a list (`PluginContext.hold_lists`), no cached answer is given before
  the SDK's path has waited (`hub.server.app`).
- **Tool calls.** A `tools/call` of any hub tool skips the SDK's typed params and its
  per-version re-validation of the result: arguments are checked (`Tool.validate`), the handler
  runs, and its result is turned into wire JSON once, stamped for 2026-era clients
  (`resultType`, `serverInfo`). A tool with `returns_raw` (the proxy's `ForwardedTool`) returns
  the downstream's result as a `RawResult` dict (see `hub.client.raw.call_tool_raw`), which goes
  to the client as is. Failures become `isError` results naming the tool, a result that cannot be sent
  included (the SDK would answer that with a code-0 error).

Requests before `initialize`, unknown tools and anything else take the regular path (`call_next`).

The stdio, shared-socket and HTTP transports go one step further for the same two requests:
`hub.server.shortcuts` answers them before the SDK sees them, with this class's caches and
`forward`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Hashable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import mcp.types as types
import structlog
from mcp_types import SERVER_INFO_META_KEY
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import BaseModel

import hub.telemetry as telemetry
from hub.errors import ToolError
from hub.plugin.items import ClientChannel, RawResult, Tool, ToolCall, dump_json
from hub.plugin.registry import ListKind, Registry
from hub.server.asking import PARK_PREFIX, CallChannel, ClientState, Inbound, Parking, askable
from hub.server.sdk import connection_of
from hub.wire.jsonrpc import ProgressFn

if TYPE_CHECKING:
    from mcp.server import Server, ServerRequestContext

__all__ = ["LIST_METHODS", "Dispatch", "as_listed", "to_call_result", "well_formed"]

log = structlog.get_logger("hub.server")

LIST_METHODS = frozenset({"tools/list", "resources/list", "resources/templates/list", "prompts/list"})
LIST_KINDS: dict[str, ListKind] = {
    "tools/list": "tools",
    "resources/list": "resources",
    "resources/templates/list": "resources",
    "prompts/list": "prompts",
}
# Per list method: the result's key, the registry's table, and the field naming an item.
LIST_ITEMS = {
    "tools/list": ("tools", "tools", "name"),
    "resources/list": ("resources", "resources", "uri"),
    "resources/templates/list": ("resourceTemplates", "templates", "uriTemplate"),
    "prompts/list": ("prompts", "prompts", "name"),
}


def to_call_result(value: Any) -> types.CallToolResult:
    """A tool handler's return value as an MCP result (see `hub.plugin.items.Tool`)."""
    if isinstance(value, types.CallToolResult):
        return value
    if isinstance(value, RawResult):  # a downstream's answer, as wire JSON
        return types.CallToolResult.model_validate(value)
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    if isinstance(value, str):
        return types.CallToolResult(content=[types.TextContent(type="text", text=value)])
    structured = value if isinstance(value, dict) else {"result": value}
    text = dump_json(value)
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=text)], structured_content=structured
    )


def well_formed(params: dict[str, Any]) -> bool:
    """Whether `tools/call` params are as the SDK would take them, as far as the hub reads them:
    `arguments` an object (or absent), `_meta` an object whose `progressToken`, if any, is a
    string or an integer. Others go to the SDK, which answers -32602."""
    arguments = params.get("arguments")
    if arguments is not None and type(arguments) is not dict:
        return False
    meta = params.get("_meta")
    if meta is None:
        return True
    if type(meta) is not dict:
        return False
    token = meta.get("progressToken")
    return token is None or type(token) is str or type(token) is int


def _result_problem(result: dict[str, Any]) -> str | None:
    """What the SDK's per-version check of a plugin's result would refuse, as far as a model
    allows it: `structuredContent` must be an object, `content` a list."""
    structured = result.get("structuredContent")
    if structured is not None and not isinstance(structured, dict):
        return f"structuredContent is {type(structured).__name__}, not an object"
    if not isinstance(result.get("content"), list):
        return "it has no content list"
    return None


def as_listed(definition: dict[str, Any], made: dict[str, Any]) -> dict[str, Any]:
    """An item's own wire `definition` as the hub lists it: with the `_meta` keys of the item the
    hub made for it (`made`: the search hints of `hub.server.discovery`) over the definition's."""
    meta = made.get("_meta")
    if not isinstance(meta, dict) or not meta:
        return definition
    own = definition.get("_meta")
    return {**definition, "_meta": {**own, **meta} if isinstance(own, dict) else meta}


def _error(text: str) -> dict[str, Any]:
    return {"content": [{"type": "text", "text": text}], "isError": True}


def _first_leaf(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


class Dispatch:
    """The middleware and its list cache; `generation` counts registry changes."""

    def __init__(
        self, registry: Registry, server: Server[Any], spawn: Callable[..., None] | None = None
    ) -> None:
        self.registry = registry
        self.server = server
        # A request's client as a tool call reaches it (`hub.server.app.HubServer.inbound`).
        self.inbound_of: Callable[[ServerRequestContext[Any, Any]], Inbound | None] = lambda ctx: None
        # A line transport's client connected (`ClientRelay.client_opened`): it is told of its end.
        self.client_opened: Callable[[ClientState], None] = lambda state: None
        # 2026-07-28 calls whose clients can be asked (`hub.server.asking`); None: never parked.
        self.parking = Parking(spawn) if spawn is not None else None
        self.generation = 0
        # Keyed by (method, protocol version, variant): the variant is "" for an answer every
        # client gets, else names what is the session's own (`hub.server.discovery`: the tools
        # it loaded); `client_of(ctx)` is a request's session.
        self.lists: dict[tuple[str, str, str], dict[str, Any]] = {}
        # The same answers as JSON text, for the transports' shortcuts (hub.server.shortcuts).
        self.texts: dict[tuple[str, str, str], str] = {}
        self.list_variant: Callable[[str, Hashable | None], str] = lambda method, client: ""
        self.client_of: Callable[[Any], Hashable | None] = lambda ctx: None
        self.hits = 0
        self.shortcut_calls = 0  # raw-result calls answered by a transport's shortcut

    def invalidate(self, kind: ListKind | None = None) -> None:
        """Drop the cached lists (a registry listener: `kind` is the list that changed)."""
        self.generation += 1
        self.lists.clear()
        self.texts.clear()

    def list_answer(
        self, method: Any, params: dict[str, Any], version: str, client: Hashable | None = None
    ) -> str | None:
        """For a transport's shortcut: the cached answer text to a list request (first page) of
        session `client`, counted as a hit; None if there is none (the SDK answers, and this
        middleware keeps it)."""
        if method not in LIST_METHODS or params.get("cursor") is not None:
            return None
        if self.registry.held(LIST_KINDS[method]):
            return None  # a plugin holds it: the SDK's path waits (hub.server.app)
        text = self.list_text(method, version, self.list_variant(method, client))
        if text is not None:
            self.hits += 1
        return text

    def list_text(self, method: str, version: str, variant: str = "") -> str | None:
        """The cached answer to a list request as JSON text, if the SDK has given one since the
        registry last changed."""
        key = (method, version, variant)
        text = self.texts.get(key)
        if text is None and key in self.lists:
            text = self.texts[key] = json.dumps(self.lists[key], ensure_ascii=False, separators=(",", ":"))
        return text

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: Any) -> Any:
        method = ctx.method
        if method != "tools/call" and method not in LIST_METHODS:
            return await call_next(ctx)
        connection = connection_of(ctx.session)
        if connection is not None and not connection.initialize_accepted:
            return await call_next(ctx)  # the SDK's gate answers it
        params = ctx.params if isinstance(ctx.params, dict) else {}
        if method == "tools/call":
            name = params.get("name")
            tool = self.registry.tools.get(name) if isinstance(name, str) else None
            if tool is None or not well_formed(params):
                return await call_next(ctx)  # the SDK's answer: an unknown tool, or -32602
            return self.stamp(ctx.protocol_version, await self._forward(ctx, tool, params))
        if params.get("cursor") is not None:
            return await call_next(ctx)
        key = (method, ctx.protocol_version, self.list_variant(method, self.client_of(ctx)))
        cached = self.lists.get(key)
        if cached is not None:
            self.hits += 1
            return dict(cached)
        generation = self.generation
        result = await call_next(ctx)
        if isinstance(result, dict):
            self._as_defined(method, result)
        if isinstance(result, dict) and generation == self.generation:
            self.lists[key] = result
            return dict(result)
        return result

    def _as_defined(self, method: str, result: dict[str, Any]) -> None:
        """Put each item's own wire definition (`Tool.definition` ...) in place of the one the
        SDK made from its fields, so what the SDK does not model passes through, with the
        `_meta` the hub gave it (`as_listed`)."""
        key, table, field = LIST_ITEMS[method]
        items = result.get(key)
        registered: dict[str, Any] = getattr(self.registry, table)
        if not isinstance(items, list) or not any(item.definition for item in registered.values()):
            return
        for n, item in enumerate(items):
            name = item.get(field) if isinstance(item, dict) else None
            found = registered.get(name) if isinstance(name, str) else None
            if found is not None and found.definition is not None:
                items[n] = as_listed(found.definition, item)

    async def _forward(
        self, ctx: ServerRequestContext[Any, Any], tool: Tool, params: dict[str, Any]
    ) -> dict[str, Any]:
        return await self.forward(
            tool, params, ctx.request_id, ctx.session.report_progress, ctx.session, self.inbound_of(ctx)
        )

    async def forward(
        self,
        tool: Tool,
        params: dict[str, Any],
        request_id: Any,
        progress: ProgressFn | None,
        session: Any = None,
        inbound: Inbound | None = None,
    ) -> dict[str, Any]:
        """Run `tool` for a `tools/call` with `params`: its result as wire JSON, failures as
        `isError` results with the texts of the regular path. `inbound` is the request's client
        (its `ToolCall` reaches it); a 2026-07-28 client that can be asked has its call parked
        when it asks (`hub.server.asking.Parking`): the answer is then `input_required`, and a
        retry carrying the parked call's `requestState` resumes it (an unknown or expired one
        is `MCPError` -32602)."""
        if telemetry.STATE.on:  # off: this one flag is all tracing costs a call
            return await telemetry.traced_tool_call(
                tool.name,
                tool.plugin,
                params,
                lambda: self._forward_call(tool, params, request_id, progress, session, inbound),
            )
        return await self._forward_call(tool, params, request_id, progress, session, inbound)

    async def _forward_call(
        self,
        tool: Tool,
        params: dict[str, Any],
        request_id: Any,
        progress: ProgressFn | None,
        session: Any,
        inbound: Inbound | None,
    ) -> dict[str, Any]:
        """`forward`, past its telemetry."""
        if inbound is not None and inbound.modern and self.parking is not None:
            state = params.get("requestState")
            arguments = params.get("arguments")
            if isinstance(state, str) and state.startswith(PARK_PREFIX):
                resumed = replace(inbound, progress=progress)
                return await self.parking.resume(tool.name, arguments, params, resumed)
            if askable(inbound.capabilities):

                async def execute(relay: ProgressFn, channel: ClientChannel) -> dict[str, Any]:
                    return await self.run(tool, params, request_id, relay, session, channel)

                return await self.parking.start(
                    tool.name, arguments, replace(inbound, progress=progress), execute
                )
        channel = CallChannel(inbound) if inbound is not None else None
        return await self.run(tool, params, request_id, progress, session, channel)

    async def run(
        self,
        tool: Tool,
        params: dict[str, Any],
        request_id: Any,
        progress: ProgressFn | None,
        session: Any,
        channel: ClientChannel | None,
    ) -> dict[str, Any]:
        """`forward` once the call's client channel is known (`call_tool` runs the tool it names
        with its own call's channel, so that tool can ask the client too)."""
        forwarded = tool.returns_raw
        # A forwarded call is the hot path: its logger is bound only when there is something to say.
        bound = log if forwarded else log.bind(tool=tool.name, plugin=tool.plugin, request_id=request_id)
        started = time.perf_counter()
        try:
            arguments = tool.validate(params.get("arguments"))
            call = ToolCall(
                tool.name,
                request_id=request_id,
                progress=progress,
                session=session,
                log=bound,
                client=channel,
            )
            result = await tool.handler(arguments, call)
        except ToolError as exc:
            log.info("tool error", tool=tool.name, plugin=tool.plugin, request_id=request_id, error=str(exc))
            return _error(str(exc))
        except Exception as exc:
            leaf = _first_leaf(exc)
            if isinstance(leaf, ToolError):  # raised inside a plugin's task group
                log.info(
                    "tool error", tool=tool.name, plugin=tool.plugin, request_id=request_id, error=str(leaf)
                )
                return _error(str(leaf))
            log.exception("tool raised", tool=tool.name, plugin=tool.plugin, request_id=request_id)
            exc = leaf if isinstance(leaf, Exception) else exc
            return _error(f"{tool.name} failed: {type(exc).__name__}: {exc}")
        if forwarded and isinstance(result, dict):
            return dict(result)
        return self._wire(tool, result, request_id, bound, started)

    @staticmethod
    def _wire(tool: Tool, result: Any, request_id: Any, bound: Any, started: float) -> dict[str, Any]:
        """A handler's return value as wire JSON, or an error result saying why it cannot be sent."""
        forwarded = tool.returns_raw
        if forwarded and not isinstance(result, BaseModel):
            return _error(f"{tool.name} returned {type(result).__name__}, not a tool result")
        try:
            model = result if forwarded else to_call_result(result)
            dumped: dict[str, Any] = model.model_dump(by_alias=True, mode="json", exclude_none=True)
            problem = _result_problem(dumped)
        except Exception as exc:  # pydantic's serializer refused it (nesting, a lone surrogate in a key)
            log.exception(
                "a tool's result cannot be sent", tool=tool.name, plugin=tool.plugin, request_id=request_id
            )
            problem = str(exc)
        if problem is not None:
            return _error(
                f"{tool.name} returned a result that cannot be sent ({problem}); the plugin serving it has a bug"
            )
        if not forwarded:
            bound.debug(
                "tool done",
                ms=round((time.perf_counter() - started) * 1000, 1),
                is_error=dumped.get("isError", False),
            )
        return dumped

    def stamp(self, version: str, result: dict[str, Any]) -> dict[str, Any]:
        """What the SDK adds to every 2026-era result: `resultType` and the `serverInfo` stamp."""
        if version not in MODERN_PROTOCOL_VERSIONS:
            result.pop("resultType", None)
            return result
        result.setdefault("resultType", "complete")
        meta = result.get("_meta")
        if not isinstance(meta, dict):
            result["_meta"] = {SERVER_INFO_META_KEY: self.server.server_info_stamp}
        elif meta.get(SERVER_INFO_META_KEY) is None:
            result["_meta"] = {**meta, SERVER_INFO_META_KEY: self.server.server_info_stamp}
        return result
