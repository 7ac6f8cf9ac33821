"""How a bridge hands its client to the shared process: the client's own stdin and stdout.

A bridge (`hub.launch.bridge`) that copied every message between its client and the shared process
would put one more process, and two more wake-ups, in every call. Instead it passes its stdin
and stdout over the Unix socket (`SCM_RIGHTS`, `send_handoff`) and the shared process serves
the client on them directly (`hub.launch.session.serve_fds`), as an in-process hub would.

The socket stays open as the control channel, one line per event, shared process to bridge, so
that if the process dies (kill -9 included) the bridge answers every request in flight exactly
once, and hands a new process the client's input where the dead one stopped:

- ``T {...}``: the process takes `n` bytes of the client's input (`Take`): the requests those
  bytes complete (``r``: their ids), the lines a new process would need (``k``: `initialize`,
  `notifications/initialized`, `subscriptions/listen`, cancellations), and whether a line is
  begun and not complete after them (``in``, with its id ``id`` when its start shows it). When
  the input is a pipe or a socket, the process says this *before* taking the bytes, and ``crc``
  is their CRC-32: if it dies before taking them, the bridge sees them still at the front of its
  own stdin (`hub.wire.peek.Peeker.starts_with`) and leaves them to the next process.
- ``A <id>``: the answer to a request was written (sent the moment its last byte went out), or it
  was cancelled;
- ``O <id or null>``: a line to the client is half written (its pipe is full); the bridge ends
  that line before writing anything itself; ``C``: that line (not an answer) was finished;
- ``B``: the session is over (the client closed its input and every answer was written);
- ``S``: the process is being stopped (`hub stop`): the bridge ends the session and exits instead
  of starting another process.

A ``T`` is settled once a later ``T`` arrives (the process takes nothing more before it took
those bytes) or an ``A`` for one of its requests (it acts on nothing it did not take); only the
last one can be in doubt when the process dies. Between the write of an answer and its ``A`` a
kill can still land (microseconds): the client then gets the answer and the restart error for the
same id, and JSON-RPC clients ignore an answer to an id they no longer wait for. The bridge closing
the socket (its client stopped it) cancels the session's calls. This module is imported by the
bridge: standard library only.
"""

from __future__ import annotations

import json
import socket
from typing import Any

from hub.wire.envelope import LISTEN
from hub.wire.jsonrpc import NO_ID, recover_id, valid_id
from hub.wire.lines import Overlong

__all__ = ["HANDOFF", "KEPT_METHODS", "classify", "decode_event", "encode_event", "send_handoff"]

HANDOFF = "hub/handoff"
# The lines a new process needs to go on with a session (replayed), sent whole in ``T``.
KEPT_METHODS = frozenset({"initialize", "notifications/initialized", LISTEN, "notifications/cancelled"})


def send_handoff(sock: socket.socket, message: dict[str, Any], fds: list[int]) -> None:
    """Send the handoff line with `fds` (the client's stdin and stdout) attached."""
    data = json.dumps({HANDOFF: message}).encode() + b"\n"
    sent = socket.send_fds(sock, [data], fds)
    if sent < len(data):
        sock.sendall(data[sent:])


def encode_event(kind: str, value: Any = None) -> bytes:
    """One control line: ``T`` with a dict, ``A``/``O`` with an id, ``B``, ``S`` or ``C`` alone."""
    if kind in ("B", "S", "C"):
        return f"{kind}\n".encode()
    return f"{kind} {json.dumps(value, separators=(',', ':'))}\n".encode()


def decode_event(line: bytes) -> tuple[str, Any]:
    """(kind, value) of one control line."""
    kind, _, rest = line.rstrip(b"\n").partition(b" ")
    return kind.decode(), json.loads(rest) if rest else None


def classify(line: bytes | Overlong) -> tuple[str, Any]:
    """What the bridge must know of one line of the client's: ("request", id) for a request the
    hub will answer, ("keep", text) for a line a new process needs, else ("", None)."""
    if isinstance(line, Overlong):  # refused with an error, with this id when it shows one
        found = recover_id(line.head, line.tail)
        return ("request", found) if found is not NO_ID else ("", None)
    try:
        message = json.loads(line)
    except (ValueError, RecursionError):
        return "", None
    if not isinstance(message, dict):
        return "", None
    method = message.get("method")
    if method in KEPT_METHODS:
        return "keep", line.decode("utf-8", errors="replace")
    request_id = message.get("id")
    if isinstance(method, str) and valid_id(request_id):
        return "request", request_id
    return "", None
