"""Streamable HTTP without an SSE stream when a request needs none.

The SDK's streamable HTTP transport answers every POSTed request either as an SSE stream (room
for progress notifications and server-to-client requests before the response) or, in
`json_response` mode, as one `application/json` body, and it picks one mode per app. An SSE
reply costs an `EventSourceResponse` with its own tasks, a priming event and stream plumbing per
request, and most requests need none of it.

Here the mode is picked per request: `PerRequestReplies` (ASGI, in front of the SDK's app) looks
at the POSTed message, and a request that asked for no progress (no `_meta.progressToken`) and
is not `initialize` or `subscriptions/listen` is answered as plain JSON (unless its session's
calls may send requests or log messages to the client: `streamed`); everything else keeps
the SSE stream. The session's transport reads its mode from a context variable set for the
request (`install(server)`), so concurrent requests of one session each get their own mode.
A JSON-answered request cannot receive server-to-client requests (the SDK raises
`NoBackChannelError` for them, as in its own JSON mode).
"""

from __future__ import annotations

import contextvars
import json
from typing import Any

__all__ = ["PerRequestReplies", "install", "wants_stream"]

_JSON_REPLY: contextvars.ContextVar[bool] = contextvars.ContextVar("hub_json_reply", default=False)
STREAMED_METHODS = frozenset({"initialize", "subscriptions/listen"})


def wants_stream(message: Any, streamed_session: bool = False) -> bool:
    """Whether a POSTed JSON-RPC message should be answered on an SSE stream: `streamed_session`
    is a session whose calls may send their client requests or log messages."""
    if not isinstance(message, dict) or "id" not in message or message.get("method") in STREAMED_METHODS:
        return True
    if streamed_session and message.get("method") in ("tools/call", "prompts/get", "resources/read"):
        return True
    params = message.get("params")
    meta = params.get("_meta") if isinstance(params, dict) else None
    return isinstance(meta, dict) and meta.get("progressToken") is not None


def _mode(self: Any) -> bool:
    return _JSON_REPLY.get()


def _ignore(self: Any, value: bool) -> None:  # the SDK sets it once in __init__; the request decides
    pass


def install(server: Any) -> None:
    """Make each streamable-HTTP session transport of `server` (an SDK `Server` whose
    `streamable_http_app()` was built) read its reply mode from the current request."""
    from mcp.server.streamable_http import StreamableHTTPServerTransport

    from hub.server.sdk import on_admit

    class _PerRequestTransport(StreamableHTTPServerTransport):
        is_json_response_enabled = property(_mode, _ignore)  # type: ignore[assignment]

    def adapt(transport: Any) -> None:
        transport.__class__ = _PerRequestTransport

    on_admit(server.session_manager, adapt)


class PerRequestReplies:
    """ASGI: sets the reply mode of each POSTed request, then hands it to the SDK's app."""

    def __init__(self, app: Any, streamed: set[str] | None = None) -> None:
        self.app = app
        self.streamed = streamed if streamed is not None else set()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        chunks = []
        while True:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, _replay([message], receive), send)
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        session = next((v for k, v in scope.get("headers") or [] if k.lower() == b"mcp-session-id"), None)
        streamed = session is not None and session.decode("latin-1") in self.streamed
        try:
            stream = wants_stream(json.loads(body), streamed)
        except ValueError:
            stream = True  # the SDK answers the parse error
        token = _JSON_REPLY.set(not stream)
        try:
            await self.app(
                scope, _replay([{"type": "http.request", "body": body, "more_body": False}], receive), send
            )
        finally:
            _JSON_REPLY.reset(token)


def _replay(messages: list[Any], receive: Any) -> Any:
    async def replayed() -> Any:
        if messages:
            return messages.pop(0)
        return await receive()

    return replayed
