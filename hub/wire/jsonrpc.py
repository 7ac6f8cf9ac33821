"""Small JSON-RPC helpers both sides use: what a valid request id is, an error response, and the
shape of a progress callback (a caller's progress, from a tool up to a client, or from a
downstream server up to the tool that called it)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeAlias

__all__ = ["ProgressFn", "error_response", "valid_id"]

#: Where a caller's progress goes: (progress, total, message).
ProgressFn: TypeAlias = Callable[[float, float | None, str | None], Awaitable[None]]


def valid_id(value: Any) -> bool:
    """A JSON-RPC request id as MCP allows it: a string or an integer (not a boolean)."""
    return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


def error_response(request_id: Any, code: int, message: str) -> dict[str, Any]:
    """A JSON-RPC error response object."""
    return {"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": message}}
