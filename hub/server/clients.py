"""Which client session a request came on, for what the hub keeps per session (the tools a
session loaded with `find_tools(load=true)`, `hub.server.discovery`).

- A line transport (stdio, a shared-process socket: `hub.server.stdio`) gives each connection a
  `LineClient`, put on every message it hands the SDK (`ctx.request` in handlers) and given to
  its shortcut; the connection is the session, in both protocol eras.
- A handshake-era streamable-HTTP session is keyed by its `mcp-session-id`.
- Another handshake-era connection (an in-memory client) is keyed by the SDK connection.
- A 2026-07-28 request that came any other way (streamable HTTP, in memory) has no session:
  each request stands alone.

`CURRENT` holds the session of the request being served (set by `Sessions.middleware`), so a
tool handler and the listen streams opened by a request can tell whose they are.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Hashable
from contextvars import ContextVar
from typing import Any

from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from hub.server.sdk import connection_of

__all__ = ["CURRENT", "ClientKey", "LineClient", "client_of", "http_client", "label_of", "on_close"]

ClientKey = Hashable
CURRENT: ContextVar[ClientKey | None] = ContextVar("hub_client", default=None)
_line_ids = itertools.count(1)


class LineClient:
    """One connection of a line transport: compared by identity; `close()` tells whoever kept
    something of it (`on_close`), once."""

    def __init__(self) -> None:
        self.label = f"line-{next(_line_ids)}"
        self.on_close: list[Callable[[LineClient], None]] = []

    def close(self) -> None:
        callbacks, self.on_close = self.on_close, []
        for callback in callbacks:
            callback(self)

    def __repr__(self) -> str:
        return f"LineClient({self.label})"


def http_client(session_id: str) -> ClientKey:
    """The key of the streamable-HTTP session `session_id`."""
    return ("http", session_id)


def client_of(ctx: Any) -> ClientKey | None:
    """The session of a request context (see the module docstring), or None."""
    request = ctx.request
    if isinstance(request, LineClient):
        return request
    headers = getattr(request, "headers", None)
    if headers is not None:
        session_id = headers.get("mcp-session-id")
        return http_client(session_id) if session_id else None
    if ctx.protocol_version in MODERN_PROTOCOL_VERSIONS:
        return None
    connection = connection_of(ctx.session)
    return ("connection", id(connection)) if connection is not None else None


def on_close(client: ClientKey, session: Any, callback: Callable[[ClientKey], None]) -> None:
    """Call `callback(client)` when `client`'s session ends (`session`: the SDK session of one of
    its requests, `ctx.session`)."""
    if isinstance(client, LineClient):
        client.on_close.append(callback)
        return
    connection = connection_of(session)
    if connection is not None:
        connection.exit_stack.callback(callback, client)


def label_of(client: ClientKey) -> str:
    """A short name for `client` in hub://status."""
    if isinstance(client, LineClient):
        return client.label
    if isinstance(client, tuple) and client[0] == "http":
        return f"http-{str(client[1])[:12]}"
    return f"connection-{hash(client) % 10_000:04d}"
