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
- answers, in two phases, so that a client takes an answer only once the bridge knows of it:
  ``W`` before anything of an answer goes out; the answer without its newline; ``A <id>``; the
  newline, which is what makes a client take the line; ``N`` once that is out (said when the
  event loop turns, or by the next ``W``). If the process dies after ``W`` and before ``A``, the
  bridge spoils the line begun (``#`` and a newline: a client drops it) and answers the request
  with the restart error; after ``A`` and before ``N``, it writes the newline (the answer is
  delivered; an empty line if the newline was out);
- ``O``: a line that is not an answer is half written (the client's pipe is full), spoiled the
  same way after a death; ``C``: it was finished;
- ``B``: the session is over (the client closed its input and every answer was written);
- ``S``: the process is being stopped (`hub stop`): the bridge ends the session and exits instead
  of starting another process.

A ``T`` is settled once a later ``T`` arrives (the process takes nothing more before it took
those bytes) or an ``A`` for one of its requests (it acts on nothing it did not take); only the
last one can be in doubt when the process dies. So a kill at any instant leaves every request
answered exactly once; the client may see one line it drops (``#``, or an empty line) where the
process died mid-answer. The bridge closing the socket (its client stopped it) cancels the
session's calls. This module is imported by the
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
    """One control line: ``T`` with a dict, ``A`` with an id, the others alone."""
    if kind in ("B", "S", "C", "W", "N", "O"):
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
