"""Answers to the two hot requests before the SDK server sees them: a `tools/call` of a
`ForwardedTool` (the proxy's tools) and a list request whose answer is cached.

Both are answered with one `json.loads` in and one `json.dumps` out, using `hub.fastpath.FastPath`
(its list answers kept as text, and `forward`, which runs the tool as the SDK path would).
Anything these classes are not sure of, malformed input included, goes to the SDK unchanged,
which answers it as before.

- `LineShortcut`: stdio and the shared process's sockets (`hub.transport.stdio.stdio_transport`).
- `HttpShortcut`: streamable HTTP, for sessions of the handshake era (`hub.transport.http`).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS, MODERN_PROTOCOL_VERSIONS

from hub.fastpath import LIST_METHODS, FastPath, ForwardedTool, ProgressFn
from hub.protocol import VERSION_KEY, problem_in, valid_id

__all__ = ["HttpShortcut", "LineShortcut"]


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


class LineShortcut:
    """One line-transport connection's way past the SDK server for its two hot requests.

    A stdio or shared-socket connection (`hub.transport.stdio.stdio_transport`) offers each
    incoming line to `take` before the SDK sees it. Taken, and answered here with one
    `json.loads` in and one `json.dumps` out, are:

    - `tools/call` of a `ForwardedTool`: run in `spawn` (the transport's task group), answered
      with `emit`; the caller's `progressToken` gets the tool's progress as notifications, and
      `notifications/cancelled` for it (`cancel`) cancels the call, which the downstream hears;
    - a list request whose answer `FastPath` holds as text for this protocol version: the
      answer is the cached text with the request's id. The first answer of each list comes from
      the SDK and is kept (`answered`), until the registry changes.

    Only well-formed requests of an initialized session are taken: a 2026-era request names
    its version in `_meta`; a handshake-era one needs this connection's `initialize` answered
    first (`answered` sees the negotiated version). Everything else, malformed input included,
    goes to the SDK, which answers it as before.
    """

    def __init__(
        self,
        fast: FastPath,
        emit: Callable[[str], Awaitable[None]],
        spawn: Callable[..., object],
        done: Callable[[Any], None],
    ) -> None:
        self.fast = fast
        self._emit = emit
        self._spawn = spawn
        self._done = done  # the transport's bookkeeping of unanswered requests
        self.legacy_version: str | None = None
        self._initialize_id: Any = None
        self._lists: dict[Any, tuple[str, str, int]] = {}  # request id -> answer to keep
        self._running: dict[Any, Any] = {}  # request id -> cancel scope of a forwarded call

    def _version(self, params: dict[str, Any]) -> str | None:
        meta = params.get("_meta")
        claimed = meta.get(VERSION_KEY) if isinstance(meta, dict) else None
        if claimed is None:
            return self.legacy_version
        if self.legacy_version is None and claimed in MODERN_PROTOCOL_VERSIONS:
            return str(claimed)
        return None  # the SDK says what is wrong with it

    def take(self, line: str) -> Any:
        """The id of the request in `line` if it was taken (it is answered here), else None:
        give the line to the SDK."""
        if '"tools/call"' not in line and '/list"' not in line:
            if '"initialize"' in line:
                self._note_initialize(line)
            return None
        try:
            message = json.loads(line)
        except (ValueError, RecursionError):
            return None
        if type(message) is not dict or message.get("jsonrpc") != "2.0":
            return None
        request_id = message.get("id")
        method = message.get("method")
        params = message.get("params", {})
        if not valid_id(request_id) or type(params) is not dict:
            return None
        version = self._version(params)
        if version is None:
            return None
        if method == "tools/call":
            name = params.get("name")
            tool = self.fast.registry.tools.get(name) if type(name) is str else None
            if not isinstance(tool, ForwardedTool) or problem_in(params) is not None:
                return None
            self.fast.shortcut_calls += 1
            self._spawn(self._call, request_id, tool, params, version)
            return request_id
        if method not in LIST_METHODS or params.get("cursor") is not None:
            return None
        text = self.fast.texts.get((method, version))
        if text is None:
            self._lists[request_id] = (method, version, self.fast.generation)
            return None
        self.fast.hits += 1
        self._spawn(self._reply, request_id, text)
        return request_id

    def _note_initialize(self, line: str) -> None:
        try:
            message = json.loads(line)
        except (ValueError, RecursionError):
            return
        if isinstance(message, dict) and message.get("method") == "initialize":
            self._initialize_id = message.get("id")

    def answered(self, request_id: Any, result: Any) -> None:
        """The SDK answered `request_id` with `result`: learn the negotiated version from the
        `initialize` answer, and keep list answers."""
        if request_id is None or not isinstance(result, dict):
            return
        if request_id == self._initialize_id:
            version = result.get("protocolVersion")
            if isinstance(version, str) and version not in MODERN_PROTOCOL_VERSIONS:
                self.legacy_version = version
            return
        keep = self._lists.pop(request_id, None)
        if keep is not None and "nextCursor" not in result:
            method, version, generation = keep
            if generation == self.fast.generation:
                self.fast.texts[(method, version)] = _dumps(result)

    def cancel(self, request_id: Any) -> bool:
        """`notifications/cancelled` for `request_id`: True if it was a call running here."""
        scope = self._running.pop(request_id, None)
        if scope is None:
            return False
        scope.cancel()
        self._done(request_id)
        return True

    async def _reply(self, request_id: Any, result_text: str) -> None:
        await self._emit(f'{{"jsonrpc":"2.0","id":{_dumps(request_id)},"result":{result_text}}}\n')
        self._done(request_id)

    async def _call(self, request_id: Any, tool: ForwardedTool, params: dict[str, Any], version: str) -> None:
        meta = params.get("_meta")
        token = meta.get("progressToken") if isinstance(meta, dict) else None
        progress: ProgressFn | None = None
        if token is not None:

            async def progress(done: float, total: float | None, message: str | None) -> None:
                note: dict[str, Any] = {"progressToken": token, "progress": done}
                if total is not None:
                    note["total"] = total
                if message is not None:
                    note["message"] = message
                await self._emit(
                    _dumps({"jsonrpc": "2.0", "method": "notifications/progress", "params": note}) + "\n"
                )

        result: dict[str, Any] | None = None
        with anyio.CancelScope() as scope:
            self._running[request_id] = scope
            try:
                result = await self.fast.forward(tool, params, request_id, progress)
            finally:
                self._running.pop(request_id, None)
        if result is not None and not scope.cancel_called:  # a cancelled request gets no answer
            await self._reply(request_id, _dumps(self.fast.stamp(version, result)))


class HttpShortcut:
    """Forwarded calls and cached lists of handshake-era streamable-HTTP sessions, answered as
    `application/json`.

    `HttpGuard` (after its checks) offers each POSTed body to `handle`. Taken is a `tools/call`
    of a `ForwardedTool` that asks for no progress, or a list request whose answer `FastPath`
    holds for the session's protocol version, in a session the SDK's session manager
    holds, with an `MCP-Protocol-Version` header of the handshake era and an `Accept` and
    `Content-Type` the SDK would serve as JSON; the answer carries the session id as the SDK's
    would. `notifications/cancelled` for a call running here cancels it (the downstream hears
    it). 2026-era requests, which the SDK checks header by header against the body, always take
    the SDK's path (with `FastPath`'s middleware).
    """

    def __init__(self, fast: FastPath, manager: Any) -> None:
        self.fast = fast
        self.manager = manager  # the SDK's StreamableHTTPSessionManager
        self._running: dict[tuple[bytes, Any], anyio.CancelScope] = {}

    def _session(self, headers: dict[bytes, bytes]) -> bytes | None:
        session = headers.get(b"mcp-session-id")
        if session is None:
            return None
        transport = self.manager._server_instances.get(session.decode("latin-1"))
        if (
            transport is None
            or transport.is_terminated
            or self.manager._session_owners.get(session.decode("latin-1"))
        ):
            return None
        return session

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
        accept = headers.get(b"accept", b"")
        if (
            version not in HANDSHAKE_PROTOCOL_VERSIONS
            or not (b"application/json" in accept or b"*/*" in accept)
            or not headers.get(b"content-type", b"").startswith(b"application/json")
        ):
            return False
        session = self._session(headers)
        if session is None:
            return False
        try:
            message = json.loads(body)
        except (ValueError, RecursionError):
            return False
        if type(message) is not dict or message.get("jsonrpc") != "2.0":
            return False
        request_id, params, method = message.get("id"), message.get("params", {}), message.get("method")
        if not valid_id(request_id) or type(params) is not dict:
            return False
        meta = params.get("_meta")
        if isinstance(meta, dict) and (meta.get("progressToken") is not None or VERSION_KEY in meta):
            return False  # progress needs the SDK's SSE stream
        if method == "tools/call":
            return await self._call(request_id, params, version, session, send)
        if method not in LIST_METHODS or params.get("cursor") is not None:
            return False
        text = self.fast.list_text(method, version)
        if text is None:
            return False  # the SDK answers, and FastPath keeps the answer for the next time
        self.fast.hits += 1
        await _respond(
            send, 200, f'{{"jsonrpc":"2.0","id":{_dumps(request_id)},"result":{text}}}'.encode(), session
        )
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
        tool = self.fast.registry.tools.get(name) if type(name) is str else None
        if not isinstance(tool, ForwardedTool) or problem_in(params) is not None:
            return False
        key = (session, request_id)
        self.fast.shortcut_calls += 1
        result: dict[str, Any] | None = None
        with anyio.CancelScope() as scope:
            self._running[key] = scope
            try:
                result = await self.fast.forward(tool, params, request_id, None)
            finally:
                self._running.pop(key, None)
        if result is None or scope.cancel_called:  # cancelled: the request gets no answer
            await _respond(send, 202, b"", session)
            return True
        answer = f'{{"jsonrpc":"2.0","id":{_dumps(request_id)},"result":{_dumps(self.fast.stamp(version, result))}}}'
        await _respond(send, 200, answer.encode(), session)
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
        params = message.get("params") if type(message) is dict else None
        if message.get("method") != "notifications/cancelled" or type(params) is not dict or "id" in message:
            return False
        scope = self._running.pop((session, params.get("requestId")), None)
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
