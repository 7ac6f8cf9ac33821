"""The hub's stdio transport: lines in, lines out, on the event loop, with every message answered.

It replaces the SDK's `stdio_server` for three reasons:

- malformed input is answered (`hub.server.hygiene.MessageCheck`) instead of dropped;
- at end of input, answers to every request already received are written before the session
  ends (the SDK closed the session at EOF, cancelling calls still running);
- any kind of stdin works: a pipe or socket (read on the event loop, so a signal can stop an
  idle hub), a regular file or ``/dev/null`` (read in a worker thread: epoll refuses them), a
  terminal (the hub says on stderr that it speaks MCP here), or no stdin at all (quiet exit).

While serving, fd 0 points at ``/dev/null`` and fd 1 at stderr (`private_stdin`,
`event_loop_stdout`), so nothing else (a plugin's child process, a stray print) can read the
protocol stream or corrupt it. `hub.launch.session` builds a client's session on this transport.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import stat
import sys
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from typing import Any, Protocol

import anyio
import mcp_types as types
import structlog
from mcp.shared.message import ServerMessageMetadata, SessionMessage

from hub.server.asking import ClientState, LinePusher
from hub.server.dispatch import Dispatch
from hub.server.hygiene import MessageCheck
from hub.server.sdk import create_context_streams
from hub.server.shortcuts import LineShortcut
from hub.wire.envelope import LISTEN, VERSION_KEY
from hub.wire.fds import FdWriter, LineReader, LineTooLong, tty_hint
from hub.wire.jsonrpc import NO_ID, error_response, valid_id

__all__ = ["Events", "event_loop_stdout", "private_stdin", "stdio_transport"]

log = structlog.get_logger("hub.server")


class Events(Protocol):
    """What a session tells the bridge that handed it over (`hub.launch.handoff`) of what it
    writes, so that if this process dies, at whatever instant, the bridge answers each request
    in flight exactly once. An answer is written in two steps: `writing()` before anything of it
    goes out, all of it but its newline, `answered(id)`, its newline (what makes a client take
    the line), then `committed()`. A line that is not an answer is written whole; if the client's
    pipe fills half way, `stalled()` and, once finished, `unstalled()`. What it reads, the bridge
    hears of from the reader's `hub.wire.fds.Journal`."""

    def writing(self) -> None: ...

    def answered(self, request_id: Any) -> None: ...

    def committed(self) -> None: ...

    def stalled(self) -> None: ...

    def unstalled(self) -> None: ...


def _stall_reports(events: Events) -> tuple[Callable[[], None], Callable[[], None]]:
    """(stalled, written) for a line that is not an answer: the bridge hears of it only if the
    client's pipe fills half way through it."""
    state = {"stalled": False}

    def stalled() -> None:
        state["stalled"] = True
        events.stalled()

    def written() -> None:
        if state["stalled"]:
            events.unstalled()

    return stalled, written


_NOT_AN_ANSWER = object()


@contextlib.contextmanager
def private_stdin(
    initial: bytes = b"", on_line: Callable[[str], None] | None = None, *, limit: int | None = None
) -> Iterator[LineReader]:
    """A reader on a private copy of fd 0 (lines over `limit` bytes refused), with fd 0 pointed
    at /dev/null while serving. A terminal gets one line on stderr saying what this is."""
    try:
        private = os.dup(0)
    except OSError:  # stdin is closed
        yield LineReader(-1, initial, on_line, limit=limit)
        return
    with contextlib.suppress(OSError):
        if os.isatty(private):
            print(tty_hint(), file=sys.stderr, flush=True)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    try:
        yield LineReader(private, initial, on_line, limit=limit)
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


class _Transport:
    """One connection's lines: read, checked and given to the SDK (or to the shortcut), answers
    written back whole; the ids of requests not answered yet are tracked, so end of input waits
    for them (see `stdio_transport`)."""

    def __init__(self, reader: LineReader, writer: FdWriter, events: Events | None) -> None:
        self.reader = reader
        self.writer = writer
        self.events = events
        self.read_send, self.read_recv = create_context_streams[SessionMessage | Exception](0)
        self.write_send, self.write_recv = create_context_streams[SessionMessage](0)
        self.check = MessageCheck(track_initialize=True)
        self.pending: set[Any] = set()  # ids of requests not answered yet
        self.settled = anyio.Event()
        self.lock = anyio.Lock(fast_acquire=True)  # uncontended: no trip through the event loop
        self.reading = anyio.CancelScope()
        self.gone = False  # the client closed its end of stdout: nothing more can be said
        self.shortcut: LineShortcut | None = None
        # The client as the relay needs it: requests to it outside the SDK, and what it declared.
        self.pusher = LinePusher(self.emit)
        self.state = ClientState(request=self.pusher.request, notify=self.pusher.notify)
        self.metadata = ServerMessageMetadata(request_context=self.state)  # ctx.request in handlers
        self.first_request = True
        # The shortcut's tasks are asyncio's own, started from the reader's callback: an anyio
        # task group's start_soon costs 25 us a call, a twentieth of the hub's whole work on one.
        self.loop = asyncio.get_running_loop()
        self.tasks: set[asyncio.Task[None]] = set()

    async def emit(self, text: str, answer_id: Any = _NOT_AN_ANSWER) -> None:
        """Write one whole line; `answer_id`: the request it answers (see `Events`)."""
        if self.gone:
            return
        events = self.events
        async with self.lock:
            try:
                if events is None:
                    await self.writer.write(text)
                elif answer_id is _NOT_AN_ANSWER:
                    stalled, written = _stall_reports(events)
                    await self.writer.write(text, stalled=stalled, written=written)
                else:
                    events.writing()
                    await self.writer.write(
                        text, before_newline=lambda: events.answered(answer_id), written=events.committed
                    )
            except OSError:  # closed by the client, or not read for LINE_FINISH_S
                self.gone = True
                self.reading.cancel()  # the session ends as if input had ended

    def answered(self, request_id: Any) -> None:
        """`request_id` needs no more waiting for (answered, or cancelled)."""
        self.pending.discard(request_id)
        if not self.pending:
            self.settled.set()

    def take(self, line: str) -> bool:
        """In the reader's callback: whether `line` is taken here (not given to the SDK): the
        client's answer to one of the hub's requests, or a request the shortcut answers."""
        if self.pusher.answer(line):
            return True
        if self.shortcut is None:
            return False
        taken = self.shortcut.take(line)
        if taken is None:
            return False
        self.pending.add(taken)
        return True

    def spawn(self, fn: Callable[..., Coroutine[Any, Any, None]], *args: Any) -> None:
        task: asyncio.Task[None] = self.loop.create_task(fn(*args))
        self.tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("a forwarded call's task failed", exc_info=task.exception())

    async def read_lines(self) -> None:
        with self.reading:
            async with self.read_send:
                async for line in self.reader:
                    if isinstance(line, LineTooLong):
                        await self._refuse(line)
                    elif line.strip():
                        await self._read_line(line)
                # End of input: let the calls already received finish and be answered first.
                while self.pending:
                    self.settled = anyio.Event()
                    await self.settled.wait()

    async def _read_line(self, line: str) -> None:
        parsed, answer = self.check.parse(line)
        if parsed is None:
            if answer is not None:
                request_id = answer.get("id") if isinstance(answer, dict) else None
                # The bridge heard of it as a request: it hears of the answer.
                await self.emit(
                    json.dumps(answer) + "\n", request_id if valid_id(request_id) else _NOT_AN_ANSWER
                )
            return
        message = parsed.message
        if parsed.metadata is None:
            parsed.metadata = self.metadata
        if isinstance(message, types.JSONRPCRequest):
            if message.method == "initialize":
                declared = (message.params or {}).get("capabilities")
                self.state.capabilities = declared if isinstance(declared, dict) else {}
            if self.first_request:  # it fixes the connection's era, as the SDK fixes it
                self.first_request = False
                meta = (message.params or {}).get("_meta")
                self.state.modern = isinstance(meta, dict) and VERSION_KEY in meta
            if self.shortcut is not None:
                self.shortcut.saw_request(message.method, message.id, message.params)
            if message.method != LISTEN:  # stays open until cancelled: not waited for at the end
                self.pending.add(message.id)
        elif isinstance(message, types.JSONRPCNotification) and message.method == "notifications/cancelled":
            cancelled = (message.params or {}).get("requestId")
            if valid_id(cancelled):
                self.pending.discard(cancelled)
            if self.shortcut is not None and self.shortcut.cancel(cancelled):
                return
        await self.read_send.send(parsed)

    async def _refuse(self, line: LineTooLong) -> None:
        """A request line over the limit, read past: answered with an error (with its id when
        one could be found at its start or end), and the session goes on."""
        limit = self.reader.limit
        log.warning("a request line over the size limit was refused", size=line.size, limit=limit)
        request_id = None if line.request_id is NO_ID else line.request_id
        message = (
            f"request of {line.size:,} bytes is over the hub's limit of {limit:,} bytes per message "
            "([limits] max_line_bytes in hub.toml); it was not read"
        )
        answer = error_response(request_id, types.INVALID_REQUEST, message)
        await self.emit(json.dumps(answer) + "\n", _NOT_AN_ANSWER if request_id is None else request_id)

    async def write_lines(self) -> None:
        async with self.write_recv:
            async for session_message in self.write_recv:
                message = session_message.message
                try:
                    text = message.model_dump_json(by_alias=True, exclude_unset=True)
                except ValueError:  # pydantic cannot write a lone surrogate (a downstream's "\ud800")
                    dumped = message.model_dump(by_alias=True, exclude_unset=True)
                    text = json.dumps(dumped, ensure_ascii=False, default=str)
                answers = isinstance(message, types.JSONRPCResponse | types.JSONRPCError)
                await self.emit(text + "\n", getattr(message, "id", None) if answers else _NOT_AN_ANSWER)
                if isinstance(message, types.JSONRPCResponse | types.JSONRPCError):
                    if self.shortcut is not None:
                        result = message.result if isinstance(message, types.JSONRPCResponse) else None
                        self.shortcut.answered(message.id, result)
                    self.answered(message.id)

    async def close(self) -> None:
        self.pusher.close()
        with anyio.CancelScope(shield=True):
            await self.state.close()
        self.reading.cancel()
        self.reader.close()
        if self.tasks:  # the session is over: its calls end, and their servers hear it
            for task in self.tasks:
                task.cancel()
            with anyio.CancelScope(shield=True):
                await asyncio.wait(set(self.tasks))
        await self.write_send.aclose()


@contextlib.asynccontextmanager
async def stdio_transport(
    reader: LineReader, writer: FdWriter, dispatch: Dispatch | None = None, events: Events | None = None
) -> AsyncIterator[tuple[Any, Any]]:
    """(read stream, write stream) for `Server.run`, like the SDK's `stdio_server`. With
    `dispatch` (the server's `Dispatch`), raw-result calls and cached lists are answered by a
    `LineShortcut` without going through the SDK server; `events` hears of every request and
    answer (the bridge's bookkeeping, `hub.launch.session`)."""
    transport = _Transport(reader, writer, events)
    async with anyio.create_task_group() as tg:
        if dispatch is not None:
            dispatch.client_opened(transport.state)
            transport.shortcut = LineShortcut(
                dispatch,
                transport.emit,
                transport.spawn,
                transport.answered,
                transport.state,
                transport.pusher,
            )
        reader.take = transport.take
        tg.start_soon(transport.write_lines)
        tg.start_soon(transport.read_lines)
        try:
            yield transport.read_recv, transport.write_send
        finally:
            await transport.close()
