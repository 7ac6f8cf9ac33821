"""What the hub serves its clients beyond lists and tool calls, for every plugin (`ClientRelay`):

- **its clients** (`client_state`, `inbound`): each connection's `ClientState` (declared
  capabilities, log level, how to reach it outside a call) and each request's `Inbound` (how
  its `ToolCall` reaches the client, in the client's era; see `hub.server.asking`);
- **logging**: `logging/setLevel` (handshake era) is kept per connection; the least severe level
  any client asked for goes to `on_log_level` (the host passes it to downstream servers); the
  2026-07-28 per-request level comes with each call;
- **roots**: a client's `notifications/roots/list_changed` goes to `on_roots_changed`;
- **completion**: `completion/complete` goes to the `complete` of the prompt or resource template
  it names (`hub.plugin.items.Complete`); none gives no suggestions;
- **resource subscriptions**: `resources/subscribe` / `unsubscribe` (handshake era) and the
  resource URIs of a 2026-07-28 `subscriptions/listen` are counted per URI; the first
  subscriber calls the serving item's `subscribe(uri)`, the last one leaving its
  `unsubscribe(uri)`; `resource_updated(uri)` tells the subscribers in both eras;
- **listen streams** (`ClientBus`): the 2026-07-28 `subscriptions/listen` bus knows whose each
  stream is, so what is one client's own (the tools it loaded, `hub.server.discovery`) is told
  to that client only.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Hashable
from contextvars import ContextVar
from typing import Any

import anyio
import anyio.lowlevel
import mcp.types as types
import structlog
from mcp.server import ServerRequestContext
from mcp.server.subscriptions import ListenHandler
from mcp.shared.exceptions import MCPError
from mcp.shared.subscriptions import ResourceUpdated, ServerEvent
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from hub.errors import ToolError
from hub.plugin.registry import Registry
from hub.server.asking import ClientState, Inbound
from hub.server.sdk import connection_of, notify_client, request_client
from hub.wire.envelope import LOG_LEVEL_KEY
from hub.wire.levels import most_verbose

__all__ = ["MAX_COMPLETIONS", "ClientBus", "ClientRelay"]

log = structlog.get_logger("hub.server")

MAX_COMPLETIONS = 100  # values in one completion/complete answer, as the spec allows


def _dump(model: Any) -> dict[str, Any]:
    if model is None:
        return {}
    dumped: dict[str, Any] = model.model_dump(by_alias=True, mode="json", exclude_none=True)
    return dumped


#: The client whose `subscriptions/listen` stream is being opened (`ClientRelay.listen`).
_LISTENING: ContextVar[ClientState | None] = ContextVar("hub_listening", default=None)

Listener = Callable[[ServerEvent], None]


class ClientBus:
    """The 2026-07-28 `subscriptions/listen` bus (the SDK's `SubscriptionBus`), which also knows
    the client of each listen stream, so a change of one client's own list is told to that
    client only (`publish_to`)."""

    def __init__(self) -> None:
        self._listeners: dict[object, tuple[ClientState | None, Listener]] = {}

    async def publish(self, event: ServerEvent) -> None:
        """Tell every listen stream."""
        self._deliver(event, None)
        await anyio.lowlevel.checkpoint()

    async def publish_to(self, client: ClientState, event: ServerEvent) -> None:
        """Tell `client`'s listen streams only."""
        self._deliver(event, client)
        await anyio.lowlevel.checkpoint()

    def listening(self, client: ClientState) -> bool:
        """Whether `client` has a listen stream open."""
        return any(owner is client for owner, _ in self._listeners.values())

    def _deliver(self, event: ServerEvent, client: ClientState | None) -> None:
        for owner, listener in list(self._listeners.values()):
            if client is None or owner is client:
                try:
                    listener(event)
                except Exception:  # one bad listener must not starve the others
                    log.exception("a subscription listener raised")

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        token = object()
        self._listeners[token] = (_LISTENING.get(), listener)
        return lambda: self._listeners.pop(token, None) and None


class ClientRelay:
    """The handlers and bookkeeping described in the module docstring, for one `HubServer`."""

    def __init__(self, registry: Registry, bus: ClientBus) -> None:
        self.registry = registry
        self.bus = bus
        self._listen = ListenHandler(bus)
        self._clients: dict[int, ClientState] = {}  # SDK connections (HTTP, in memory), by identity
        self._leveled: set[ClientState] = set()  # clients that set a log level
        self._subscribers: dict[str, int] = {}  # URI -> subscriptions of every client
        self._subscribed: set[ClientState] = set()  # handshake-era clients with subscriptions
        self.streamed_sessions: set[str] = set()  # HTTP sessions whose calls need an SSE stream
        self.http_clients: dict[str, ClientState] = {}  # HTTP session id -> its client, once seen
        # Set by the host: what downstream servers are told.
        self.on_log_level: Callable[[str | None], Awaitable[None]] | None = None
        self.on_roots_changed: Callable[[Hashable], Awaitable[None]] | None = None
        self.on_client_closed: Callable[[Hashable], None] | None = None

    # -- the hub's clients ---------------------------------------------------------------------

    def client_state(self, ctx: ServerRequestContext[Any, Any]) -> ClientState | None:
        """The connection a request came on (None for a 2026-07-28 request that has none)."""
        if isinstance(ctx.request, ClientState):  # the line transports put theirs here
            self.client_opened(ctx.request)
            return ctx.request
        if ctx.protocol_version in MODERN_PROTOCOL_VERSIONS:
            return None
        connection = connection_of(ctx.session)
        if connection is None:
            return None
        state = self._clients.get(id(connection))
        if state is None:
            session = ctx.session
            state = ClientState(
                capabilities=_dump(session.client_capabilities),
                request=functools.partial(request_client, session, in_request=False),
                notify=functools.partial(notify_client, session, in_request=False),
            )
            state.on_close.append(self.client_closed)
            self._clients[id(connection)] = state
            session_id = _http_session_id(ctx)
            if session_id is not None:
                self.http_clients[session_id] = state
            connection.exit_stack.push_async_callback(self._closed, id(connection), session_id)
        return state

    def client_opened(self, state: ClientState) -> None:
        """A line transport's client: what the hub keeps of it goes when it closes."""
        if self.client_closed not in state.on_close:
            state.on_close.append(self.client_closed)

    async def _closed(self, key: int, session_id: str | None = None) -> None:
        if session_id is not None:
            self.http_clients.pop(session_id, None)
        state = self._clients.pop(key, None)
        if state is not None:
            await state.close()

    async def client_closed(self, state: ClientState) -> None:
        """A connection ended: its subscriptions and log level go with it, and what downstream
        connections kept for it (`on_client_closed`)."""
        if self.on_client_closed is not None:
            self.on_client_closed(state)
        with anyio.CancelScope(shield=True):
            for uri in sorted(state.subscriptions):
                await self._release(uri)
        state.subscriptions.clear()
        self._subscribed.discard(state)
        if state in self._leveled:
            self._leveled.discard(state)
            await self._levels_changed()

    def inbound(self, ctx: ServerRequestContext[Any, Any]) -> Inbound:
        """How a `tools/call` request's `ToolCall` reaches its client (SDK path)."""
        modern = ctx.protocol_version in MODERN_PROTOCOL_VERSIONS
        state = self.client_state(ctx)
        session = ctx.session
        if modern:
            level = (ctx.meta or {}).get(LOG_LEVEL_KEY)  # type: ignore[union-attr]
        else:
            level = state.log_level if state is not None else None
        return Inbound(
            modern,
            _dump(session.client_capabilities),
            level if isinstance(level, str) else None,
            state,
            None if modern else functools.partial(request_client, session, in_request=True),
            functools.partial(notify_client, session, in_request=True),
        )

    # -- logging and roots ----------------------------------------------------------------------

    async def set_level(
        self, ctx: ServerRequestContext[Any, Any], params: types.SetLevelRequestParams
    ) -> types.EmptyResult:
        state = self.client_state(ctx)
        if state is not None:
            state.log_level = params.level
            self._leveled.add(state)
        session_id = _http_session_id(ctx)
        if session_id is not None:  # its calls' log messages need their SSE streams
            self.streamed_sessions.add(session_id)
        await self._levels_changed()
        return types.EmptyResult()

    async def _levels_changed(self) -> None:
        if self.on_log_level is not None:
            level = most_verbose(s.log_level for s in self._leveled if s.open)
            try:
                await self.on_log_level(level)
            except Exception:
                log.exception("passing a log level downstream failed")

    async def roots_changed(self, ctx: ServerRequestContext[Any, Any], params: Any) -> None:
        state = self.client_state(ctx)
        if state is not None and self.on_roots_changed is not None:
            await self.on_roots_changed(state)

    # -- completion -----------------------------------------------------------------------------

    async def complete(
        self, ctx: ServerRequestContext[Any, Any], params: types.CompleteRequestParams
    ) -> types.CompleteResult:
        ref = params.ref
        if isinstance(ref, types.PromptReference):
            item: Any = self.registry.prompts.get(ref.name)
            what = f"prompt {ref.name!r}"
        else:
            item = self.registry.templates.get(ref.uri) or self.registry.resources.get(ref.uri)
            what = f"resource template {ref.uri!r}"
        if item is None:
            raise MCPError(types.INVALID_PARAMS, f"completion/complete: there is no {what}")
        complete = getattr(item, "complete", None)
        if complete is None:
            return types.CompleteResult(completion=types.Completion(values=[]))
        context = dict(params.context.arguments or {}) if params.context is not None else {}
        try:
            found = await complete(params.argument.name, params.argument.value, context)
        except ToolError as exc:
            raise MCPError(types.INVALID_PARAMS, str(exc)) from None
        except Exception as exc:
            log.exception("completion raised", ref=what, plugin=getattr(item, "plugin", ""))
            raise MCPError(
                types.INTERNAL_ERROR, f"completing {what} failed: {type(exc).__name__}: {exc}"
            ) from None
        if isinstance(found, types.Completion):
            return types.CompleteResult(completion=found)
        values = [str(v) for v in found]
        return types.CompleteResult(
            completion=types.Completion(
                values=values[:MAX_COMPLETIONS], total=len(values), has_more=len(values) > MAX_COMPLETIONS
            )
        )

    # -- resource subscriptions -----------------------------------------------------------------

    async def subscribe(
        self, ctx: ServerRequestContext[Any, Any], params: types.SubscribeRequestParams
    ) -> types.EmptyResult:
        uri = str(params.uri)
        state = self.client_state(ctx)
        if self.registry.find_resource(uri) is None:
            raise MCPError(types.INVALID_PARAMS, f"Unknown resource: {uri}", data={"uri": uri})
        if state is not None and uri not in state.subscriptions:
            state.subscriptions.add(uri)
            self._subscribed.add(state)
            await self._acquire(uri)
        return types.EmptyResult()

    async def unsubscribe(
        self, ctx: ServerRequestContext[Any, Any], params: types.UnsubscribeRequestParams
    ) -> types.EmptyResult:
        uri = str(params.uri)
        state = self.client_state(ctx)
        if state is not None and uri in state.subscriptions:
            state.subscriptions.discard(uri)
            await self._release(uri)
        return types.EmptyResult()

    async def listen(
        self, ctx: ServerRequestContext[Any, Any], params: types.SubscriptionsListenRequestParams
    ) -> types.SubscriptionsListenResult:
        """`subscriptions/listen`, served by the SDK's `ListenHandler`; its resource URIs are
        counted as subscriptions while the stream lasts, and the bus knows whose it is."""
        uris = sorted(set(params.notifications.resource_subscriptions or ()))
        for uri in uris:
            await self._acquire(uri)
        owner = _LISTENING.set(self.client_state(ctx))  # whose stream it is (`ClientBus`)
        try:
            return await self._listen(ctx, params)
        finally:
            _LISTENING.reset(owner)
            with anyio.CancelScope(shield=True):
                for uri in uris:
                    await self._release(uri)

    async def _acquire(self, uri: str) -> None:
        self._subscribers[uri] = self._subscribers.get(uri, 0) + 1
        if self._subscribers[uri] == 1:
            await self._tell_item(uri, "subscribe")

    async def _release(self, uri: str) -> None:
        count = self._subscribers.get(uri, 0) - 1
        if count > 0:
            self._subscribers[uri] = count
            return
        self._subscribers.pop(uri, None)
        await self._tell_item(uri, "unsubscribe")

    async def _tell_item(self, uri: str, what: str) -> None:
        found = self.registry.find_resource(uri)
        item = found[0] if found is not None else None
        hook = getattr(item, what, None)
        if hook is None:
            return
        try:
            await hook(uri)
        except Exception:
            log.exception(f"a resource's {what} raised", uri=uri, plugin=getattr(item, "plugin", ""))

    async def resource_updated(self, uri: str) -> None:
        """Tell the clients subscribed to `uri` (either era) that it changed."""
        await self.bus.publish(ResourceUpdated(uri=uri))
        for state in list(self._subscribed):
            if uri in state.subscriptions and state.open and state.notify is not None:
                try:
                    await state.notify("notifications/resources/updated", {"uri": uri})
                except Exception as exc:
                    log.debug("a subscriber could not be told", uri=uri, error=str(exc))


def _http_session_id(ctx: ServerRequestContext[Any, Any]) -> str | None:
    headers = getattr(ctx.request, "headers", None)
    value = headers.get("mcp-session-id") if headers is not None else None
    return value if isinstance(value, str) else None
