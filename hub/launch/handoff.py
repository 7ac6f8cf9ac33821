"""How a bridge hands its client to the shared process: the client's own stdin and stdout.

A bridge (`hub.launch.bridge`) that copied every message between its client and the shared process
would put one more process, and two more wake-ups, in every call. Instead it passes its stdin
and stdout over the Unix socket (`SCM_RIGHTS`, `send_handoff`) and the shared process serves
the client on them directly (`hub.transport.stdio.serve_fds`), as an in-process hub would.

The socket stays open as the control channel, one line per event, shared process to bridge:

- ``R <id>``: a request was read; ``A <id>``: it was answered (or cancelled);
- ``K <line>``: a line a new process would need: `initialize`, `notifications/initialized`,
  `subscriptions/listen`, and cancellations (which close a subscription);
- ``B``: the session is over (the client closed its input and every answer was written);
- ``S``: the process is being stopped (`hub stop`): the bridge ends the session and exits instead
  of starting another process.

With these the bridge knows, if the shared process dies, which requests to answer with an error
and what to replay to a new one. The bridge closing the socket (its client stopped it) cancels
the session's calls. This module is imported by the bridge: standard library only.
"""

from __future__ import annotations

import json
import socket
from typing import Any

__all__ = ["HANDOFF", "decode_event", "encode_event", "send_handoff"]

HANDOFF = "hub/handoff"


def send_handoff(sock: socket.socket, message: dict[str, Any], fds: list[int]) -> None:
    """Send the handoff line with `fds` (the client's stdin and stdout) attached."""
    data = json.dumps({HANDOFF: message}).encode() + b"\n"
    sent = socket.send_fds(sock, [data], fds)
    if sent < len(data):
        sock.sendall(data[sent:])


def encode_event(kind: str, value: Any) -> bytes:
    """One control line: ``R``/``A`` with an id, ``K`` with a line, ``B`` or ``S`` alone."""
    if kind in ("B", "S"):
        return f"{kind}\n".encode()
    if kind == "K":
        return b"K " + str(value).rstrip("\n").encode() + b"\n"
    return f"{kind} {json.dumps(value)}\n".encode()


def decode_event(line: bytes) -> tuple[str, Any]:
    """(kind, id or line) of one control line."""
    kind, _, rest = line.rstrip(b"\n").partition(b" ")
    if kind == b"K":
        return "K", rest + b"\n"
    return kind.decode(), json.loads(rest) if rest else None
