"""The one module of the hub's server side that touches the MCP SDK's private internals, each
behind a small function named for what it does, so an `mcp` upgrade touches one file here.

- `create_context_streams`: the memory streams the SDK's own transports use;
- `connection_of`: the connection behind a request's session proxy (its `initialize_accepted`
  and `exit_stack` are public on the connection; reaching it is not);
- `request_client` and `notify_client`: a request or notification to the client as wire JSON, on a
  request's own channel (its stream on streamable HTTP) or the connection's standalone one,
  without the SDK's typed models (the relay passes what a downstream server sent);
- the streamable-HTTP session manager's tables and a session transport's request count
  (`http_session`, `session_owned`, `counting_request`, `on_admit`), for the HTTP shortcut and
  the per-request reply mode.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from typing import Any

import anyio
from mcp.shared._context_streams import create_context_streams

__all__ = [
    "connection_of",
    "counting_request",
    "create_context_streams",
    "http_session",
    "notify_client",
    "on_admit",
    "request_client",
    "session_owned",
]


def connection_of(session: Any) -> Any:
    """The SDK connection behind a request context's session, or None (an in-memory session)."""
    return getattr(session, "_connection", None)


def _channel(session: Any, in_request: bool) -> Any:
    return session._request_outbound if in_request else session._connection.outbound


async def request_client(
    session: Any, method: str, params: dict[str, Any], *, in_request: bool
) -> dict[str, Any]:
    """Send `method` to the client of `session` (a request's `ServerSession`), on the request's own
    channel or (`in_request=False`) the connection's standalone one; the result as sent.
    Raises `MCPError` for an error answer, `NoBackChannelError` where requests cannot go."""
    result: dict[str, Any] = await _channel(session, in_request).send_raw_request(method, params, None)
    return result


async def notify_client(session: Any, method: str, params: dict[str, Any], *, in_request: bool) -> None:
    """Send the notification `method` to the client of `session` (see `request_client`)."""
    await _channel(session, in_request).notify(method, params, None)


def http_session(manager: Any, session_id: str) -> Any:
    """The streamable-HTTP session transport `manager` holds for `session_id`, or None."""
    return manager._server_instances.get(session_id)


def session_owned(manager: Any, session_id: str) -> bool:
    """Whether the session is owned (bound to an authenticated principal) by `manager`."""
    return bool(manager._session_owners.get(session_id))


def on_admit(manager: Any, adapt: Callable[[Any], None]) -> None:
    """Call `adapt(transport)` on every session transport `manager` admits from now on."""
    admit = manager._admit_session

    def admit_session(requestor: Any) -> Any:
        transport = admit(requestor)
        if transport is not None:
            adapt(transport)
        return transport

    manager._admit_session = admit_session


@contextlib.contextmanager
def counting_request(transport: Any) -> Iterator[None]:
    """A request of `transport`'s session answered outside the SDK, counted as the SDK counts the
    ones it serves (`StreamableHTTPServerTransport.handle_request`): the session does not idle
    out meanwhile, and its idle time starts again when the last one is answered."""
    idle, timeout = transport.idle_scope, transport._idle_timeout
    if idle is None or timeout is None:
        yield
        return
    transport._requests_in_flight += 1
    idle.deadline = math.inf
    try:
        yield
    finally:
        transport._requests_in_flight -= 1
        if not transport._requests_in_flight:
            idle.deadline = anyio.current_time() + timeout
