"""Answers to the two hot requests before the SDK server sees them: a `tools/call` of a tool
whose handler returns a raw result (`Tool.returns_raw`: the proxy's tools) and a list request
whose answer is cached.

Both are answered with one `json.loads` in and one `json.dumps` out, using
`hub.server.dispatch.Dispatch` (its list answers kept as text, and `forward`, which runs the
tool as the SDK path would). Anything these classes are not sure of, malformed input included,
goes to the SDK unchanged, which answers it as before.

- `LineShortcut`: stdio and the shared process's sockets (`hub.server.stdio.stdio_transport`).
- `HttpShortcut`: streamable HTTP, for sessions of the handshake era (`hub.server.http`).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import anyio
import structlog
from mcp.shared.exceptions import MCPError
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS, MODERN_PROTOCOL_VERSIONS

from hub.plugin.items import Tool
from hub.server.asking import ClientState, Inbound, LinePusher
from hub.server.dispatch import Dispatch, well_formed
from hub.server.hygiene import problem_in
from hub.server.sdk import counting_request, http_session, session_owned
from hub.wire.envelope import CAPABILITIES_KEY, CLIENT_INFO_KEY, LOG_LEVEL_KEY, VERSION_KEY
from hub.wire.jsonrpc import ProgressFn, valid_id
from hub.wire.lines import utf8

REQUEST_CANCELLED = -32800  # mcp.server.streamable_http's (not imported: it loads Starlette)

__all__ = ["HttpShortcut", "LineShortcut"]

log = structlog.get_logger("hub.server")


async def _forward(
    dispatch: Dispatch,
    running: dict[Any, anyio.CancelScope],
    key: Any,
    tool: Tool,
    params: dict[str, Any],
    request_id: Any,
    progress: ProgressFn | None,
    inbound: Inbound | None = None,
) -> dict[str, Any] | None:
    """`dispatch.forward`, cancellable through `running[key]` while it runs; None if cancelled.
    An `MCPError` (a retry whose requestState is unknown) is returned as ``{"error": ...}``."""
    with anyio.CancelScope() as scope:
        running[key] = scope
        try:
            result = await dispatch.forward(tool, params, request_id, progress, None, inbound)
        except MCPError as exc:
            result = {"error": exc.error.model_dump(mode="json", exclude_none=True)}
        finally:
            running.pop(key, None)
    return None if scope.cancel_called else result


def _request(text: str | bytes) -> tuple[Any, Any, dict[str, Any]] | None:
    """(id, method, params) of a request as the SDK would take it, else None (the SDK answers
    it: a malformed or refused request, one carrying `result` or `error`, a lone surrogate in
    the id or params, nesting too deep)."""
    try:
        message = json.loads(text)
    except (ValueError, RecursionError):
        return None
    if (
        type(message) is not dict
        or message.get("jsonrpc") != "2.0"
        or "result" in message
        or "error" in message
    ):
        return None
    request_id, params = message.get("id"), message.get("params", {})
    if not valid_id(request_id) or type(params) is not dict or problem_in(message) is not None:
        return None
    return request_id, message.get("method"), params


def _result_text(dispatch: Dispatch, tool: Tool, version: str, result: dict[str, Any]) -> str:
    """A forwarded call's result as JSON text for `version`; one that is not JSON (a plugin's
    bug) becomes an error result, so the request is still answered."""
    try:
        return _dumps(dispatch.stamp(version, result))
    except (TypeError, ValueError) as exc:
        log.error("a forwarded tool's result is not JSON", tool=tool.name, error=str(exc))
        text = f"{tool.name} returned a result that is not JSON ({exc}); the plugin serving it has a bug"
        return _dumps({"content": [{"type": "text", "text": text}], "isError": True})


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


class LineShortcut:
    """One line-transport connection's way past the SDK server for its two hot requests.

    A stdio or shared-socket connection (`hub.server.stdio.stdio_transport`) offers each
    incoming line to `take` before the SDK sees it. Taken, and answered here with one
    `json.loads` in and one `json.dumps` out, are:

    - `tools/call` of a raw-result tool (`Tool.returns_raw`): run in `spawn` (the transport's task group), answered
      with `emit`; the caller's `progressToken` gets the tool's progress as notifications, and
      `notifications/cancelled` for it (`cancel`) cancels the call, which the downstream hears;
    - a list request whose answer `Dispatch` holds for this protocol version (`list_text`): the
      answer is the cached text with the request's id. The first answer of each list comes from
      the SDK, through `Dispatch`'s middleware, which keeps it until the registry changes.

    Only well-formed requests of an initialized session are taken, in the era the first request
    the SDK got fixed (`saw_request`, as the SDK fixes it): a 2026-era request with its full
    envelope in `_meta`; a handshake-era one once this connection's `initialize` was answered
    (`answered` sees the negotiated version). Everything else, malformed input included, goes
    to the SDK, which answers it as before.
    """

    def __init__(
        self,
        dispatch: Dispatch,
        emit: Callable[..., Awaitable[None]],
        spawn: Callable[..., object],
        done: Callable[[Any], None],
        state: ClientState | None = None,
        pusher: LinePusher | None = None,
    ) -> None:
        self.dispatch = dispatch
        self._emit = emit
        self._spawn = spawn
        self._done = done  # the transport's bookkeeping of unanswered requests
        self.state = state or ClientState()  # the connection's client (`hub.server.asking`)
        self.pusher = pusher
        self.era: str | None = None  # "legacy" or "modern", fixed by the first request
        self.legacy_version: str | None = None
        self._initialize_id: Any = None
        self._running: dict[Any, Any] = {}  # request id -> cancel scope of a forwarded call

    def _version(self, params: dict[str, Any]) -> str | None:
        """The protocol version to answer `params` in, or None: the SDK answers it (it fixes a
        connection's era with its first request, and checks a 2026-era envelope in full)."""
        meta = params.get("_meta")
        claimed = meta.get(VERSION_KEY) if isinstance(meta, dict) else None
        if self.era == "legacy":  # any 2026-era envelope (a null version too) is the SDK's to refuse
            return self.legacy_version if not (isinstance(meta, dict) and VERSION_KEY in meta) else None
        if (
            self.era == "modern"
            and isinstance(meta, dict)
            and claimed in MODERN_PROTOCOL_VERSIONS
            and CAPABILITIES_KEY in meta
            and isinstance(meta.get(CLIENT_INFO_KEY), dict)
        ):
            return str(claimed)
        return None

    def saw_request(self, method: str, request_id: Any, params: dict[str, Any] | None) -> None:
        """A request the SDK gets (after `MessageCheck`): the first fixes the connection's era,
        as the SDK fixes it; the `initialize` id is kept to learn the negotiated version."""
        if method == "initialize":
            self._initialize_id = request_id
        if self.era is None:
            meta = params.get("_meta") if params else None
            self.era = "modern" if isinstance(meta, dict) and VERSION_KEY in meta else "legacy"

    def take(self, line: str) -> Any:
        """The id of the request in `line` if it was taken (it is answered here), else None:
        give the line to the SDK."""
        if self.era is None or (self.era == "legacy" and self.legacy_version is None):
            return None  # until the SDK has fixed the era (and, for the handshake era, the version)
        if '"tools/call"' not in line and '/list"' not in line:
            return None
        request = _request(line)
        if request is None:
            return None
        request_id, method, params = request
        version = self._version(params)
        if version is None:
            return None
        if method == "tools/call":
            name = params.get("name")
            tool = self.dispatch.registry.tools.get(name) if type(name) is str else None
            if tool is None or not tool.takes_shortcut() or not well_formed(params):
                return None
            self.dispatch.shortcut_calls += 1
            self._spawn(self._call, request_id, tool, params, version)
            return request_id
        text = self.dispatch.list_answer(method, params, version, self.state)
        if text is None:
            return None
        self._spawn(self._reply, request_id, text)
        return request_id

    def answered(self, request_id: Any, result: Any) -> None:
        """The SDK answered `request_id` (`result`, None for an error): the answer to this
        connection's `initialize` fixes the handshake-era version the shortcut answers in."""
        if (
            self.legacy_version is not None
            or request_id != self._initialize_id
            or not isinstance(result, dict)
        ):
            return
        version = result.get("protocolVersion")
        if isinstance(version, str) and version not in MODERN_PROTOCOL_VERSIONS:
            self.legacy_version = version

    def cancel(self, request_id: Any) -> bool:
        """`notifications/cancelled` for `request_id`: True if it was a call running here."""
        scope = self._running.pop(request_id, None) if valid_id(request_id) else None
        if scope is None:
            return False
        scope.cancel()
        self._done(request_id)
        return True

    async def _reply(self, request_id: Any, result_text: str) -> None:
        await self._emit(
            f'{{"jsonrpc":"2.0","id":{_dumps(request_id)},"result":{result_text}}}\n', request_id
        )
        self._done(request_id)

    async def _call(self, request_id: Any, tool: Tool, params: dict[str, Any], version: str) -> None:
        meta = params.get("_meta")
        token = meta.get("progressToken") if isinstance(meta, dict) else None
        progress: ProgressFn | None = None
        if type(token) is str or type(token) is int:  # a token of another type gets none (as from the SDK)

            async def progress(done: float, total: float | None, message: str | None) -> None:
                note: dict[str, Any] = {"progressToken": token, "progress": done}
                if total is not None:
                    note["total"] = total
                if message is not None:
                    note["message"] = message
                await self._emit(
                    _dumps({"jsonrpc": "2.0", "method": "notifications/progress", "params": note}) + "\n"
                )

        inbound = self._inbound(params, meta)
        result = await _forward(
            self.dispatch, self._running, request_id, tool, params, request_id, progress, inbound
        )
        if result is None:  # a cancelled request gets no answer
            return
        if "error" in result and "content" not in result:
            await self._emit(_dumps({"jsonrpc": "2.0", "id": request_id, "error": result["error"]}) + "\n")
            self._done(request_id)
            return
        text = _result_text(self.dispatch, tool, version, result)
        await self._reply(request_id, text)

    def _inbound(self, params: dict[str, Any], meta: Any) -> Inbound:
        """The calling client, as its `ToolCall` reaches it (`hub.server.asking`)."""
        state = self.state
        if self.era == "modern":
            declared = meta.get(CAPABILITIES_KEY) if isinstance(meta, dict) else None
            level = meta.get(LOG_LEVEL_KEY) if isinstance(meta, dict) else None
            return Inbound(
                True,
                declared if isinstance(declared, dict) else {},
                level if isinstance(level, str) else None,
                state,
                None,
                self.pusher.notify if self.pusher is not None else None,
            )
        return Inbound(
            False,
            state.capabilities,
            state.log_level,
            state,
            self.pusher.request if self.pusher is not None else None,
            self.pusher.notify if self.pusher is not None else None,
        )


class HttpShortcut:
    """Forwarded calls and cached lists of handshake-era streamable-HTTP sessions, answered as
    `application/json`.

    `HttpGuard` (after its checks) offers each POSTed body to `handle`. Taken is a `tools/call`
    of a raw-result tool (`Tool.returns_raw`) that asks for no progress, or a list request whose answer `Dispatch`
    holds for the session's protocol version, in a session the SDK's session manager
    holds, with an `MCP-Protocol-Version` header of the handshake era and an `Accept` and
    `Content-Type` the SDK would serve as JSON; the answer carries the session id as the SDK's
    would. `notifications/cancelled` for a call running here cancels it (the downstream hears
    it). 2026-era requests, which the SDK checks header by header against the body, always take
    the SDK's path (with `Dispatch`'s middleware).
    """

    def __init__(
        self,
        dispatch: Dispatch,
        manager: Any,
        streamed: set[str] | None = None,
        clients: Mapping[str, ClientState] | None = None,
    ) -> None:
        self.dispatch = dispatch
        self.manager = manager  # the SDK's StreamableHTTPSessionManager
        # Each session's client, by session id, once the SDK path has seen it (`ClientRelay`).
        self.clients: Mapping[str, ClientState] = clients if clients is not None else {}
        self._running: dict[tuple[bytes, Any], anyio.CancelScope] = {}
        self.ready: set[bytes] = set()  # sessions whose initialize succeeded
        # Sessions whose calls may send their client requests or log messages: the SDK's path,
        # on an SSE stream (`hub.server.app.HubServer.streamed_sessions`).
        self.streamed = streamed if streamed is not None else set()

    def _session(self, headers: dict[bytes, bytes]) -> Any:
        """The SDK transport of the request's session, if this shortcut may serve it: a session
        whose `initialize` succeeded (`watch_initialize`), not ended, expiring or owned."""
        session = headers.get(b"mcp-session-id")
        if session is None or session not in self.ready:
            return None
        name = session.decode("latin-1")
        if name in self.streamed:
            return None
        transport = http_session(self.manager, name)
        if transport is None:
            self.ready.discard(session)
            return None
        idle = transport.idle_scope
        if transport.is_terminated or session_owned(self.manager, name) or (idle and idle.cancel_called):
            return None
        return transport

    def ended(self, session: bytes | None) -> None:
        """After a DELETE: if `session` is over, cancel the calls it has running here."""
        if session is None or session not in self.ready:
            return
        transport = http_session(self.manager, session.decode("latin-1"))
        if transport is not None and not transport.is_terminated:
            return  # refused: the session goes on
        self.ready.discard(session)
        self.streamed.discard(session.decode("latin-1"))
        for key in [key for key in self._running if key[0] == session]:
            self._running.pop(key).cancel()

    def watch_initialize(
        self, send: Callable[..., Awaitable[None]], *, streamed: bool = False
    ) -> Callable[..., Awaitable[None]]:
        """`send` for an `initialize` POST: the session it opens is served here once its
        answer is a result (not an error), unless it is `streamed` (its client declared what a
        call may ask of it: those calls keep the SDK's SSE stream)."""
        session: list[bytes] = []

        async def watching(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                session.extend(v for k, v in message.get("headers") or [] if k.lower() == b"mcp-session-id")
                if streamed and session:
                    self.streamed.add(session[0].decode("latin-1"))
            elif message["type"] == "http.response.body" and session:
                body = message.get("body", b"")
                if b'"result"' in body and b'"protocolVersion"' in body:
                    self.ready.add(session[0])
            await send(message)

        return watching

    async def handle(
        self, body: bytes, headers: dict[bytes, bytes], send: Callable[..., Awaitable[None]]
    ) -> bool:
        """Whether `body` was answered here (on `send`); False: let the SDK answer it."""
        if b'"tools/call"' in body or b'/list"' in body:
            return await self._request(body, headers, send)
        if b'"notifications/cancelled"' in body:
            return await self._cancel(body, headers, send)
        return False

    async def _request(
        self, body: bytes, headers: dict[bytes, bytes], send: Callable[..., Awaitable[None]]
    ) -> bool:
        version = headers.get(b"mcp-protocol-version", b"").decode("latin-1")
        if version not in HANDSHAKE_PROTOCOL_VERSIONS or not _json_request(headers):
            return False
        transport = self._session(headers)
        if transport is None:
            return False
        session = headers[b"mcp-session-id"]
        request = _request(body)
        if request is None:
            return False
        request_id, method, params = request
        meta = params.get("_meta")
        if isinstance(meta, dict) and (meta.get("progressToken") is not None or VERSION_KEY in meta):
            return False  # progress needs the SDK's SSE stream
        if method == "tools/call":
            with counting_request(transport):
                return await self._call(request_id, params, version, session, send)
        client = self.clients.get(session.decode("latin-1"))  # a session's own list: tools it loaded
        text = self.dispatch.list_answer(method, params, version, client)
        if text is None:
            return False
        with counting_request(transport):
            answer = utf8(f'{{"jsonrpc":"2.0","id":{_dumps(request_id)},"result":{text}}}')
            await _respond(send, 200, answer, session)
        return True

    async def _call(
        self,
        request_id: Any,
        params: dict[str, Any],
        version: str,
        session: bytes,
        send: Callable[..., Awaitable[None]],
    ) -> bool:
        name = params.get("name")
        tool = self.dispatch.registry.tools.get(name) if type(name) is str else None
        if tool is None or not tool.takes_shortcut() or not well_formed(params):
            return False
        key = (session, request_id)
        self.dispatch.shortcut_calls += 1
        result = await _forward(self.dispatch, self._running, key, tool, params, request_id, None)
        if result is None:  # cancelled: answered as the SDK answers it in this era
            cancelled = {"code": REQUEST_CANCELLED, "message": "Request cancelled"}
            answer = _dumps({"jsonrpc": "2.0", "id": request_id, "error": cancelled})
            await _respond(send, 200, utf8(answer), session)
            return True
        text = _result_text(self.dispatch, tool, version, result)
        answer = f'{{"jsonrpc":"2.0","id":{_dumps(request_id)},"result":{text}}}'
        await _respond(send, 200, utf8(answer), session)
        return True

    async def _cancel(
        self, body: bytes, headers: dict[bytes, bytes], send: Callable[..., Awaitable[None]]
    ) -> bool:
        session = headers.get(b"mcp-session-id")
        if session is None or not self._running:
            return False
        try:
            message = json.loads(body)
        except (ValueError, RecursionError):
            return False
        if type(message) is not dict or message.get("method") != "notifications/cancelled" or "id" in message:
            return False
        params = message.get("params")
        cancelled = params.get("requestId") if type(params) is dict else None
        if not valid_id(cancelled):
            return False
        scope = self._running.pop((session, cancelled), None)
        if scope is None:
            return False
        scope.cancel()
        await _respond(send, 202, b"", session)
        return True


async def _respond(send: Callable[..., Awaitable[None]], status: int, body: bytes, session: bytes) -> None:
    headers = [(b"content-length", str(len(body)).encode()), (b"mcp-session-id", session)]
    if body:
        headers.insert(0, (b"content-type", b"application/json"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _json_request(headers: dict[bytes, bytes]) -> bool:
    """Content-Type and Accept as the SDK requires of a request it answers as JSON."""
    content_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
    accepted = {part.split(b";")[0].strip().lower() for part in headers.get(b"accept", b"").split(b",")}
    return content_type == b"application/json" and bool(
        accepted & {b"application/json", b"application/*", b"*/*"}
    )
