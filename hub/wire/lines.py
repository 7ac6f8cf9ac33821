"""Lines out of a byte stream read in chunks (`LineBuffer`), for every reader of JSON-RPC lines:
the stdio and socket transports (`CappedLineBuffer`: a size limit per line), the downstream
client, the bridge and the fast start; and
`write_all`, a whole message to a blocking descriptor. Standard library only (the bridge and the
fast start import it before anything else is loaded; the event loop's writer is
`hub.wire.fds.write_line`).

A line that arrives over many reads is joined once it is whole, not copied at every read (which
made a 40 MB message take seconds).
"""

from __future__ import annotations

import os
import re

__all__ = ["CappedLineBuffer", "LineBuffer", "Overlong", "utf8", "write_all"]

_SURROGATE = re.compile("[\ud800-\udfff]")


class Overlong:
    """A line longer than a `LineBuffer`'s limit, read past rather than kept: its first and last
    bytes (enough to find its id, `hub.wire.jsonrpc.recover_id`) and its size."""

    __slots__ = ("head", "size", "tail")

    HEAD = 4096
    TAIL = 256

    def __init__(self, start: bytes) -> None:
        self.head = start[: self.HEAD]
        self.tail = start[-self.TAIL :]
        self.size = len(start)

    def add(self, piece: bytes) -> None:
        self.size += len(piece)
        if len(self.head) < self.HEAD:
            self.head += piece[: self.HEAD - len(self.head)]
        self.tail = (self.tail + piece)[-self.TAIL :]


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


class CappedLineBuffer:
    """A `LineBuffer` for input from a client: a line longer than `limit` bytes is not kept, it
    comes out as an `Overlong` (its head, tail and size) once its newline is read, and memory
    stays flat however long it is. It also knows whether a line is begun (`inside`, `begun`),
    and can drop the input up to the next newline (`skip_line`: the rest of a line a process
    that died had begun to read)."""

    def __init__(self, *, limit: int | None = None) -> None:
        self._chunks: list[bytes] = []
        self._size = 0
        self._limit = limit
        self._long: Overlong | None = None
        self._skipping = False

    @property
    def inside(self) -> bool:
        """Whether a line is begun and not yet complete."""
        return bool(self._chunks) or self._long is not None or self._skipping

    def begun(self) -> tuple[bytes, bytes]:
        """The first and last bytes of the line begun (see `inside`), to find its id."""
        if self._long is not None:
            return self._long.head, self._long.tail
        if not self._chunks:
            return b"", b""
        first, last = self._chunks[0], self._chunks[-1]
        return first[: Overlong.HEAD], last[-Overlong.TAIL :]

    def feed(self, chunk: bytes) -> list[bytes | Overlong]:
        """The lines `chunk` completes (none if it holds no newline)."""
        if self._skipping or self._long is not None:
            return self._feed_slowly(chunk)
        self._chunks.append(chunk)
        self._size += len(chunk)
        if b"\n" not in chunk:
            self._check_size()
            return []
        *lines, rest = b"".join(self._chunks).split(b"\n")
        self._chunks, self._size = ([rest], len(rest)) if rest else ([], 0)
        self._check_size()
        limit = self._limit
        if limit is None:
            return list[bytes | Overlong](lines)
        return [Overlong(line) if len(line) > limit else line for line in lines]

    def _check_size(self) -> None:
        """Past the limit, the line begun is no longer kept (see `Overlong`)."""
        if self._limit is not None and self._size > self._limit:
            self._long = Overlong(b"".join(self._chunks))
            self._chunks, self._size = [], 0

    def _feed_slowly(self, chunk: bytes) -> list[bytes | Overlong]:
        """Skipping to a newline, or reading past an overlong line: piece by piece."""
        newline = chunk.find(b"\n")
        if newline < 0:
            if self._long is not None:
                self._long.add(chunk)
            return []
        if self._skipping:
            self._skipping = False
            return self.feed(chunk[newline + 1 :]) if newline + 1 < len(chunk) else []
        assert self._long is not None
        self._long.add(chunk[:newline])
        line, self._long = self._long, None
        rest = chunk[newline + 1 :]
        return [line, *self.feed(rest)] if rest else [line]

    def _take_line(self) -> bytes | Overlong:
        if self._long is not None:
            line: bytes | Overlong = self._long
            self._long = None
        else:
            line = b"".join(self._chunks)
        self._chunks, self._size = [], 0
        return line

    def skip_line(self) -> None:
        """Drop what comes up to the next newline (the buffer holds no line begun)."""
        assert not self.inside
        self._skipping = True

    def rest(self) -> bytes | Overlong:
        """What is left after the last newline (a last line at end of input), and forget it."""
        if self._skipping:
            self._skipping = False
            return b""
        return self._take_line()


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
