"""The hub's stdio transport (`serve_stdio`): lines in, lines out, on the event loop, with every
message answered.

It replaces the SDK's `stdio_server` for three reasons:

- malformed input is answered (`hub.protocol.MessageCheck`) instead of dropped;
- at end of input, answers to every request already received are written before the hub exits
  (the SDK closed the session at EOF, cancelling calls still running);
- any kind of stdin works: a pipe or socket (read on the event loop, so a signal can stop an
  idle hub), a regular file or ``/dev/null`` (read in a worker thread: epoll refuses them), a
  terminal (the hub says on stderr that it speaks MCP here), or no stdin at all (quiet exit).

While serving, fd 0 points at ``/dev/null`` and fd 1 at stderr, so nothing else (a plugin's
child process, a stray print) can read the protocol stream or corrupt it.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Any

import anyio
import mcp_types as types
import structlog
from mcp.shared._context_streams import create_context_streams  # what the SDK's own transports use
from mcp.shared.message import SessionMessage

from hub.fastfront import TRACKED, AnswerCache, EarlyAnswers, check_requests
from hub.protocol import MessageCheck

if TYPE_CHECKING:
    from hub.server import HubServer

__all__ = ["TTY_HINT", "event_loop_stdout", "private_stdin", "serve_stdio", "stdio_transport"]

from hub.fastfront import LISTEN  # stays open until cancelled: not waited for at end of input
from hub.transport import TTY_HINT

log = structlog.get_logger("hub.server")


def _pollable(fd: int) -> bool:
    mode = os.fstat(fd).st_mode
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or os.isatty(fd)


class LineReader:
    """Async lines from a file descriptor. Pipes, sockets and terminals are read on the event
    loop; regular files and devices such as /dev/null in a worker thread."""

    def __init__(self, fd: int, initial: bytes = b"", on_line: Callable[[str], None] | None = None) -> None:
        self.fd = fd
        self._buffer = initial
        self._on_line = on_line
        self._ended = False
        try:
            self._poll = _pollable(fd)
        except OSError:
            self._ended = True  # no stdin at all
            self._poll = False

    def __aiter__(self) -> LineReader:
        return self

    async def __anext__(self) -> str:
        line = await self._next()
        if self._on_line is not None:
            self._on_line(line)
        return line

    async def _read(self) -> bytes:
        if self._ended:
            return b""
        try:
            if self._poll:
                while True:
                    await anyio.wait_readable(self.fd)
                    try:
                        return os.read(self.fd, 65536)
                    except BlockingIOError:  # woken with nothing to read yet (a non-blocking fd)
                        continue
            return await anyio.to_thread.run_sync(os.read, self.fd, 65536, abandon_on_cancel=True)
        except OSError:
            return b""  # closed or unreadable: the same as end of input

    async def _next(self) -> str:
        while b"\n" not in self._buffer:
            chunk = await self._read()
            if not chunk:
                self._ended = True
                if self._buffer:
                    line, self._buffer = self._buffer, b""
                    return line.decode("utf-8", errors="replace")
                raise StopAsyncIteration
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode("utf-8", errors="replace") + "\n"


class FdWriter:
    """Writes whole lines to a file descriptor; a non-blocking pipe waits on the event loop."""

    def __init__(self, fd: int, on_line: Callable[[str], bool] | None = None) -> None:
        self.fd = fd
        self._on_line = on_line

    async def write(self, text: str) -> None:
        if self._on_line is not None and not self._on_line(text):
            return
        view = memoryview(text.encode("utf-8", errors="replace"))
        while view:
            try:
                written = os.write(self.fd, view)
            except BlockingIOError:
                await anyio.wait_writable(self.fd)
                continue
            view = view[written:]


@contextlib.contextmanager
def private_stdin(initial: bytes = b"", on_line: Callable[[str], None] | None = None) -> Iterator[LineReader]:
    """A reader on a private copy of fd 0, with fd 0 pointed at /dev/null while serving. A
    terminal gets one line on stderr saying what this is."""
    try:
        private = os.dup(0)
    except OSError:  # stdin is closed
        yield LineReader(-1, initial, on_line)
        return
    with contextlib.suppress(OSError):
        if os.isatty(private):
            print(TTY_HINT, file=sys.stderr, flush=True)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    try:
        yield LineReader(private, initial, on_line)
    finally:
        os.dup2(private, 0)
        os.close(private)


@contextlib.contextmanager
def event_loop_stdout(on_line: Callable[[str], bool] | None = None) -> Iterator[FdWriter]:
    """A writer on a private copy of fd 1 (non-blocking for a pipe or socket), with fd 1 pointed
    at stderr while serving so stray prints cannot corrupt the stream."""
    sys.stdout.flush()
    private = os.dup(1)
    pipe = stat.S_ISFIFO(os.fstat(private).st_mode) or stat.S_ISSOCK(os.fstat(private).st_mode)
    if pipe:
        os.set_blocking(private, False)
    os.dup2(2, 1)
    try:
        yield FdWriter(private, on_line)
    finally:
        os.dup2(private, 1)
        if pipe:
            os.set_blocking(1, True)
        os.close(private)


@contextlib.asynccontextmanager
async def stdio_transport(reader: LineReader, writer: FdWriter) -> AsyncIterator[tuple[Any, Any]]:
    """(read stream, write stream) for `Server.run`, like the SDK's `stdio_server`."""
    read_send, read_recv = create_context_streams[SessionMessage | Exception](0)
    write_send, write_recv = create_context_streams[SessionMessage](0)
    check = MessageCheck(track_initialize=True)
    pending: set[Any] = set()  # ids of requests not answered yet
    settled = anyio.Event()
    lock = anyio.Lock()
    reading = anyio.CancelScope()
    gone = False  # the client closed its end of stdout: nothing more can be said

    async def emit(text: str) -> None:
        nonlocal gone
        if gone:
            return
        async with lock:
            try:
                await writer.write(text)
            except (BrokenPipeError, ConnectionResetError):
                gone = True
                reading.cancel()  # the session ends as if input had ended

    async def read_lines() -> None:
        nonlocal settled
        async with read_send:
            async for line in reader:
                if not line.strip():
                    continue
                parsed, answer = check.parse(line)
                if parsed is None:
                    if answer is not None:
                        await emit(json.dumps(answer) + "\n")
                    continue
                message = parsed.message
                if isinstance(message, types.JSONRPCRequest) and message.method != LISTEN:
                    pending.add(message.id)
                elif isinstance(message, types.JSONRPCNotification) and message.method == (
                    "notifications/cancelled"
                ):
                    pending.discard((message.params or {}).get("requestId"))
                await read_send.send(parsed)
            # End of input: let the calls already received finish and be answered first.
            while pending:
                settled = anyio.Event()
                await settled.wait()

    async def write_lines() -> None:
        async with write_recv:
            async for session_message in write_recv:
                message = session_message.message
                text = message.model_dump_json(by_alias=True, exclude_unset=True)
                await emit(text + "\n")
                if isinstance(message, types.JSONRPCResponse | types.JSONRPCError):
                    pending.discard(message.id)
                    if not pending:
                        settled.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(write_lines)

        async def run_reader() -> None:
            with reading:
                await read_lines()

        tg.start_soon(run_reader)
        try:
            yield read_recv, write_send
        finally:
            reading.cancel()
            await write_send.aclose()


async def serve_stdio(
    server: HubServer, cache: AnswerCache | None = None, early: EarlyAnswers | None = None
) -> None:
    """Serve one client over stdin/stdout until it closes stdin.

    `cache` keeps the answers to list requests for the next fast start (see
    `hub.fastfront`); `early` is what that fast start did before the hub was up: input it
    held back (served first) and requests it answered (asked again here; if an answer
    differs, clients get list_changed).
    """
    checks = check_requests(early) if early is not None else []
    check_ids = {request_id for request_id, _ in checks}
    changed: set[str] = set()

    acknowledged = set(early.acknowledged) if early is not None else set()

    def on_answer(line: str) -> bool:
        """Keep answers for the next start; False drops the line (a check's answer, or a
        second acknowledgement of a subscription the fast start acknowledged)."""
        if cache is None:
            return True
        seen = cache.saw_answer(line)
        if seen is None:
            return True
        request_id, key, differs = seen
        if differs:
            cache.save()
        if request_id in acknowledged and key.startswith("subscriptions/listen|"):
            acknowledged.discard(request_id)
            return False
        if request_id not in check_ids:
            return True
        check_ids.discard(request_id)
        kind = TRACKED.get(key.split("|", 1)[0])
        if differs and kind:
            changed.add(kind)
        if not check_ids:
            for item in sorted(changed):
                server.hub.registry.on_change(item)  # type: ignore[arg-type]
            if changed:
                log.info("the start-up answers were out of date; clients were told", lists=sorted(changed))
        return False

    initial = (early.held if early else b"") + b"".join(line.encode() + b"\n" for _, line in checks)
    if early is not None and early.answered:
        log.info("answered list requests from the last run while starting", requests=len(early.answered))
    with (
        private_stdin(initial, cache.saw_request if cache else None) as stdin,
        event_loop_stdout(on_answer if cache else None) as stdout,
    ):
        try:
            async with stdio_transport(stdin, stdout) as (read, write):
                await server.mcp.run(read, write, server.mcp.create_initialization_options())
        finally:
            if cache is not None:
                with contextlib.suppress(OSError):
                    cache.save()
