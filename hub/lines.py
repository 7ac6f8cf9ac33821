"""Lines out of a byte stream read in chunks (`LineBuffer`), for every reader of JSON-RPC lines:
the stdio and socket transports, the downstream client and the bridge. Standard library only.

A line that arrives over many reads is joined once it is whole, not copied at every read (which
made a 40 MB message take seconds).
"""

from __future__ import annotations

__all__ = ["LineBuffer"]


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
