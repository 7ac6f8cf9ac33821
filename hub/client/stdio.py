"""The hub's stdio client for downstream servers (`open_stdio`): one process, two ways to talk.

It replaces the SDK's `stdio_client` in `hub.client.cache` so that a forwarded call costs one
write and one read on the event loop:

- **The SDK session's streams** (`read`, `write`): `mcp.ClientSession` runs on them as on the
  SDK's transport, and stays in charge of the handshake, lists, notifications and everything a
  plugin asks of the session.
- **Raw requests** (`request`): a `tools/call` goes out as one JSON line with an id of its own
  (from `RAW_ID_BASE` up, never one the session uses) and its answer is matched on the read
  side before any SDK model is built, then handed back as the dict the server sent. Progress the
  server reports for it reaches the caller's callback, relayed by the caller's own task before
  the answer (a caller whose client stops reading holds up no one else; past `NOTES_KEPT`
  reports waiting, the oldest are dropped); a second answer to one id is dropped; a caller that
  is cancelled sends `notifications/cancelled`; a server that goes away fails it with
  `CONNECTION_CLOSED`, as the SDK does.

The server's stdout is read by a reader callback the event loop keeps registered (asyncio's
`add_reader`: no task wake-up, no re-registration per read), which answers raw requests on the
spot; messages for the SDK session are queued for one task (`_deliver`), in order, and reading
pauses while `QUEUE_PAUSE` of them wait. The hub runs on asyncio, so this file uses it directly
(its reader callbacks, its events). The process gets what the SDK's transport gives it: its own
session (process group), stderr to `errlog`, and on close: stdin closed, then `TERMINATION_S` to
exit, then SIGTERM to the group, then SIGKILL (the MCP shutdown order). With a `wrap`
(`hub.services.processes.dies_with_parent`, the hub passes it), it also dies when the hub dies,
kill -9 included, even if it ignores the end of its input. POSIX only, as the hub is.

A line that is not UTF-8 answering a request fails that request with an error that says so (its
id is read from the line); progress beyond what a caller relays is coalesced (`NOTES_KEPT`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from typing import IO, Any

import anyio
import anyio.lowlevel
import mcp_types as types
import structlog
from mcp import StdioServerParameters
from mcp.client.stdio import get_default_environment
from mcp.shared.exceptions import MCPError
from mcp.shared.message import SessionMessage

from hub.client.asking import AMBIGUOUS
from hub.client.sdk import create_context_streams  # what the SDK's own transports use
from hub.wire.fds import LINE_FINISH_S, write_line
from hub.wire.jsonrpc import NO_ID, ProgressFn, recover_id, valid_id
from hub.wire.lines import LineBuffer, Overlong

__all__ = ["QUEUE_PAUSE", "RAW_ID_BASE", "TERMINATION_S", "StdioDownstream", "open_stdio"]

log = structlog.get_logger("hub.connections")

RAW_ID_BASE = 1 << 40  # raw request ids; the SDK session counts up from 0
TERMINATION_S = 2.0  # after stdin closes, and again after SIGTERM (the SDK's figures)
PROGRESS_WAIT_S = 1.0  # for a caller to take a progress report before it is dropped
NOTES_KEPT = 64  # progress reports a caller has yet to relay; the oldest go first
QUEUE_PAUSE = 256  # messages waiting for the SDK session before the pipe is no longer read
_POLL_S = 0.02
_encode = json.JSONEncoder(separators=(",", ":")).encode  # compact, ASCII: what the wire gets
_CLOSED = {"error": {"code": types.CONNECTION_CLOSED, "message": "Connection closed"}}


class _Waiter:
    """A raw request's caller, woken (`wake`) by its answer (`message`) or by what it relays
    first (`notes`, the last `NOTES_KEPT` it has not relayed yet: progress reports, and log
    messages when the request's `caller` takes them)."""

    __slots__ = ("caller", "latest", "message", "notes", "progress", "reported", "wake")

    def __init__(self, progress: ProgressFn | None, caller: Any = None) -> None:
        self.wake = asyncio.Event()  # asyncio's own: anyio's costs a backend lookup per call
        self.message: dict[str, Any] | None = None
        self.notes: deque[tuple[str, dict[str, Any]]] = deque(maxlen=NOTES_KEPT)
        self.progress = progress
        self.caller = caller
        self.latest: dict[str, Any] | None = None  # the newest progress report (never dropped)
        self.reported: dict[str, Any] | None = None  # the last one relayed

    async def answer(self) -> dict[str, Any]:
        """The answer, after relaying the progress and log messages sent before it. The caller
        relays its own, so a caller whose client does not read holds up no one else."""
        while True:
            await self.wake.wait()
            self.wake.clear()
            while self.notes:
                kind, params = self.notes.popleft()
                if kind == "log":
                    await _relay_log(self.caller, params)
                elif self.progress is not None:
                    self.reported = params
                    await _report(self.progress, params)
            if self.message is not None and not self.notes:
                if self.latest is not None and self.latest is not self.reported and self.progress is not None:
                    await _report(self.progress, self.latest)  # the last report, even after a flood
                return self.message


class _Pipe:
    """Whole lines to the server's stdin (`write_line`: a cancelled caller's line is finished),
    never interleaved with another. The lock costs nothing uncontended (`fast_acquire`)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._lock = anyio.Lock(fast_acquire=True)

    async def send(self, data: bytes) -> None:
        async with self._lock:
            await write_line(self.fd, data)


class StdioDownstream:
    """A running downstream server process; see the module docstring."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        assert process.stdin is not None and process.stdout is not None
        self.process = process
        self._in_fd = process.stdin.fileno()
        self._out_fd = process.stdout.fileno()
        os.set_blocking(self._in_fd, False)
        os.set_blocking(self._out_fd, False)
        self._pipe = _Pipe(self._in_fd)
        self._waiters: dict[int, _Waiter] = {}
        self._ids = itertools.count(RAW_ID_BASE)
        self._read_send, self.read = create_context_streams[SessionMessage | Exception](0)
        self.write, self._write_recv = create_context_streams[SessionMessage](0)
        self._loop = asyncio.get_running_loop()
        self._lines = LineBuffer()
        self._queue: deque[Any] = deque()  # for `_deliver`: the session's messages
        self._wake = anyio.Event()
        self._reading = False
        self._ended = False  # stdout ended (or the transport is closing): raw requests fail
        self._session_gone = False  # the SDK session stopped reading: its messages are dropped
        # Which call a log message read now belongs to (`hub.client.asking.Calls.attribute`).
        self.attribute: Callable[[], Any] | None = None

    # -- raw requests -------------------------------------------------------------------------

    async def request(
        self, method: str, params: dict[str, Any], *, progress: ProgressFn | None = None, caller: Any = None
    ) -> dict[str, Any]:
        """Send `method` with `params`; the result dict, or `MCPError` for an error answer (and
        `CONNECTION_CLOSED` when the server went away). `caller` (`hub.client.asking.Caller`)
        gets the log messages `attribute` gives this request, before the answer."""
        if self._ended:
            raise MCPError(types.CONNECTION_CLOSED, "Connection closed")
        request_id = next(self._ids)
        if progress is not None:
            meta = params.get("_meta")
            params = {
                **params,
                "_meta": {**(meta if isinstance(meta, dict) else {}), "progressToken": request_id},
            }
        waiter = self._waiters[request_id] = _Waiter(progress, caller)
        line = _encode({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params})
        try:
            try:
                await self._pipe.send(line.encode() + b"\n")
            except (OSError, anyio.ClosedResourceError, anyio.BusyResourceError):
                self._broken()  # closed, or stuck with half a line written
                raise MCPError(types.CONNECTION_CLOSED, "Connection closed") from None
            answer = await waiter.answer()
        except BaseException:
            if waiter.message is None and not self._ended:
                cancel = {"requestId": request_id, "reason": "the hub's caller cancelled the request"}
                note = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": cancel}
                with anyio.CancelScope(shield=True), anyio.move_on_after(LINE_FINISH_S):
                    try:
                        await self._pipe.send(_encode(note).encode() + b"\n")
                    except (OSError, anyio.ClosedResourceError, anyio.BusyResourceError):
                        self._broken()
            raise
        finally:
            self._waiters.pop(request_id, None)
        if "result" in answer:
            result = answer["result"]
            return result if isinstance(result, dict) else {}
        error = answer.get("error")
        if not isinstance(error, dict):
            raise MCPError(
                types.INTERNAL_ERROR, f"the server's answer has neither result nor error: {answer!r:.200}"
            )
        code = error.get("code")
        raise MCPError(
            code if type(code) is int else types.INTERNAL_ERROR,
            str(error.get("message", "")),
            error.get("data"),
        )

    # -- reading ------------------------------------------------------------------------------

    def _start_reading(self) -> None:
        if not self._reading and not self._ended:
            self._reading = True
            self._loop.add_reader(self._out_fd, self._on_readable)

    def _stop_reading(self) -> None:
        if self._reading:
            self._reading = False
            self._loop.remove_reader(self._out_fd)

    def _on_readable(self) -> None:
        """The event loop's reader callback: read what is there and route each whole line."""
        try:
            chunk = os.read(self._out_fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            self._end()
            return
        for line in self._lines.feed(chunk):
            if line.strip():
                try:
                    self._route(line)
                except Exception:  # one bad message never costs the others
                    log.exception(
                        "a downstream message could not be routed", line=line[:200].decode(errors="replace")
                    )
        if len(self._queue) >= QUEUE_PAUSE:
            self._stop_reading()  # the session is slow to take messages; `_deliver` resumes

    def _route(self, line: bytes) -> None:
        try:
            message = json.loads(line)
        except UnicodeDecodeError as exc:
            self._not_utf8(line, exc)
            return
        except (ValueError, RecursionError) as exc:
            log.warning(
                "downstream server wrote a line that is not JSON", line=line[:200].decode(errors="replace")
            )
            self._queue_item(exc)
            return
        if type(message) is dict:
            answer_id = message.get("id")
            waiter = self._waiters.get(answer_id) if type(answer_id) is int else None
            if waiter is not None and "method" not in message:
                if waiter.message is None:  # a second answer to one id: the first stands
                    waiter.message = message
                    waiter.wake.set()
                return
            if message.get("method") == "notifications/message" and self._log_for_caller(message):
                return
            if message.get("method") == "notifications/progress":
                params = message.get("params")
                token = params.get("progressToken") if type(params) is dict else None
                waiter = self._waiters.get(token) if type(token) is int else None
                if waiter is not None:
                    if waiter.progress is not None and waiter.message is None and type(params) is dict:
                        waiter.notes.append(("progress", params))
                        waiter.latest = params
                        waiter.wake.set()
                    return
        try:
            parsed = types.jsonrpc_message_adapter.validate_python(message, by_name=False)
        except ValueError as exc:
            log.warning("downstream server sent a message that is not JSON-RPC", error=str(exc)[:200])
            self._queue_item(exc)
            return
        self._queue_item(SessionMessage(parsed))

    def _log_for_caller(self, message: dict[str, Any]) -> bool:
        """A log message, read while calls are in flight: whether it went to the call `attribute`
        names (relayed by that call's task before its answer, so in order) or was dropped
        because its call cannot be told; else the SDK session takes it."""
        params = message.get("params")
        if self.attribute is None or not self._waiters or type(params) is not dict:
            return False
        target = self.attribute()
        if target is AMBIGUOUS:
            log.debug("a downstream log message dropped: its call cannot be told")
            return True
        for waiter in reversed(self._waiters.values()):
            if target is not None and waiter.caller is target and waiter.message is None:
                waiter.notes.append(("log", params))
                waiter.wake.set()
                return True
        return False

    def _not_utf8(self, line: bytes, exc: UnicodeDecodeError) -> None:
        """A line that is not UTF-8 (JSON text must be): if it answers a request (its id found
        at its start or end), that request fails with an error saying so, instead of waiting
        forever for an answer it will never get."""
        bad = line[exc.start : exc.start + 4].hex(" ")
        problem = f"the server's answer is not valid UTF-8 (bytes {bad} at offset {exc.start})"
        log.warning("downstream server wrote a line that is not UTF-8", problem=problem)
        try:
            message = json.loads(line.decode("utf-8", errors="replace"))
        except (ValueError, RecursionError):
            message = None
        if isinstance(message, dict):
            answer_id = message.get("id") if "method" not in message else NO_ID
        else:
            answer_id = recover_id(line[: Overlong.HEAD], line[-Overlong.TAIL :])
        if not valid_id(answer_id):
            self._queue_item(exc)  # not an answer (or no id to be found): as any line that is not JSON
            return
        assert isinstance(answer_id, int | str)
        waiter = self._waiters.get(answer_id) if type(answer_id) is int else None
        if waiter is not None:
            if waiter.message is None:
                waiter.message = {"error": {"code": types.INTERNAL_ERROR, "message": problem}}
                waiter.wake.set()
            return
        error = types.JSONRPCError(
            jsonrpc="2.0", id=answer_id, error=types.ErrorData(code=types.INTERNAL_ERROR, message=problem)
        )
        self._queue_item(SessionMessage(error))  # the SDK session's request fails with it

    def _queue_item(self, item: Any) -> None:
        self._queue.append(item)
        self._wake.set()

    def _end(self) -> None:
        """The server's stdout ended, or the transport closes: fail raw requests still waiting
        (after the progress they have), and let `_deliver` end the session's stream."""
        self._stop_reading()
        self._ended = True
        for waiter in self._waiters.values():
            if waiter.message is None:
                waiter.message = _CLOSED
                waiter.wake.set()
        self._wake.set()

    async def _deliver(self) -> None:
        """Hand queued messages to the SDK session, in order."""
        async with self._read_send:
            while True:
                while self._queue:
                    item = self._queue.popleft()
                    if not self._session_gone:
                        try:
                            await self._read_send.send(item)
                        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                            self._session_gone = True  # raw requests may still be answered
                    if len(self._queue) < QUEUE_PAUSE // 2:
                        self._start_reading()
                if self._ended:
                    return
                self._wake = anyio.Event()
                await self._wake.wait()

    # -- writing and stopping -----------------------------------------------------------------

    async def _write_session(self) -> None:
        async with self._write_recv:
            async for session_message in self._write_recv:
                text = session_message.message.model_dump_json(by_alias=True, exclude_unset=True)
                try:
                    await self._pipe.send(text.encode() + b"\n")
                except (OSError, anyio.ClosedResourceError, anyio.BusyResourceError):
                    self._broken()  # the read side sees the server's output end
                    return

    def _broken(self) -> None:
        """The server's stdin cannot take a whole line any more: close it (the server sees the
        end of its input and exits; raw requests fail as its stdout ends)."""
        stdin = self.process.stdin
        if stdin is None or stdin.closed:
            return  # (its number may belong to another descriptor by now)
        anyio.notify_closing(self._in_fd)  # writers waiting on it get ClosedResourceError
        with contextlib.suppress(OSError):
            stdin.close()

    async def stop(self) -> None:
        """Close stdin, then SIGTERM, then SIGKILL the process group, each after `TERMINATION_S`."""
        self._broken()
        for sig in (None, signal.SIGTERM, signal.SIGKILL):
            if sig is not None:
                with contextlib.suppress(OSError):
                    os.killpg(self.process.pid, sig)
            with anyio.move_on_after(TERMINATION_S):
                while self.process.poll() is None:
                    await anyio.sleep(_POLL_S)
            if self.process.returncode is not None:
                break
        if self.process.returncode is None:
            log.warning("downstream server is still alive after SIGKILL; abandoning it", pid=self.process.pid)
        self._end()
        with contextlib.suppress(OSError):
            self.process.stdout.close()  # type: ignore[union-attr]


async def _relay_log(caller: Any, params: dict[str, Any]) -> None:
    """Relay one log message to the call's client (as `_report` relays progress)."""
    try:
        with anyio.move_on_after(PROGRESS_WAIT_S):
            await caller.relay_log(params)
    except Exception as exc:  # a client that went away
        log.debug("log message not relayed", error=str(exc))


async def _report(progress: ProgressFn, params: dict[str, Any]) -> None:
    """Relay one progress report; a caller that cannot take it within `PROGRESS_WAIT_S` (a
    client not reading its output) loses it rather than hold up this server's other messages."""
    try:
        total = params.get("total")
        message = params.get("message")
        with anyio.move_on_after(PROGRESS_WAIT_S):
            await progress(
                float(params["progress"]),
                float(total) if total is not None else None,
                message if isinstance(message, str) else None,
            )
    except Exception as exc:  # a malformed report, or a caller that went away
        log.debug("progress not relayed", error=str(exc))


_SPAWNER: concurrent.futures.ThreadPoolExecutor | None = None


def _spawner() -> concurrent.futures.ThreadPoolExecutor:
    """The one thread that starts every downstream server, alive as long as the process. A
    parent-death signal (`dies_with_parent`) is tied to the thread that forked the child, not to
    the process (prctl(2)): a server started from one of anyio's worker threads, which end when
    idle, would be killed with that thread."""
    global _SPAWNER
    if _SPAWNER is None:
        _SPAWNER = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="hub-spawn")
    return _SPAWNER


def _resolve(command: str, env: Mapping[str, str], cwd: str | None) -> str:
    """The executable `command` names, found as the child would find it (its PATH, its working
    directory), so a missing or unusable command fails here as it would without a launcher in
    front of it (`FileNotFoundError`, `PermissionError`)."""
    if os.sep in command:
        path = os.path.join(cwd, command) if cwd and not os.path.isabs(command) else command
        if not os.path.exists(path):
            raise FileNotFoundError(2, "No such file or directory", command)
        if os.path.isdir(path) or not os.access(path, os.X_OK):
            raise PermissionError(13, "Permission denied", command)
        return command
    found = shutil.which(command, path=env.get("PATH", os.defpath))
    if found is None:
        raise FileNotFoundError(2, "No such file or directory", command)
    return found


@contextlib.asynccontextmanager
async def open_stdio(
    params: StdioServerParameters,
    errlog: IO[str],
    wrap: Callable[[list[str]], list[str]] | None = None,
) -> AsyncIterator[StdioDownstream]:
    """Start `params` and yield its `StdioDownstream`, stopped (see `stop`) on the way out.
    `wrap` rewrites the command line (`hub.services.processes.dies_with_parent`, so that the
    server dies with this process even by kill -9). Raises `OSError` when the command cannot
    be started, as the SDK's `stdio_client` does."""
    env = get_default_environment() | (params.env or {})
    argv = [params.command, *params.args]
    if wrap is not None:
        argv = wrap([_resolve(params.command, env, str(params.cwd) if params.cwd else None), *params.args])

    def spawn() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=errlog,
            env=env,
            cwd=params.cwd,
            start_new_session=True,
        )

    # Off the event loop, and never abandoned half way: a process started is always stopped.
    with anyio.CancelScope(shield=True):
        process = await asyncio.get_running_loop().run_in_executor(_spawner(), spawn)
    downstream = StdioDownstream(process)
    try:
        await anyio.lowlevel.checkpoint()  # a cancel that came while it started: stop it now
        async with anyio.create_task_group() as tg:
            downstream._start_reading()
            tg.start_soon(downstream._deliver)
            tg.start_soon(downstream._write_session)
            try:
                yield downstream
            finally:
                with anyio.CancelScope(shield=True):
                    await downstream.write.aclose()
                    await downstream.stop()
                tg.cancel_scope.cancel()
    finally:
        downstream._end()
        if process.poll() is None:  # cancelled before stop() finished
            with contextlib.suppress(OSError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
