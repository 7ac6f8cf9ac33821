"""Reading the front of a pipe or socket without taking it (`Peeker`).

A client's stdin is handed from its bridge to the shared hub process (`hub.launch.handoff`); what
the process has taken from it is gone for good, and if the process is killed the bridge must know
exactly which requests those were. So the process looks at the bytes first (`peek`), tells the
bridge which requests they hold, and only then takes them (`take`); after a kill the bridge looks
at the same front (`starts_with`) to see whether the last bytes it was told of were taken. A Unix
socket is peeked with ``MSG_PEEK``; a pipe with ``tee(2)`` into a private pipe (Linux), which
copies without consuming. Anything else (a terminal, a file, another OS) has no `Peeker`.
Standard library only: the bridge imports it.
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
import sys
from typing import Any

__all__ = ["CHUNK", "Peeker"]

CHUNK = 65536  # bytes looked at, at most, at a time (a pipe's default capacity)
_SPLICE_F_NONBLOCK = 2
_tee: Any = None


def _libc_tee() -> Any:
    """tee(2) through ctypes (the standard library has splice, not tee); None where missing."""
    global _tee
    if _tee is None:
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            function = libc.tee
            function.restype = ctypes.c_ssize_t
            function.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_size_t, ctypes.c_uint]
            _tee = function
        except (OSError, AttributeError):
            _tee = False
    return _tee or None


class Peeker:
    """Looks at the front of one descriptor's input without consuming it (see the module doc)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._sock: socket.socket | None = None
        self._scratch: tuple[int, int] | None = None

    @classmethod
    def for_fd(cls, fd: int) -> Peeker | None:
        """A peeker for `fd` if it is a socket, or a pipe on Linux; else None."""
        try:
            mode = os.fstat(fd).st_mode
        except OSError:
            return None
        peeker = cls(fd)
        if stat.S_ISSOCK(mode):
            try:
                peeker._sock = socket.socket(fileno=os.dup(fd))
            except OSError:
                return None
            return peeker
        if stat.S_ISFIFO(mode) and sys.platform.startswith("linux") and _libc_tee() is not None:
            read_end, write_end = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
            peeker._scratch = (read_end, write_end)
            return peeker
        return None

    def peek(self, size: int = CHUNK) -> bytes | None:
        """Up to `size` bytes at the front of the input, left there; b"" at end of input (the
        writer closed it and nothing is left); None when there is nothing to read yet."""
        if self._sock is not None:
            try:
                return self._sock.recv(size, socket.MSG_PEEK | socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                return None
        assert self._scratch is not None
        read_end, write_end = self._scratch
        copied = _libc_tee()(self.fd, write_end, size, _SPLICE_F_NONBLOCK)
        if copied < 0:
            import ctypes

            errno = ctypes.get_errno()
            if errno in (11, 4):  # EAGAIN: empty (or the writer is gone: see below); EINTR
                return None if self._writer_left() else b""
            raise OSError(errno, os.strerror(errno))
        if copied == 0:
            return b""  # no writer and nothing left: end of input
        data = b""
        while len(data) < copied:
            data += os.read(read_end, copied - len(data))
        return data

    def _writer_left(self) -> bool:
        """tee(2) on an empty pipe says EAGAIN even when every writer is gone; a poll tells."""
        import select

        poller = select.poll()
        poller.register(self.fd, select.POLLIN)
        events = poller.poll(0)
        return not any(event & select.POLLHUP for _, event in events)

    def take(self, size: int) -> bytes:
        """Consume `size` bytes from the front (the ones `peek` showed)."""
        data = b""
        while len(data) < size:
            try:
                chunk = os.read(self.fd, size - len(data))
            except BlockingIOError:
                continue  # peeked bytes are there: only a signal can make this happen
            if not chunk:
                break
            data += chunk
        return data

    def starts_with(self, expected_size: int, crc: int) -> bool:
        """Whether the input still begins with the `expected_size` bytes whose CRC-32 is `crc`
        (the bridge, after the shared process died: were the last bytes it announced taken?)."""
        import zlib

        data = b""
        with contextlib.suppress(OSError):
            data = self.peek(expected_size) or b""
        return len(data) == expected_size and zlib.crc32(data) == crc

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()  # the duplicate: the descriptor itself stays open
            self._sock = None
        if self._scratch is not None:
            for fd in self._scratch:
                with contextlib.suppress(OSError):
                    os.close(fd)
            self._scratch = None
