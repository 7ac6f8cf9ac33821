"""Lines onto and off file descriptors, on the event loop: `LineReader` (async lines from a pipe,
socket, terminal, regular file or /dev/null), `write_line` (a whole line onto a non-blocking pipe or
socket, finished even if its writer is cancelled) and `FdWriter` (whole lines to a descriptor).
Used by the hub's stdio and socket transports and by its stdio client of downstream servers.
"""

from __future__ import annotations

import asyncio
import os
import stat
import sys
from collections import deque
from collections.abc import Callable

import anyio
import structlog

from hub.wire.lines import LineBuffer, utf8, write_all

__all__ = ["LINE_FINISH_S", "FdWriter", "LineReader", "pollable", "tty_hint", "write_line"]

log = structlog.get_logger("hub.wire")


def tty_hint() -> str:
    """What a person who runs `hub` in a terminal is told (by the in-process stdio transport and
    by the bridge, which must not load the MCP SDK to say it): the command to try it with names
    this hub by its full path, since `hub` may not be on PATH (a checkout's .venv/bin/hub)."""
    command = sys.argv[0] if sys.argv and os.path.basename(sys.argv[0]) == "hub" else ""
    hub = os.path.abspath(command) if command else f"{sys.executable} -m hub"
    return (
        "hub: this is an MCP server; it speaks JSON-RPC on stdin/stdout to an MCP client, and waits "
        f"for one here. To try it: npx @modelcontextprotocol/inspector {hub} serve   "
        "(Ctrl-D or Ctrl-C quits)"
    )


def pollable(fd: int) -> bool:
    mode = os.fstat(fd).st_mode
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or os.isatty(fd)


class LineReader:
    """Async lines from a file descriptor. Pipes, sockets and terminals are read by a reader
    callback the event loop keeps registered (no re-registration or task wake-up per read);
    regular files and devices such as /dev/null in a worker thread.

    `take(line)`, when set, sees each whole line first, in the reader callback itself; a line it
    returns True for is not yielded (the transport's shortcut answered it). Reading pauses while
    `PAUSE_LINES` lines wait to be iterated."""

    PAUSE_LINES = 256

    def __init__(self, fd: int, initial: bytes = b"", on_line: Callable[[str], None] | None = None) -> None:
        self.fd = fd
        self.take: Callable[[str], bool] | None = None
        self._initial = initial
        self._buffer = LineBuffer()
        self._lines: deque[str] = deque()
        self._on_line = on_line
        self._ended = False
        self._wake: asyncio.Future[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reading = False
        try:
            self._poll = pollable(fd)
        except OSError:
            self._ended = True  # no stdin at all
            self._poll = False

    def __aiter__(self) -> LineReader:
        return self

    async def __anext__(self) -> str:
        if self._initial:
            initial, self._initial = self._initial, b""
            self._feed(initial)
        while not self._lines:
            if self._ended:
                raise StopAsyncIteration
            if self._poll:
                if self._loop is None:
                    self._loop = asyncio.get_running_loop()
                self._resume()
                self._wake = self._loop.create_future()
                try:
                    await self._wake
                finally:
                    self._wake = None
            else:
                try:
                    chunk = await anyio.to_thread.run_sync(os.read, self.fd, 65536, abandon_on_cancel=True)
                except OSError:
                    chunk = b""  # closed or unreadable: the same as end of input
                self._feed(chunk)
        line = self._lines.popleft()
        if len(self._lines) < self.PAUSE_LINES // 2:
            self._resume()
        return line

    def close(self) -> None:
        """Stop reading (the event loop forgets the descriptor); iteration ends."""
        self._pause()
        self._ended = True
        self._wakeup()

    def _resume(self) -> None:
        if self._poll and not self._reading and not self._ended and self._loop is not None:
            self._reading = True
            self._loop.add_reader(self.fd, self._on_readable)

    def _pause(self) -> None:
        if self._reading and self._loop is not None:
            self._reading = False
            self._loop.remove_reader(self.fd)

    def _wakeup(self) -> None:
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    def _on_readable(self) -> None:
        try:
            chunk = os.read(self.fd, 65536)
        except BlockingIOError:  # woken with nothing to read yet
            return
        except OSError:
            chunk = b""
        self._feed(chunk)
        if len(self._lines) >= self.PAUSE_LINES:
            self._pause()
        if self._lines or self._ended:
            self._wakeup()

    def _feed(self, chunk: bytes) -> None:
        """Split `chunk` into lines (b"" is end of input: a last line without newline counts)."""
        if not chunk:
            self._pause()
            self._ended = True
            rest = self._buffer.rest()
            if rest:
                self._line(rest.decode("utf-8", errors="replace"))
            return
        for line in self._buffer.feed(chunk):
            self._line(line.decode("utf-8", errors="replace") + "\n")

    def _line(self, line: str) -> None:
        try:
            if self._on_line is not None:
                self._on_line(line)
            if self.take is not None and self.take(line):
                return
        except Exception:  # never lose the line, nor the rest of the read, to a hook's bug
            log.exception("a line could not be looked at before the SDK; the SDK gets it")
        self._lines.append(line)


LINE_FINISH_S = 10.0  # to finish writing a line a cancelled writer started


async def write_line(fd: int, data: bytes) -> None:
    """All of `data` to a non-blocking pipe or socket, waiting on the event loop while it is full.
    A line once started is finished even if the caller is cancelled (shielded, for at most
    `LINE_FINISH_S`: a reader that takes nothing for that long gets `TimeoutError`, an
    `OSError`), so no half line is left for the next one to follow. Callers that share `fd`
    hold a lock around it."""
    view = memoryview(data)
    started = False
    while view:
        try:
            view = view[os.write(fd, view) :]
            started = True
        except BlockingIOError:
            if not started:  # nothing written yet: the caller may still give up
                await anyio.wait_writable(fd)
                continue
            with anyio.CancelScope(shield=True), anyio.fail_after(LINE_FINISH_S):
                await anyio.wait_writable(fd)


class FdWriter:
    """Writes whole lines to a file descriptor: a non-blocking pipe or socket with `write_line`;
    a `threaded` writer (a terminal, which must stay blocking) in a worker thread. `on_line`
    sees each line first, and may drop it (False)."""

    def __init__(
        self, fd: int, on_line: Callable[[str], bool] | None = None, *, threaded: bool = False
    ) -> None:
        self.fd = fd
        self._on_line = on_line
        self._threaded = threaded

    async def write(self, text: str) -> None:
        if self._on_line is not None and not self._on_line(text):
            return
        data = utf8(text)
        if self._threaded:
            await anyio.to_thread.run_sync(write_all, self.fd, data)
        else:
            await write_line(self.fd, data)
