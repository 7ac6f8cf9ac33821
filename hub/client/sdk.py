"""The one module of the hub's client side that touches the MCP SDK's private internals, each
behind a small function named for what it does, so an `mcp` upgrade touches one file here.

- `create_context_streams`: the memory streams the SDK's own transports use (the stdio client
  builds its session's streams with it);
- `stamp_request` and `send_raw_request`: a request stamped for the session's negotiated protocol
  version and sent on its dispatcher as plain JSON-RPC (`hub.client.raw.call_tool_raw`);
- `create_http_client`: the httpx client the SDK's HTTP transports expect;
- `negotiate`: the handshake, or the SDK's own `mode="auto"` negotiation (2026-07-28 when the
  server speaks it, else the handshake).
"""

from __future__ import annotations

from typing import Any

from mcp import ClientSession
from mcp.shared._context_streams import create_context_streams
from mcp.shared._httpx_utils import create_mcp_http_client as create_http_client

__all__ = ["create_context_streams", "create_http_client", "negotiate", "send_raw_request", "stamp_request"]


async def negotiate(session: ClientSession, protocol: str) -> None:
    """Agree on a protocol era with the server: `protocol` "handshake" sends `initialize`;
    "auto" probes `server/discover` first, as `mcp.Client(mode="auto")` does."""
    if protocol == "auto":
        from mcp.client._probe import negotiate_auto

        await negotiate_auto(session)
    else:
        await session.initialize()


def stamp_request(session: ClientSession, method: str, params: dict[str, Any], opts: dict[str, Any]) -> None:
    """Add to `params` (a 2026-era session: its `_meta` envelope) or to `opts` (the protocol
    version header) what the session adds to each request it sends itself."""
    data: dict[str, Any] = {"method": method, "params": params}
    session._stamp(data, opts)  # type: ignore[arg-type]


async def send_raw_request(
    session: ClientSession, method: str, params: dict[str, Any], opts: dict[str, Any]
) -> dict[str, Any]:
    """Send `method` on the session's dispatcher and return the result dict as the server sent it.
    `opts`: ``timeout``, ``on_progress``, ``headers`` (the dispatcher's own keys)."""
    result: dict[str, Any] = await session._dispatcher.send_raw_request(method, params, opts)  # type: ignore[arg-type]
    return result
