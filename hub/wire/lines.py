"""Lines out of a byte stream read in chunks (`LineBuffer`), for every reader of JSON-RPC lines:
the stdio and socket transports, the downstream client, the bridge and the fast start; and
`write_all`, a whole message to a blocking descriptor. Standard library only (the bridge and the
fast start import it before anything else is loaded; the event loop's writer is
`hub.wire.fds.write_line`).

A line that arrives over many reads is joined once it is whole, not copied at every read (which
made a 40 MB message take seconds).
"""

from __future__ import annotations

import os
import re

__all__ = ["LineBuffer", "utf8", "write_all"]

_SURROGATE = re.compile("[\ud800-\udfff]")


class LineBuffer:
    """Feed chunks in, get whole lines (without their newline) out."""

    def __init__(self, initial: bytes = b"") -> None:
        self._chunks: list[bytes] = [initial] if initial else []

    def feed(self, chunk: bytes) -> list[bytes]:
        """The lines `chunk` completes (none if it holds no newline)."""
        self._chunks.append(chunk)
        if b"\n" not in chunk:
            return []
        *lines, rest = b"".join(self._chunks).split(b"\n")
        self._chunks = [rest] if rest else []
        return lines

    def rest(self) -> bytes:
        """What is left after the last newline (a last line at end of input), and forget it."""
        rest, self._chunks = b"".join(self._chunks), []
        return rest


def write_all(fd: int, data: bytes) -> None:
    """All of `data` to a blocking descriptor (`os.write` may take only part of it)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def utf8(line: str) -> bytes:
    """A JSON line as UTF-8. A lone surrogate, which JSON text may carry as an escape (a
    downstream's `"\\ud800"`) but UTF-8 cannot encode, is written back as that escape: outside
    strings a JSON line is ASCII, so it can only stand inside one."""
    try:
        return line.encode()
    except UnicodeEncodeError:
        return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", line).encode()
