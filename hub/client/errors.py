"""What goes wrong with a downstream server, and the one way it is told to a user.

`ServerUnavailable` (it could not be started or reached), `RemoteRefused` (a remote server
answered with an HTTP error: the status, the challenge and the fix, such as `hub servers login
NAME`) and `InvalidOutput` (a result against its tool's output schema) are raised by the
connection cache; `failure_message` turns any failure
of a request to a downstream server into the sentence a caller sees, the same in every plugin.
"""

from __future__ import annotations

from mcp.shared.exceptions import MCPError
from mcp.types import CONNECTION_CLOSED, REQUEST_TIMEOUT

from hub.errors import HubError

__all__ = ["InvalidOutput", "RemoteRefused", "ServerUnavailable", "failure_message"]


class ServerUnavailable(HubError):
    """A downstream server could not be started or reached; the message says which and why."""


class RemoteRefused(ServerUnavailable):
    """A remote server refused a request (HTTP 401, 403, 5xx ...); the message names the status,
    its `WWW-Authenticate` challenge and the fix. `needs_sign_in`: `hub servers login` is it."""

    def __init__(self, message: str, *, needs_sign_in: bool = False) -> None:
        super().__init__(message)
        self.needs_sign_in = needs_sign_in


class InvalidOutput(HubError):
    """A result that does not match its tool's output schema (`validate_output = true`)."""


def failure_message(server: str, what: str, exc: BaseException) -> str:
    """What a caller is told when `what` (``"echo"``, ``"reading file:///x"``) on downstream
    `server` failed with `exc`: a connection that closed says the server is restarted on the
    next call; an error the server answered keeps its message; the hub's own errors say
    themselves."""
    if isinstance(exc, MCPError):
        if exc.code == CONNECTION_CLOSED:
            return f"server {server!r} died during {what}; it is restarted on the next call"
        if exc.code == REQUEST_TIMEOUT:
            return f"server {server!r} did not answer {what} in time; the request was cancelled"
        return f"{server} {what}: {exc.message}"
    if isinstance(exc, HubError):
        return str(exc)
    return f"{server} {what}: {type(exc).__name__}: {exc}"
