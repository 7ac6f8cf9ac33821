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

import asyncio
import contextlib
import json
import os
import stat
import sys
from collections import deque
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from typing import TYPE_CHECKING, Any, Protocol

import anyio
import mcp_types as types
import structlog
from mcp.shared._context_streams import create_context_streams  # what the SDK's own transports use
from mcp.shared.message import SessionMessage

from hub.fastfront import (
    ACKNOWLEDGED,
    CHECK_PREFIX,
    SUBSCRIPTION_KEY,
    TRACKED,
    AnswerCache,
    EarlyAnswers,
    check_requests,
)
from hub.fastpath import FastPath
from hub.lines import LineBuffer, utf8, write_all
from hub.protocol import MessageCheck, valid_id
from hub.transport.shortcuts import LineShortcut

if TYPE_CHECKING:
    from hub.server import HubServer

__all__ = [
    "LINE_FINISH_S",
    "TTY_HINT",
    "Events",
    "FdWriter",
    "LineReader",
    "event_loop_stdout",
    "private_stdin",
    "serve_fds",
    "serve_stdio",
    "stdio_transport",
    "write_line",
]

from hub.fastfront import LISTEN  # stays open until cancelled: not waited for at end of input
from hub.transport import TTY_HINT

log = structlog.get_logger("hub.server")


def _pollable(fd: int) -> bool:
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
            self._poll = _pollable(fd)
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
async def stdio_transport(
    reader: LineReader, writer: FdWriter, fast: FastPath | None = None, events: Events | None = None
) -> AsyncIterator[tuple[Any, Any]]:
    """(read stream, write stream) for `Server.run`, like the SDK's `stdio_server`. With `fast`
    (the server's `FastPath`), forwarded calls and cached lists are answered by a
    `LineShortcut` without going through the SDK server."""
    read_send, read_recv = create_context_streams[SessionMessage | Exception](0)
    write_send, write_recv = create_context_streams[SessionMessage](0)
    check = MessageCheck(track_initialize=True)
    pending: set[Any] = set()  # ids of requests not answered yet
    settled = anyio.Event()
    lock = anyio.Lock(fast_acquire=True)  # uncontended: no trip through the event loop
    reading = anyio.CancelScope()
    gone = False  # the client closed its end of stdout: nothing more can be said

    async def emit(text: str) -> None:
        nonlocal gone
        if gone:
            return
        async with lock:
            try:
                await writer.write(text)
            except OSError:  # closed by the client, or not read for LINE_FINISH_S
                gone = True
                reading.cancel()  # the session ends as if input had ended

    def answered(request_id: Any) -> None:
        pending.discard(request_id)
        if events is not None:
            events.answered(request_id)
        if not pending:
            settled.set()

    def take(line: str) -> bool:
        """In the reader's callback: whether the shortcut answers `line` (not the SDK)."""
        assert shortcut is not None
        taken = shortcut.take(line)
        if taken is None:
            return False
        pending.add(taken)
        return True

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
                        request_id = answer.get("id") if isinstance(answer, dict) else None
                        if events is not None and valid_id(request_id):
                            events.answered(request_id)  # the bridge heard of it as a request
                    continue
                message = parsed.message
                if isinstance(message, types.JSONRPCRequest):
                    if shortcut is not None:
                        shortcut.saw_request(message.method, message.id, message.params)
                    if message.method != LISTEN:
                        pending.add(message.id)
                elif isinstance(message, types.JSONRPCNotification) and message.method == (
                    "notifications/cancelled"
                ):
                    cancelled = (message.params or {}).get("requestId")
                    if valid_id(cancelled):
                        pending.discard(cancelled)
                    if shortcut is not None and shortcut.cancel(cancelled):
                        continue
                await read_send.send(parsed)
            # End of input: let the calls already received finish and be answered first.
            while pending:
                settled = anyio.Event()
                await settled.wait()

    async def write_lines() -> None:
        async with write_recv:
            async for session_message in write_recv:
                message = session_message.message
                try:
                    text = message.model_dump_json(by_alias=True, exclude_unset=True)
                except ValueError:  # pydantic cannot write a lone surrogate (a downstream's "\ud800")
                    dumped = message.model_dump(by_alias=True, exclude_unset=True)
                    text = json.dumps(dumped, ensure_ascii=False, default=str)
                await emit(text + "\n")
                if isinstance(message, types.JSONRPCResponse | types.JSONRPCError):
                    if shortcut is not None:
                        result = message.result if isinstance(message, types.JSONRPCResponse) else None
                        shortcut.answered(message.id, result)
                    answered(message.id)

    # The shortcut's tasks are asyncio's own, started from the reader's callback: an anyio task
    # group's start_soon costs 25 us a call, a twentieth of the hub's whole work on one.
    loop = asyncio.get_running_loop()
    shortcut_tasks: set[asyncio.Task[None]] = set()

    def finished(task: asyncio.Task[None]) -> None:
        shortcut_tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("a forwarded call's task failed", exc_info=task.exception())

    def spawn(fn: Callable[..., Coroutine[Any, Any, None]], *args: Any) -> None:
        task: asyncio.Task[None] = loop.create_task(fn(*args))
        shortcut_tasks.add(task)
        task.add_done_callback(finished)

    async with anyio.create_task_group() as tg:
        shortcut = LineShortcut(fast, emit, spawn, answered) if fast is not None else None
        if shortcut is not None:
            reader.take = take
        tg.start_soon(write_lines)

        async def run_reader() -> None:
            with reading:
                await read_lines()

        tg.start_soon(run_reader)
        try:
            yield read_recv, write_send
        finally:
            reading.cancel()
            reader.close()
            if shortcut_tasks:  # the session is over: its calls end, and their servers hear it
                for task in shortcut_tasks:
                    task.cancel()
                with anyio.CancelScope(shield=True):
                    await asyncio.wait(set(shortcut_tasks))
            await write_send.aclose()


class Events(Protocol):
    """What a session tells the bridge that handed it over (`hub.handoff`), so the bridge can
    answer requests in flight and replay the handshake if this process dies: each request's id
    when it is read (`request`), each answer (`answered`), and the lines a new process would
    need (`keep`: `initialize`, `notifications/initialized`, `subscriptions/listen`, cancels)."""

    def request(self, request_id: Any) -> None: ...

    def answered(self, request_id: Any) -> None: ...

    def keep(self, line: str) -> None: ...


KEPT_METHODS = frozenset({"initialize", "notifications/initialized", LISTEN, "notifications/cancelled"})


async def serve_stdio(
    server: HubServer, cache: AnswerCache | None = None, early: EarlyAnswers | None = None
) -> None:
    """Serve one client over stdin/stdout until it closes stdin.

    `cache` keeps the answers to list requests for the next fast start (see
    `hub.fastfront`); `early` is what that fast start did before the hub was up: input it
    held back (served first) and requests it answered (asked again here; if an answer
    differs, clients get list_changed).
    """
    session = _Session(server, cache, early)
    with (
        private_stdin(session.initial, session.on_request) as stdin,
        event_loop_stdout(session.on_answer) as stdout,
    ):
        await session.serve(stdin, stdout)


async def serve_fds(
    server: HubServer,
    in_fd: int,
    out_fd: int,
    *,
    cache: AnswerCache | None = None,
    early: EarlyAnswers | None = None,
    replay: bytes = b"",
    swallow: set[Any] | None = None,
    events: Events | None = None,
) -> None:
    """Serve one client on descriptors handed over by its bridge (`hub.shared`), until input
    ends, as `serve_stdio` does on stdin/stdout. `replay` is read first (a dead process's
    handshake, replayed by the bridge); answers to the requests in `swallow` are not written
    (the client had them), nor the acknowledgements of those subscriptions."""
    session = _Session(server, cache, early, replay=replay, swallow=swallow, events=events)
    terminal = os.isatty(out_fd)  # left blocking (the user's terminal): written from a thread
    if _pollable(out_fd) and not terminal:
        os.set_blocking(out_fd, False)
    await session.serve(
        LineReader(in_fd, session.initial, session.on_request),
        FdWriter(out_fd, session.on_answer, threaded=terminal),
    )


class _Session:
    """One client's session on lines: the fast start's checks, the answer cache, and what the
    bridge is told and spared (see `serve_fds`)."""

    def __init__(
        self,
        server: HubServer,
        cache: AnswerCache | None,
        early: EarlyAnswers | None,
        *,
        replay: bytes = b"",
        swallow: set[Any] | None = None,
        events: Events | None = None,
    ) -> None:
        self.server = server
        self.cache = cache
        self.events = events
        self.swallow = set(swallow or ())
        checks = check_requests(early) if early is not None else []
        self.check_ids = {request_id for request_id, _ in checks}
        self.changed: set[str] = set()
        self.acknowledged = set(early.acknowledged) if early is not None else set()
        self.initial = (
            replay + (early.held if early else b"") + b"".join(line.encode() + b"\n" for _, line in checks)
        )
        if early is not None and early.answered:
            log.info("answered list requests from the last run while starting", requests=len(early.answered))

    def on_request(self, line: str) -> None:
        """Each line as it is read (before anything answers it): the answer cache sees
        requests, and the bridge hears of each one (see `Events`)."""
        if self.cache is not None:
            self.cache.saw_request(line)
        if self.events is None:
            return
        try:
            message = json.loads(line)
        except (ValueError, RecursionError):
            return
        method = message.get("method") if isinstance(message, dict) else None
        if method in KEPT_METHODS:
            self.events.keep(line)
        elif isinstance(method, str) and valid_id(request_id := message.get("id")):
            checking = isinstance(request_id, str) and request_id.startswith(CHECK_PREFIX)
            if not checking:  # the fast start's own questions are not the client's
                self.events.request(request_id)

    def on_answer(self, line: str) -> bool:
        """Keep answers for the next start; False drops the line (a check's answer, error or
        not; a second acknowledgement of a subscription the fast start acknowledged; an answer
        the client had)."""
        if self.swallow and not self._spared(line):
            return False
        if self.cache is None:
            return True
        seen = self.cache.saw_answer(line)
        if seen is None:
            return True
        request_id, key, differs = seen
        if differs:
            self.cache.save()
        if differs is not None and request_id in self.acknowledged and key.startswith(f"{LISTEN}|"):
            self.acknowledged.discard(request_id)
            return False
        if request_id not in self.check_ids:
            return True
        self.check_ids.discard(request_id)
        kind = TRACKED.get(key.split("|", 1)[0])
        if differs and kind:
            self.changed.add(kind)
        if not self.check_ids:
            for item in sorted(self.changed):
                self.server.hub.registry.on_change(item)  # type: ignore[arg-type]
            if self.changed:
                log.info(
                    "the start-up answers were out of date; clients were told", lists=sorted(self.changed)
                )
        return False

    def _spared(self, line: str) -> bool:
        """False for an answer to a replayed request, or the acknowledgement of a replayed listen."""
        try:
            message = json.loads(line)
        except ValueError:
            return True
        if not isinstance(message, dict):
            return True
        if "method" not in message:
            request_id = message.get("id")
            if not valid_id(request_id):
                return True
            # A replayed listen that is answered has ended: no acknowledgement will follow.
            self.swallow.discard(("ack", request_id))
            if request_id in self.swallow:
                self.swallow.discard(request_id)
                return False
            return True
        if message.get("method") == ACKNOWLEDGED:
            subscription = ((message.get("params") or {}).get("_meta") or {}).get(SUBSCRIPTION_KEY)
            if ("ack", subscription) in self.swallow:
                self.swallow.discard(("ack", subscription))
                return False
        return True

    async def serve(self, reader: LineReader, writer: FdWriter) -> None:
        server = self.server
        try:
            async with stdio_transport(reader, writer, server.fast_path, self.events) as (read, write):
                await server.mcp.run(read, write, server.mcp.create_initialization_options())
        finally:
            if self.cache is not None:
                with contextlib.suppress(OSError):
                    self.cache.save()
