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
import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import anyio
import structlog

from hub.wire.jsonrpc import recover_id
from hub.wire.lines import CappedLineBuffer, Overlong, utf8, write_all
from hub.wire.peek import Peeker

__all__ = [
    "LINE_FINISH_S",
    "FdWriter",
    "Journal",
    "LineReader",
    "LineTooLong",
    "Take",
    "pollable",
    "tty_hint",
    "write_line",
]

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


class LineTooLong(str):
    """In place of a line over a `LineReader`'s limit, which was read past, not kept: an empty
    line that carries the line's `size` and its `request_id` (`NO_ID` if it showed none)."""

    size: int
    request_id: Any

    @classmethod
    def of(cls, line: Overlong) -> LineTooLong:
        marker = cls()
        marker.size = line.size
        marker.request_id = recover_id(line.head, line.tail)
        return marker


@dataclass
class Take:
    """Bytes a `LineReader` takes from its descriptor, as its `Journal` hears of them."""

    size: int
    crc: int | None  # CRC-32 of the bytes when they were looked at before being taken (`Peeker`)
    lines: list[bytes | Overlong]  # the lines they complete
    inside: bool  # after them, a line is begun and not complete
    begun: tuple[bytes, bytes]  # that line's first and last bytes (to find its id)


class Journal(Protocol):
    """Who must hear of every byte a `LineReader` takes before anything acts on it (the bridge
    of a handed-over client, `hub.launch.shared_process`): told of each take before it is made
    when the descriptor can be peeked (`Take.crc` set), else right after."""

    def taking(self, take: Take) -> bool:
        """True: go on; False: the journal cannot take it in yet, wait for `when_ready`."""
        ...

    def when_ready(self, callback: Callable[[], None]) -> None: ...


class LineReader:
    """Async lines from a file descriptor. Pipes, sockets and terminals are read by a reader
    callback the event loop keeps registered (no re-registration or task wake-up per read);
    regular files and devices such as /dev/null in a worker thread.

    `take(line)`, when set, sees each whole line first, in the reader callback itself; a line it
    returns True for is not yielded (the transport's shortcut answered it). Reading pauses while
    `PAUSE_LINES` lines wait to be iterated. A line over `limit` bytes is read past and yielded
    as a `LineTooLong`. With a `journal`, a pipe or socket is peeked first and its bytes taken
    only once the journal heard of them (see `Journal`); `skip_first` drops the input up to its
    first newline (the rest of a line a dead process had begun)."""

    PAUSE_LINES = 256

    def __init__(
        self,
        fd: int,
        initial: bytes = b"",
        on_line: Callable[[str], None] | None = None,
        *,
        limit: int | None = None,
        journal: Journal | None = None,
        skip_first: bool = False,
    ) -> None:
        self.fd = fd
        self.limit = limit
        self.take: Callable[[str], bool] | None = None
        self._initial = initial
        self._buffer = CappedLineBuffer(limit=limit)
        self._skip_first = skip_first
        self._lines: deque[str] = deque()
        self._on_line = on_line
        self._journal = journal
        self._peeker: Peeker | None = None
        self._waiting: Take | None = None  # peeked, the journal not ready for it yet
        self._ended = False
        self._wake: asyncio.Future[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reading = False
        try:
            self._poll = pollable(fd)
        except OSError:
            self._ended = True  # no stdin at all
            self._poll = False
        if journal is not None and self._poll:
            self._peeker = Peeker.for_fd(fd)

    def __aiter__(self) -> LineReader:
        return self

    async def __anext__(self) -> str:
        if self._initial or self._skip_first:
            initial, self._initial = self._initial, b""
            self._deliver(self._buffer.feed(initial))  # the bridge's own: not the journal's
            if self._skip_first:
                self._skip_first = False
                self._buffer.skip_line()
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
        if self._peeker is not None:
            self._peeker.close()
        self._wakeup()

    def _resume(self) -> None:
        if (
            self._poll
            and not self._reading
            and not self._ended
            and self._waiting is None
            and self._loop is not None
        ):
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
        if self._peeker is not None:
            self._take_peeked()
        else:
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

    def _take_peeked(self) -> None:
        """Look at what is there, have the journal hear of it, then take it (to the end of its
        last whole line, or all of it inside a long line)."""
        assert self._peeker is not None and self._journal is not None
        take, self._waiting = self._waiting, None
        if take is None:
            try:
                data = self._peeker.peek()
            except OSError:
                data = b""
            if data is None:
                return
            if not data:
                self._feed(b"")
                return
            newline = data.rfind(b"\n")
            if newline >= 0:
                data = data[: newline + 1]
            lines = self._buffer.feed(data)
            take = Take(len(data), zlib.crc32(data), lines, self._buffer.inside, self._buffer.begun())
            if not self._journal.taking(take):
                self._waiting = take
                self._pause()
                self._journal.when_ready(self._journal_ready)
                return
        self._peeker.take(take.size)
        self._deliver(take.lines)

    def _journal_ready(self) -> None:
        if self._waiting is not None and not self._ended:
            self._take_peeked()
            self._resume()
            if self._lines:
                self._wakeup()

    def _feed(self, chunk: bytes) -> None:
        """Split `chunk` into lines (b"" is end of input: a last line without newline counts)."""
        if not chunk:
            self._pause()
            self._ended = True
            rest = self._buffer.rest()
            lines = [rest] if rest else []
            if self._journal is not None:
                self._journal.taking(Take(0, None, lines, False, (b"", b"")))
            self._deliver(lines)
            return
        lines = self._buffer.feed(chunk)
        if self._journal is not None:  # after the read: the journal hears of it at once
            self._journal.taking(Take(len(chunk), None, lines, self._buffer.inside, self._buffer.begun()))
        self._deliver(lines)

    def _deliver(self, lines: list[bytes | Overlong]) -> None:
        for line in lines:
            if isinstance(line, Overlong):
                self._lines.append(LineTooLong.of(line))
            else:
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


async def write_line(
    fd: int,
    data: bytes,
    *,
    stalled: Callable[[], None] | None = None,
    started: bool = False,
) -> None:
    """All of `data` to a non-blocking pipe or socket, waiting on the event loop while it is full.
    A line once started is finished even if the caller is cancelled (shielded, for at most
    `LINE_FINISH_S`: a reader that takes nothing for that long gets `TimeoutError`, an
    `OSError`), so no half line is left for the next one to follow; `started`: `data` goes on a
    line already begun. Callers that share `fd` hold a lock around it. `stalled()` is called
    when part of the line is out and the rest must wait."""
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view) :]
            started = True
        except BlockingIOError:
            if not started:  # nothing written yet: the caller may still give up
                await anyio.wait_writable(fd)
                continue
            if stalled is not None:
                stalled()
                stalled = None
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

    async def write(
        self,
        text: str,
        *,
        stalled: Callable[[], None] | None = None,
        written: Callable[[], None] | None = None,
        before_newline: Callable[[], None] | None = None,
    ) -> None:
        """Write `text` (a whole line). `stalled()` as for `write_line`; `written()` once its last
        byte is out. With `before_newline`, the line is written in two steps: all but its
        newline, then `before_newline()`, then the newline, which is when a line reader takes
        it (the bridge's two-phase bookkeeping of answers, `hub.launch.handoff`). A line that
        `on_line` drops counts as written (the client had it): both callbacks are called."""
        if self._on_line is not None and not self._on_line(text):
            for callback in (before_newline, written):
                if callback is not None:
                    callback()
            return
        data = utf8(text)
        parts = [data] if before_newline is None else [data[:-1], data[-1:]]
        for n, part in enumerate(parts):
            if n:
                assert before_newline is not None
                before_newline()
            if self._threaded:
                await anyio.to_thread.run_sync(write_all, self.fd, part)
            else:
                await write_line(self.fd, part, stalled=stalled, started=n > 0)
        if written is not None:
            written()
