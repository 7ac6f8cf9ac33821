"""The streamable-HTTP transport: `serve_http` serves a `hub.server.HubServer` with uvicorn, behind
what stands in front of the app: exposure rules, auth, DNS-rebinding checks and JSON-RPC hygiene,
as one ASGI middleware (`HttpGuard`).

- A host other than loopback is served only behind a bearer token (`check_http_exposure`).
- With a token, every request needs ``Authorization: Bearer <token>``; the scheme is matched
  case-insensitively (RFC 7235), the token exactly, in constant time.
- Without a token (so only on loopback addresses, any of them: 127.0.0.2 as well as 127.0.0.1),
  ``Host`` must name a loopback address or ``localhost`` and ``Origin``, when sent, must too: a web
  page on another site that resolves its name to 127.0.0.1 (DNS rebinding) is refused, as the MCP
  specification requires of local servers.
- A POST body that is not a well-formed JSON-RPC message gets the JSON-RPC error the spec names
  (`hub.server.hygiene`), with HTTP 400, instead of going unanswered. Bytes that are not UTF-8
  read as U+FFFD, as over stdio, so such a request is served alike on both.
"""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import json
import socket
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import anyio
import structlog
from mcp.server.transport_security import DEFAULT_MAX_REQUEST_BODY_SIZE

from hub.errors import ConfigError, ListenError
from hub.server.asking import ASKING
from hub.server.hygiene import MessageCheck

if TYPE_CHECKING:
    from hub.server.app import HubServer
    from hub.server.shortcuts import HttpShortcut

__all__ = [
    "HttpGuard",
    "ListenError",
    "bind_socket",
    "check_http_exposure",
    "http_app",
    "is_loopback",
    "serve_http",
]

log = structlog.get_logger("hub.server")


def is_loopback(host: str) -> bool:
    """`localhost` or a loopback IP address (any of 127.0.0.0/8, ::1)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_http_exposure(host: str, token: str | None) -> None:
    """A host other than loopback is served only behind a bearer token."""
    if not is_loopback(host) and not token:
        raise ConfigError(
            f"refusing to listen on {host}: a non-loopback host needs a bearer token "
            "([http] token in hub.toml, or HUB_HTTP_TOKEN)"
        )


def bind_socket(
    host: str, port: int, *, choose: str = "--port N or [http] port (0 picks a free one)"
) -> socket.socket:
    """A listening socket, or `ListenError` in one sentence naming the port and the fix (`choose`:
    how this command picks another port)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ListenError(
            f"cannot listen on {host}:{port}: {exc.strerror}; check [http] host / --host"
        ) from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        import errno

        if exc.errno == errno.EADDRINUSE:
            raise ListenError(
                f"port {port} on {host} is already in use: stop what listens there, or choose another "
                f"port with {choose}"
            ) from None
        raise ListenError(
            f"cannot listen on {host}:{port}: {exc.strerror}; choose another --host or --port"
        ) from None
    sock.setblocking(False)
    return sock


def _loopback_name(value: str) -> bool:
    """Whether a Host header value (``name[:port]``) names loopback."""
    try:
        host = urlsplit(f"//{value}").hostname
    except ValueError:
        return False
    return bool(host) and is_loopback(host or "")


def _loopback_origin(value: str) -> bool:
    try:
        parts = urlsplit(value)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname) and is_loopback(parts.hostname or "")


class HttpGuard:
    """The ASGI middleware described in the module docstring."""

    def __init__(
        self, app: Any, *, token: str | None, path: str, shortcut: HttpShortcut | None = None
    ) -> None:
        self.app = app
        self.shortcut = shortcut
        self.token = token.encode() if token else None
        self.path = path.rstrip("/") or "/"

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.lower(): v for k, v in scope.get("headers") or []}
        if self.token is not None:
            if not self._authorized(headers.get(b"authorization", b"")):
                await _reply(
                    send,
                    401,
                    {"error": "missing or wrong bearer token: send Authorization: Bearer <token>"},
                    [(b"www-authenticate", b"Bearer")],
                )
                return
        else:
            host = headers.get(b"host", b"").decode("latin-1")
            if not _loopback_name(host):
                await _reply(
                    send,
                    421,
                    {"error": f"Host {host!r} is not a loopback name; this hub serves only local clients"},
                )
                return
            origin = headers.get(b"origin")
            if origin is not None and not _loopback_origin(origin.decode("latin-1")):
                await _reply(
                    send,
                    403,
                    {
                        "error": f"Origin {origin.decode('latin-1')!r} is not allowed (DNS rebinding protection)"
                    },
                )
                return
        if scope.get("method") == "POST" and (scope.get("path", "").rstrip("/") or "/") == self.path:
            await self._checked_post(scope, receive, send)
            return
        await self.app(scope, receive, send)
        if self.shortcut is not None and scope.get("method") == "DELETE":
            self.shortcut.ended(headers.get(b"mcp-session-id"))  # its calls end with it, as the SDK's do

    def _authorized(self, supplied: bytes) -> bool:
        scheme, _, credentials = supplied.strip().partition(b" ")
        assert self.token is not None
        return scheme.lower() == b"bearer" and hmac.compare_digest(credentials.strip(), self.token)

    async def _checked_post(self, scope: Any, receive: Any, send: Any) -> None:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > DEFAULT_MAX_REQUEST_BODY_SIZE:
                await _reply(
                    send,
                    413,
                    {"error": f"request body over {DEFAULT_MAX_REQUEST_BODY_SIZE:,} bytes"},
                )
                return
            chunks.append(chunk)
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            # As over stdio (`hub.wire.fds.LineReader`): bytes that are not UTF-8 read as U+FFFD, so
            # the request is served (or answered with its id), and the SDK gets the same text.
            text = body.decode("utf-8", errors="replace")
            body = text.encode("utf-8")
        headers = {k.lower(): v for k, v in scope.get("headers") or []}
        if self.shortcut is not None and await self.shortcut.handle(body, headers, send):
            return
        # Without a session id, a handshake-era request other than initialize is told why it
        # cannot be served (the SDK says only "Missing session ID", without the request's id).
        parsed, answer = MessageCheck(track_initialize=b"mcp-session-id" not in headers).parse(text)
        if parsed is None:
            if answer is None:  # a malformed notification: accepted and dropped, as JSON-RPC says
                await _reply(send, 202, None)
            else:
                await _reply(send, 400, answer)
            return
        if self.shortcut is not None and getattr(parsed.message, "method", None) == "initialize":
            declared = (getattr(parsed.message, "params", None) or {}).get("capabilities")
            streamed = isinstance(declared, dict) and any(k in declared for k in ASKING)
            send = self.shortcut.watch_initialize(send, streamed=streamed)
        sent = False

        async def replay() -> Any:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


async def _reply(
    send: Any, status: int, payload: Any, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    body = b"" if payload is None else json.dumps(payload).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers + (extra or [])})
    await send({"type": "http.response.body", "body": body})


def http_app(server: HubServer, *, host: str, path: str, token: str | None) -> Any:
    """The streamable-HTTP ASGI app behind `HttpGuard` (auth, Origin/Host checks on
    every address served without a token, and answers to malformed JSON-RPC)."""
    from mcp.server.transport_security import TransportSecuritySettings

    # The guard checks Host and Origin for every loopback address, not only the three the SDK knows.
    security = TransportSecuritySettings(enable_dns_rebinding_protection=False)
    from hub.server.http_replies import PerRequestReplies
    from hub.server.http_replies import install as install_per_request_replies

    app = server.mcp.streamable_http_app(streamable_http_path=path, host=host, transport_security=security)
    install_per_request_replies(server.mcp)  # plain JSON for requests that need no SSE stream
    from hub.server.shortcuts import HttpShortcut

    streamed = server.streamed_sessions  # sessions whose calls may send requests to their client
    # Forwarded calls and cached lists, as JSON; a session's own list needs its client.
    shortcut = HttpShortcut(server.dispatch, server.mcp.session_manager, streamed, server.relay.http_clients)
    return HttpGuard(PerRequestReplies(app, streamed), token=token, path=path, shortcut=shortcut)


async def serve_http(
    hub_server: HubServer, *, host: str, port: int, path: str, token: str | None, ready: Any = None
) -> None:
    """Serve streamable HTTP until cancelled (SIGTERM / Ctrl-C are handled by the caller).
    A port that cannot be listened on is `ListenError`, one sentence."""
    import uvicorn

    check_http_exposure(host, token)
    sock = bind_socket(host, port)
    config = uvicorn.Config(
        http_app(hub_server, host=host, path=path, token=token),
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        # Per request, less work: httptools' C parser (a dependency) rather than h11, and no
        # X-Forwarded-* middleware, Server or Date header (a loopback MCP server uses none).
        http="httptools",
        proxy_headers=False,
        server_header=False,
        date_header=False,
        lifespan="on",
        timeout_graceful_shutdown=3,
    )
    server = uvicorn.Server(config)
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]  # the CLI owns signals
    done = anyio.Event()

    async def serve() -> None:
        # Shielded: on cancellation we ask uvicorn to stop and let it finish its own shutdown.
        with anyio.CancelScope(shield=True):
            try:
                await server.serve(sockets=[sock])
            finally:
                done.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(serve)
        try:
            while not server.started and not done.is_set():
                await anyio.sleep(0.02)
            if not server.started:
                raise ConfigError(f"could not listen on {host}:{port} (see the error above)")
            bound = server.servers[0].sockets[0].getsockname()
            log.info("serving streamable HTTP", url=f"http://{bound[0]}:{bound[1]}{path}", auth=bool(token))
            if ready is not None:
                ready(bound[1])
            await done.wait()
        finally:
            server.should_exit = True
            with anyio.CancelScope(shield=True), anyio.move_on_after(5):
                await done.wait()
