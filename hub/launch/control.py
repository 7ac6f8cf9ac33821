"""Questions to a shared hub process on its socket, for `hub status` and `hub stop`.

A connection whose first line is ``{"hub/control": {"ask": "status" | "stop", ...}}`` is not an
MCP session: the shared process answers with one JSON line and closes it. ``status`` gives the
process's sessions, work in progress, idle timer and launch; ``stop`` stops it (its bridges are
told, `hub.launch.handoff` event ``S``, and end their sessions instead of starting a new
process), unless sessions are connected or work is in progress and ``force`` is not set, in which
case the answer names them and nothing stops. Standard library only (the CLI asks without
loading the MCP SDK).
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

__all__ = ["CONTROL", "ControlError", "ask", "is_control"]

CONTROL = "hub/control"
TIMEOUT_S = 5.0


class ControlError(OSError):
    """The shared process did not answer (gone, or not answering); the message says which."""


def ask(path: Path | str, question: str, *, timeout_s: float = TIMEOUT_S, **params: Any) -> dict[str, Any]:
    """Ask the shared process listening on `path`; its answer (a dict)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout_s)
    try:
        sock.connect(str(path))
        sock.sendall(json.dumps({CONTROL: {"ask": question, **params}}).encode() + b"\n")
        reply = b""
        while not reply.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            reply += chunk
    except TimeoutError:
        raise ControlError(f"the shared process on {path} did not answer within {timeout_s:g} s") from None
    except OSError as exc:
        raise ControlError(f"cannot reach the shared process on {path}: {exc.strerror or exc}") from None
    finally:
        sock.close()
    try:
        answer = json.loads(reply)
    except ValueError:
        raise ControlError(f"the process on {path} gave no answer (is it an older hub?)") from None
    if not isinstance(answer, dict):
        raise ControlError(f"the process on {path} answered something else: {reply[:80]!r}")
    return answer


def is_control(first: bytes) -> bool:
    """Whether a connection's first bytes are a control question, not MCP."""
    return first.lstrip().startswith(b'{"' + CONTROL.encode() + b'"')
