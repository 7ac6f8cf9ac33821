"""What a downstream server asks of the hub's client, and whom it reaches.

A downstream server may ask its client for a model's answer (`sampling/createMessage`), for the
user's input (`elicitation/create`, form and URL modes) and for the workspace roots
(`roots/list`), and it sends log messages. Behind the hub, "its client" is whichever of the hub's
clients made the call that caused the request: a `Caller` (the hub's `ToolCall` is one). Every
downstream connection declares sampling, elicitation and roots, and `Calls` (one per downstream
connection) decides where each request goes:

1. **Exactly**, when the transport says which call a request belongs to: a 2026-07-28 downstream
   asks inside the call's own result (`input_required`, handled by `hub.client.raw`); on
   streamable HTTP a request arrives on the stream of the call that caused it, and the SDK runs
   the callback in that call's context, where `CALLER` is set.
2. **By elimination** otherwise (stdio, a handshake-era server): to the call in flight on this
   connection when there is one, or to the newest call when every call in flight comes from
   one client session. With calls of several sessions in flight nothing on the wire says whose
   request it is: the request is refused with an error that says so (a guess could show one
   client's prompt to another), and the server is marked as one that asks
   (`Calls.on_asked`): from then on the shared connection belongs to the session it first
   asked, and the connection cache gives each other session a connection of its own to that
   server (`hub.client.cache`, "lanes"; sessions that cannot answer share one), where every
   call in flight is that session's.
3. **Outside any call** (server-everything asks `roots/list` right after the handshake): to
   the newest client session seen on this connection that can be asked outside a call (a
   handshake-era client, on its standalone channel), else, for roots, the last answer given on
   this connection, else an error that says no client can answer now.

A client that did not declare the capability gets nothing: the server is told so in one
sentence. Log messages follow the same routes (a log message whose call cannot be told is
dropped rather than shown to the wrong client); outside a call they reach the sessions that
asked for a log level.
"""

from __future__ import annotations

import contextlib
import contextvars
import itertools
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator, Mapping
from typing import Any, Protocol

import anyio
import mcp_types as types
import structlog
from mcp.client.session import ClientRequestContext
from mcp.shared.exceptions import MCPError
from mcp_types import LOG_LEVEL_META_KEY
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from hub.wire.levels import LOG_LEVELS, level_passes

__all__ = [
    "AMBIGUOUS",
    "CALLER",
    "INPUT_METHODS",
    "LOG_LEVELS",
    "MAX_INPUT_ROUNDS",
    "Caller",
    "Calls",
    "answer_inputs",
    "drive_input_required",
    "level_passes",
    "result_model",
]

log = structlog.get_logger("hub.connections")

#: Server-to-client request methods and the client capability each needs.
INPUT_METHODS = {
    "sampling/createMessage": "sampling",
    "elicitation/create": "elicitation",
    "roots/list": "roots",
}
RECENT_SESSIONS = 16  # client sessions remembered per connection, for requests outside any call


class Caller(Protocol):
    """The hub's client behind a downstream call, as the client side needs it (`hub.ToolCall`)."""

    @property
    def session_key(self) -> Hashable | None:
        """The client's session (one per connection to the hub); None when it has none (a
        2026-07-28 client over HTTP, whose requests stand alone)."""
        ...

    @property
    def log_level(self) -> str | None:
        """The least severe log level the client asked for, or None."""
        ...

    def can_ask(self, method: str, params: Mapping[str, Any] | None = None) -> bool:
        """Whether the client declared what `method` (one of `INPUT_METHODS`) with `params` needs."""
        ...

    async def relay_request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        """Ask the client; its result as wire JSON. `MCPError` when it refuses or cannot."""
        ...

    async def relay_log(self, params: dict[str, Any]) -> None:
        """Pass a `notifications/message` (its params) to the client, if its level lets it through."""
        ...

    def outside(self) -> Caller | None:
        """The same client outside this call (a handshake-era session's standalone channel), or
        None when it cannot be reached outside a call."""
        ...


#: The call a downstream request belongs to, when the transport knows (see the module docstring).
CALLER: contextvars.ContextVar[Caller | None] = contextvars.ContextVar("hub_caller", default=None)


class _Ambiguous(Exception):
    pass


#: What `Calls.attribute` says of a message whose call cannot be told.
AMBIGUOUS = object()


def result_model(method: str, params: Any) -> Any:
    """The SDK result model a server-to-client request's wire result is read as."""
    if method == "sampling/createMessage":
        wants_tools = getattr(params, "tools", None) or getattr(params, "tool_choice", None)
        return types.CreateMessageResultWithTools if wants_tools else types.CreateMessageResult
    if method == "elicitation/create":
        return types.ElicitResult
    return types.ListRootsResult


class Calls:
    """One downstream connection's calls in flight and the client sessions seen on it; its
    `callbacks()` answer the server's requests (see the module docstring)."""

    def __init__(self, server: str, on_asked: Callable[[Hashable | None], None] | None = None) -> None:
        self.server = server
        # Told of each request within a call: the session it went to (None: it could not be told).
        self.on_asked = on_asked or (lambda session: None)
        self._inflight: dict[int, Caller] = {}
        self._tokens = itertools.count()
        self.recent: OrderedDict[Hashable, Caller] = OrderedDict()
        self.roots: dict[str, Any] | None = None  # the last roots/list answer given on this connection

    @contextlib.contextmanager
    def running(self, caller: Caller | None) -> Iterator[None]:
        """A call of `caller`'s in flight on this connection for the block."""
        if caller is None:
            yield
            return
        token = next(self._tokens)
        self._inflight[token] = caller
        key = caller.session_key
        if key is not None:
            self.recent[key] = caller
            self.recent.move_to_end(key)
            while len(self.recent) > RECENT_SESSIONS:
                self.recent.popitem(last=False)
        var = CALLER.set(caller)
        try:
            yield
        finally:
            CALLER.reset(var)
            del self._inflight[token]

    def sessions(self) -> set[Hashable]:
        """The client sessions seen on this connection."""
        return set(self.recent)

    def attribute(self) -> Any:
        """The call a message read now belongs to (None: no call in flight; `AMBIGUOUS`)."""
        try:
            return self._in_call()
        except _Ambiguous:
            return AMBIGUOUS

    def _in_call(self) -> Caller | None:
        """The call a request belongs to (None: no call in flight); `_Ambiguous` if it cannot be told."""
        exact = CALLER.get()
        if exact is not None:
            return exact
        callers = list(self._inflight.values())
        if not callers:
            return None
        keys = {caller.session_key for caller in callers}
        if len(callers) == 1 or (len(keys) == 1 and None not in keys):
            return callers[-1]
        raise _Ambiguous

    def _outside(self, method: str | None) -> list[Caller]:
        """Clients to reach outside any call, newest first (those that can answer `method`)."""
        found = []
        for caller in reversed(self.recent.values()):
            outside = caller.outside()
            if outside is not None and (method is None or outside.can_ask(method)):
                found.append(outside)
        return found

    async def ask(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        """The answer to the server's request `method`, as wire JSON; `MCPError` for the server."""
        kind = INPUT_METHODS[method]
        try:
            caller = self._in_call()
        except _Ambiguous:
            self.on_asked(None)
            raise MCPError(
                types.INVALID_REQUEST,
                f"the hub cannot tell which of its clients this {method} request of server "
                f"{self.server!r} is for: calls of several client sessions are in flight; from now on "
                f"each session that can answer gets a connection of its own to {self.server!r}",
            ) from None
        if caller is not None:
            self.on_asked(caller.session_key)
        elif candidates := self._outside(method):
            caller = candidates[0]
        elif method == "roots/list" and self.roots is not None:
            return self.roots
        else:
            raise MCPError(
                types.INVALID_REQUEST,
                f"server {self.server!r} sent {method} outside any call, and no client of the hub that "
                f"declared {kind} can be asked outside a call now",
            )
        if not caller.can_ask(method, params):
            raise MCPError(
                types.INVALID_REQUEST,
                f"the hub's client that made this call did not declare the {kind} capability, so it "
                f"cannot answer {method}",
            )
        result = await caller.relay_request(method, params)
        if method == "roots/list":
            self.roots = result
        return result

    async def on_log(self, params: types.LoggingMessageNotificationParams) -> None:
        """A downstream log message: to the call it belongs to, or outside calls to the sessions
        that asked for a level."""
        wire = params.model_dump(by_alias=True, mode="json", exclude_none=True)
        try:
            caller = self._in_call()
        except _Ambiguous:
            log.debug("a downstream log message dropped: its call cannot be told", server=self.server)
            return
        targets = [caller] if caller is not None else [c for c in self._outside(None) if c.log_level]
        for target in targets:
            try:
                await target.relay_log(wire)
            except Exception as exc:  # a client that went away
                log.debug("a downstream log message not relayed", server=self.server, error=str(exc))

    def callbacks(self) -> dict[str, Any]:
        """The `ClientSession` keyword arguments that declare sampling, elicitation and roots and
        answer them (and take log messages) through this object."""

        async def answer(method: str, params: Any) -> Any:
            wire = params.model_dump(by_alias=True, mode="json", exclude_none=True) if params else {}
            try:
                result = await self.ask(method, wire)
                return result_model(method, params).model_validate(result, by_name=False)
            except MCPError as exc:
                return exc.error
            except Exception as exc:  # an answer the server could not read
                log.warning("a relayed request failed", server=self.server, method=method, error=str(exc))
                return types.ErrorData(
                    code=types.INTERNAL_ERROR, message=f"the hub could not relay {method}: {exc}"
                )

        async def sampling(ctx: ClientRequestContext, params: types.CreateMessageRequestParams) -> Any:
            return await answer("sampling/createMessage", params)

        async def elicitation(ctx: ClientRequestContext, params: types.ElicitRequestParams) -> Any:
            return await answer("elicitation/create", params)

        async def roots(ctx: ClientRequestContext) -> Any:
            return await answer("roots/list", None)

        return {
            "sampling_callback": sampling,
            "elicitation_callback": elicitation,
            "list_roots_callback": roots,
            "logging_callback": self.on_log,
        }


#: Rounds of `input_required` a downstream call may take before the hub gives up (the SDK's figure).
MAX_INPUT_ROUNDS = 10
STATE_ONLY_WAIT_S = (0.05, 0.1, 0.25)  # between retries of a result that carries only requestState


async def answer_inputs(caller: Caller | None, server: str, requests: Any) -> dict[str, Any]:
    """Answers to a 2026-07-28 downstream's `inputRequests` (key -> request), asked of `caller`
    all at once; `MCPError` naming the first that could not be answered."""
    if not isinstance(requests, dict):
        raise MCPError(types.INVALID_PARAMS, f"server {server!r} sent inputRequests that are not an object")
    answers: dict[str, Any] = {}
    failures: list[MCPError] = []

    async def one(key: str, request: Any) -> None:
        method = request.get("method") if isinstance(request, dict) else None
        params = request.get("params") if isinstance(request, dict) else None
        try:
            if method not in INPUT_METHODS:
                raise MCPError(
                    types.INVALID_PARAMS, f"server {server!r} asked for {method!r}, not an input request"
                )
            if caller is None:
                raise MCPError(
                    types.INVALID_REQUEST,
                    f"server {server!r} asked for {method} in a call no client of the hub made",
                )
            if not caller.can_ask(method, params if isinstance(params, dict) else None):
                kind = INPUT_METHODS[method]
                raise MCPError(
                    types.INVALID_REQUEST,
                    f"server {server!r} asked for {method}, but the hub's client did not declare the {kind} capability",
                )
            answers[key] = await caller.relay_request(method, params if isinstance(params, dict) else {})
        except MCPError as exc:
            failures.append(exc)

    async with anyio.create_task_group() as tg:
        for key, request in requests.items():
            tg.start_soon(one, key, request)
    if failures:
        raise failures[0]
    return answers


async def drive_input_required(
    session: Any,
    tool: str,
    arguments: dict[str, Any],
    progress: Any,
    caller: Caller | None,
    server: str,
) -> types.CallToolResult:
    """`tools/call` through the SDK `session` (which checks the result), with a 2026-07-28
    server's `input_required` rounds answered by `caller` as `hub.client.raw` answers them."""
    modern = session.protocol_version in MODERN_PROTOCOL_VERSIONS
    level = caller.log_level if caller is not None else None
    meta: Any = {LOG_LEVEL_META_KEY: level} if modern and level else None
    responses: dict[str, Any] | None = None
    state: str | None = None
    for rounds in range(MAX_INPUT_ROUNDS + 1):
        result = await session.call_tool(
            tool,
            arguments,
            progress_callback=progress,
            input_responses=responses,
            request_state=state,
            meta=meta,
            allow_input_required=True,
        )
        if not isinstance(result, types.InputRequiredResult):
            return result  # type: ignore[no-any-return]
        requests = result.input_requests or {}
        wire = {
            key: r.model_dump(by_alias=True, mode="json", exclude_none=True) for key, r in requests.items()
        }
        responses = None
        if wire:
            answers = await answer_inputs(caller, server, wire)
            responses = {
                key: result_model(wire[key]["method"], requests[key].params).model_validate(
                    answers[key], by_name=False
                )
                for key in answers
            }
        else:
            await anyio.sleep(STATE_ONLY_WAIT_S[min(rounds, len(STATE_ONLY_WAIT_S) - 1)])
        state = result.request_state
    raise MCPError(
        types.INTERNAL_ERROR, f"tool {tool!r} asked for input more than {MAX_INPUT_ROUNDS} times in one call"
    )
