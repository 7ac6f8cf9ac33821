"""The shared hub process: one `Hub` serving every bridge of a launch over a Unix socket.

`hub serve` over stdio is a thin bridge (`hub.launch.bridge`); this is what it connects to. Each
connection is its own MCP session (either protocol era) on the hub's one `HubServer`, so every
plugin's services are shared: downstream connections, pool slots and queue, batch polling,
budget, context. The process exits after `[daemon] idle_exit_s` with no session connected and no
work in progress (`Hub.busy`), on SIGTERM/SIGINT, and when `hub stop` asks (`hub.launch.control`:
its bridges are told, and end their sessions instead of starting another process). Started by a
bridge as `hub shared --key KEY --socket PATH [the launch's options]`; never by hand.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import itertools
import json
import os
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
import structlog

from hub.launch.control import CONTROL, is_control
from hub.launch.dashboard_answers import QUESTIONS, answer_dashboard
from hub.launch.handoff import HANDOFF, classify, encode_event
from hub.services.budget import SPENDING_SESSION
from hub.wire.fds import Take
from hub.wire.jsonrpc import NO_ID, recover_id

if TYPE_CHECKING:
    from hub.config.settings import HubConfig
    from hub.host import Hub

__all__ = ["SharedProcess", "describe", "serve_shared"]

log = structlog.get_logger("hub.shared")
SEND_BUFFER = 1 << 20  # bytes of events the socket holds for a bridge that reads them in batches
EVENT_MAX = 1 << 16  # bytes of a kept line (an `initialize`) the bridge is told of; larger: left out
ID_MAX = 1024  # bytes of a request id the bridge is told of; a larger one is left out
BYE_TIMEOUT_S = 5.0
SETTLE_S = 0.05  # an idle session tells its bridge this late that its last answer is out
_ids = itertools.count(1)


def _peer_pid(sock: socket.socket) -> int | None:
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
    except (OSError, AttributeError):
        return None
    return int.from_bytes(creds[:4], "little")


async def _serve_connection(process: SharedProcess, stream: anyio.abc.SocketStream) -> None:
    """One connection: a bridge's handoff, a control question (`hub.launch.control`), or an MCP
    session on the socket itself (the bridge's liveness probe, or any client speaking lines)."""
    from hub.server.stdio import stdio_transport
    from hub.wire.fds import FdWriter, LineReader

    hub = process.hub
    raw: socket.socket = stream.extra(anyio.abc.SocketAttribute.raw_socket)
    fds: list[int] = []
    session_id: int | None = None
    try:
        first, fds = await _first_message(raw)
        if not fds and is_control(first):
            await process.answer(raw, first)
            return
        session_id = process.session_opened(raw)
        SPENDING_SESSION.set(process.session_label(session_id))  # spend is shown by session
        if fds:
            await _serve_handoff(process, raw, first, fds, session_id)
        else:
            # Read and written on its descriptor directly, not through the anyio stream, which
            # costs a trip through the event loop per message.
            limit = hub.config.limits.max_line_bytes
            reader, writer = LineReader(raw.fileno(), first, limit=limit), FdWriter(raw.fileno())
            async with stdio_transport(reader, writer, hub.server.dispatch) as (read, write):
                await hub.server.mcp.run(read, write, hub.server.mcp.create_initialization_options())
    except Exception as exc:  # one session's failure never stops the others
        log.warning("session ended with an error", session=session_id, error=str(exc))
    finally:
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        if session_id is not None:
            process.session_closed(session_id)
        await stream.aclose()


async def _first_message(raw: socket.socket) -> tuple[bytes, list[int]]:
    """The connection's first bytes, and the descriptors sent with them (a bridge's handoff);
    a handoff line is read to its end."""
    while True:
        await anyio.wait_readable(raw)
        try:
            data, fds, _, _ = socket.recv_fds(raw, 65536, 2)
        except BlockingIOError:
            continue
        break
    for fd in fds:  # the client's pipes are not for this process's children
        os.set_inheritable(fd, False)
    while fds and data and not data.endswith(b"\n"):
        await anyio.wait_readable(raw)
        try:
            more = raw.recv(65536)
        except BlockingIOError:
            continue
        if not more:
            break
        data += more
    return data, fds


class _Reporter:
    """The control events for the bridge (`hub.launch.handoff`): the session's `Journal` (what
    it takes from the client's input, told before it takes it) and its `Events` (answers, told
    before the newline that delivers them). Each is sent at once, not batched: the bridge must
    know of every request and answer at whatever instant this process is killed. What the socket cannot take
    yet waits here, and meanwhile the session reads no more of its client's input (`taking`
    says to wait, `when_ready` resumes it), so a bridge that does not read (stopped) holds up its
    own session only, and this process keeps no more than the answers in flight."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.out = bytearray()  # what the socket did not take yet
        self.loop = asyncio.get_running_loop()
        self.gone = False
        self.watching = False  # the event loop calls `flush` when the socket can take more
        self.waiting: list[Callable[[], None]] = []  # `when_ready` callbacks
        # What the bridge was last told of a line begun (nothing yet: the first take says).
        self.inside: tuple[Any, Any] = (None, None)
        self.committing = False  # an answer's newline is out and the bridge was not told yet
        self.settle: asyncio.TimerHandle | None = None
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)

    # -- the journal: what the session takes from its client's input ---------------------------

    def taking(self, take: Take) -> bool:
        """Tell the bridge of the requests and kept lines `take` completes; True once that is in
        the socket (the bytes may be taken), False to wait for `when_ready`."""
        if self.gone:
            return True
        requests, keep = [], []
        for line in take.lines:
            kind, value = classify(line)
            if kind == "request":
                requests.append(value)
            elif kind == "keep":
                keep.append(value)
        inside_id = recover_id(*take.begun) if take.inside else NO_ID
        inside = (take.inside, None if inside_id is NO_ID else inside_id)
        if not requests and not keep and inside == self.inside:
            return True  # nothing the bridge would do differently (a piece of a long line ...)
        self.inside = inside
        event: dict[str, Any] = {"n": take.size, "r": _small(requests), "k": _small(keep, EVENT_MAX)}
        event["in"], event["id"] = inside
        if take.crc is not None:
            event["crc"] = take.crc
        self._send(encode_event("T", event))
        return not self.out

    def when_ready(self, callback: Callable[[], None]) -> None:
        """Call `callback` once everything waiting was sent."""
        if self.out and not self.gone:
            self.waiting.append(callback)
        else:
            self.loop.call_soon(callback)

    # -- events: what the session wrote to its client -----------------------------------------

    def writing(self) -> None:
        self.committing = False  # `W` says the last answer's newline is out too
        self._send(_W)

    def answered(self, request_id: Any) -> None:
        encoded = _int_id(request_id) or json.dumps(request_id).encode()
        self._send(b"A " + encoded + b"\n" if len(encoded) <= ID_MAX else b"A null\n")

    def committed(self) -> None:
        """The answer's newline is out. Said with the next event (any says it), or after
        `SETTLE_S` if none comes first: a busy session pays nothing for it, an idle one a timer."""
        self.committing = True
        if self.settle is None:
            self.settle = self.loop.call_later(SETTLE_S, self._settled)

    def _settled(self) -> None:
        self.settle = None
        if self.committing:
            self._send(b"")

    def stalled(self) -> None:
        self._send(_O)

    def unstalled(self) -> None:
        self._send(_C)

    # -- sending ------------------------------------------------------------------------------

    def _send(self, data: bytes) -> None:
        if self.gone:
            return
        if self.committing:  # the newline of the last answer is out: say so first
            self.committing = False
            data = _N + data
        if self.out:
            self.out += data
        else:  # nothing waits: straight to the socket
            try:
                sent = self.sock.send(data)
            except BlockingIOError:
                sent = 0
            except OSError:  # the bridge went away: the session is being cancelled
                self.gone = True
                return
            if sent == len(data):
                return
            self.out += data[sent:]
        self.flush()

    def flush(self) -> None:
        if self.gone:
            return
        if self.out:
            try:
                sent = self.sock.send(self.out)
            except BlockingIOError:
                sent = 0
            except OSError:  # the bridge went away: the session is being cancelled
                self.gone = True
                sent = len(self.out)
            del self.out[:sent]
        if self.out and not self.watching:
            self.watching = True
            self.loop.add_writer(self.sock.fileno(), self.flush)
        elif not self.out:
            if self.watching:
                self.watching = False
                self.loop.remove_writer(self.sock.fileno())
            waiting, self.waiting = self.waiting, []
            for callback in waiting:
                self.loop.call_soon(callback)

    async def bye(self) -> None:
        """The session is over: say so, and see it sent (a bridge that misses it would take
        this process for dead)."""
        if self.gone:
            return
        rest = bytes(self.out) + encode_event("B")
        # From here this sends the rest alone: the writer `flush` registered would be removed
        # under the wait below.
        self.close()
        with anyio.move_on_after(BYE_TIMEOUT_S):
            while rest:
                await anyio.wait_writable(self.sock)
                try:
                    rest = rest[self.sock.send(rest) :]
                except BlockingIOError:
                    continue
                except OSError:
                    break

    def stopped(self) -> None:
        """The process is being stopped (`hub stop`): the bridge ends its session instead of
        starting another process. Sent at once; a bridge that does not read misses it."""
        if self.gone:
            return
        data = bytes(self.out) + encode_event("S")
        with contextlib.suppress(OSError):
            self.sock.send(data)
        self.close()

    def close(self) -> None:
        if self.settle is not None:
            self.settle.cancel()
            self.settle = None
        if self.watching:
            self.loop.remove_writer(self.sock.fileno())
        self.watching, self.gone = False, True
        self.out.clear()
        waiting, self.waiting = self.waiting, []
        for callback in waiting:
            self.loop.call_soon(callback)


_W, _N, _O, _C = (encode_event(kind) for kind in "WNOC")


def _int_id(value: Any) -> bytes:
    """An integer id as JSON, without json.dumps (the common case); b"" for any other."""
    return str(value).encode() if type(value) is int else b""


def _small(values: list[Any], limit: int = ID_MAX) -> list[Any]:
    """`values` without those too large to tell the bridge (a 3 MB request id: no real client
    sends one; the bridge cannot answer for that request after a crash)."""
    kept = [value for value in values if len(json.dumps(value)) <= limit]
    if len(kept) < len(values):
        log.info("an event too large to tell the bridge was left out", left_out=len(values) - len(kept))
    return kept


async def _serve_handoff(
    process: SharedProcess, raw: socket.socket, first: bytes, fds: list[int], session_id: int
) -> None:
    """Serve the client whose stdin and stdout a bridge handed over (`hub.launch.handoff`)."""
    hub = process.hub
    from hub.launch.fast_start import AnswerCache, EarlyAnswers
    from hub.launch.session import serve_fds

    message = json.loads(first)[HANDOFF]
    process.client_known(session_id, message.get("client"))
    cache = None
    if message.get("cache"):
        cache = AnswerCache(Path(message["cache"]["path"]), message["cache"]["fingerprint"])
    early = EarlyAnswers.from_json(message["early"]) if message.get("early") is not None else None
    swallow: set[Any] = set(message.get("swallow", []))
    swallow |= {("ack", subscription) for subscription in message.get("swallow_acks", [])}
    reporter = _Reporter(raw)
    process.reporters.add(reporter)
    async with anyio.create_task_group() as tg:

        async def bridge_gone() -> None:
            """The bridge never writes after the handoff: readable means it closed."""
            await anyio.wait_readable(raw)
            log.info("the bridge went away; cancelling its session", bridge_pid=_peer_pid(raw))
            tg.cancel_scope.cancel()

        tg.start_soon(bridge_gone)
        try:
            await serve_fds(
                hub.server,
                fds[0],
                fds[1] if len(fds) > 1 else fds[0],
                cache=cache,
                early=early,
                replay=message.get("replay", "").encode("latin-1"),
                swallow=swallow,
                events=reporter,
                journal=reporter,
                limit=hub.config.limits.max_line_bytes,
                skip_first=bool(message.get("skip_first")),
            )
            for fd in fds:  # the client sees the end of its output once the bridge exits too
                with contextlib.suppress(OSError):
                    os.close(fd)
            fds.clear()
            await reporter.bye()
        finally:
            reporter.close()
            process.reporters.discard(reporter)
        tg.cancel_scope.cancel()


class SharedProcess:
    """The shared process of one launch: its hub, its sessions, its idle timer, and the answers
    to `hub status` and `hub stop` (`hub.launch.control`)."""

    def __init__(self, hub: Hub, key: str, socket_path: Path, idle_exit_s: float) -> None:
        self.hub = hub
        self.key = key
        self.socket_path = socket_path
        self.idle_exit_s = idle_exit_s
        self.idle_since: float | None = time.monotonic()
        self.reporters: set[_Reporter] = set()
        self.stop_scope = anyio.CancelScope()
        self.bound: tuple[int, int] | None = None  # the socket file's device and inode
        self.start_lock_fd: int | None = None  # the start lock inherited from our bridge, until we listen

    def remove_socket(self) -> None:
        """Remove the socket path if it is still this process's socket: a process that was
        stopped or wedged long enough for a bridge to start another one at the same path must
        not remove its successor's. Checked and removed under the launch's start lock (which
        bridges hold while they replace a socket); if a bridge holds it now, the path is left
        alone (the bridge replaces it anyway)."""
        if self.bound is None:
            return
        lock_path = self.socket_path.with_suffix(".lock")
        try:
            lock = open(lock_path, "a+")
        except OSError:
            return
        with lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                log.info("a bridge is replacing the socket; leaving it", socket=str(self.socket_path))
                return
            with contextlib.suppress(OSError):
                info = os.lstat(self.socket_path)
                if (info.st_dev, info.st_ino) == self.bound:
                    self.socket_path.unlink()
                else:
                    log.info(
                        "the socket path is another process's now; leaving it", socket=str(self.socket_path)
                    )

    # -- sessions ----------------------------------------------------------------------------

    def session_opened(self, raw: socket.socket) -> int:
        session_id = next(_ids)
        self.hub.sessions[session_id] = {
            "session": session_id,
            "bridge_pid": _peer_pid(raw),
            "connected_at": round(time.time(), 3),
        }
        self.hub.session_changed.set()
        log.info("session connected", session=session_id, sessions=len(self.hub.sessions))
        return session_id

    def session_label(self, session_id: int) -> str:
        """What the session is called where its spend is shown (the dashboard's chart): its
        Claude Code session when the bridge said which, else its bridge's pid."""
        entry = self.hub.sessions.get(session_id, {})
        claude = entry.get("claude_session")
        if isinstance(claude, str) and claude:
            return f"claude {claude[:8]}"
        return f"bridge pid {entry.get('bridge_pid')}"

    def client_known(self, session_id: int, client: Any) -> None:
        """The bridge said who its client is (`hub.launch.bridge`): its Claude Code session, its
        working directory; recorded with the session and used from now on for its spend."""
        entry = self.hub.sessions.get(session_id)
        if entry is None or not isinstance(client, dict):
            return
        entry["claude_session"] = str(client.get("claude_session") or "") or None
        entry["cwd"] = client.get("cwd") if isinstance(client.get("cwd"), str) else None
        SPENDING_SESSION.set(self.session_label(session_id))

    def session_closed(self, session_id: int) -> None:
        self.hub.sessions.pop(session_id, None)
        self.hub.session_changed.set()
        log.info("session closed", session=session_id, sessions=len(self.hub.sessions))

    # -- control questions ---------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """What `hub status` shows of this process besides what the store has."""
        idle_for = None if self.idle_since is None else time.monotonic() - self.idle_since
        config = self.hub.config
        return {
            "pid": os.getpid(),
            "key": self.key,
            "sessions": len(self.hub.sessions),
            "work": {plugin: count for plugin, count in self.hub.work.items() if count},
            "idle_s": None if idle_for is None else round(idle_for, 1),
            "exits_in_s": None if idle_for is None else round(max(0.0, self.idle_exit_s - idle_for), 1),
            "idle_exit_s": self.idle_exit_s,
            "cwd": os.getcwd(),
            "config_files": [path for _, path in config.scopes],
            "state_dir": str(config.state_dir),
        }

    async def answer(self, raw: socket.socket, first: bytes) -> None:
        """Answer one control question and, for an accepted `stop`, stop."""
        try:
            question = json.loads(first)[CONTROL]
            ask = question["ask"]
        except (ValueError, KeyError, TypeError):
            await _send_line(raw, {"error": "not a control question"})
            return
        status = self.status()
        if ask == "status":
            await _send_line(raw, status)
        elif ask in QUESTIONS:
            await _send_line(raw, await answer_dashboard(self.hub, ask, question, status))
        elif ask == "stop":
            busy = status["sessions"] or status["work"]
            if busy and not question.get("force"):
                await _send_line(raw, {**status, "stopped": False})
                return
            await _send_line(raw, {**status, "stopped": True})
            self.stop()
        else:
            await _send_line(raw, {"error": f"unknown question {ask!r}"})

    def stop(self) -> None:
        """Stop serving: every bridge is told (it ends its session), then the hub stops."""
        log.info("stopping on request (hub stop)", sessions=len(self.hub.sessions), work=self.hub.work)
        for reporter in list(self.reporters):
            reporter.stopped()
        self.stop_scope.cancel()

    # -- running -------------------------------------------------------------------------------

    async def exit_when_idle(self) -> None:
        recorded = -1
        hub = self.hub
        while True:
            hub.session_changed = anyio.Event()
            if len(hub.sessions) != recorded:
                recorded = len(hub.sessions)
                await hub.instances.set_sessions(recorded)
            if hub.sessions or hub.busy():
                self.idle_since = None
            elif self.idle_since is None:
                self.idle_since = time.monotonic()
            elif time.monotonic() - self.idle_since >= self.idle_exit_s:
                log.info("idle: no session and no work; exiting", idle_exit_s=self.idle_exit_s)
                self.stop_scope.cancel()
                return
            with anyio.move_on_after(min(1.0, max(0.05, self.idle_exit_s / 4))):
                await hub.session_changed.wait()

    async def serve(self) -> None:
        """Serve bridges until idle, stopped or signalled."""
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()  # we hold the start lock (with our bridge): any file here is stale
        listener = await anyio.create_unix_listener(self.socket_path)
        os.chmod(self.socket_path, 0o600)
        info = os.lstat(self.socket_path)
        self.bound = (info.st_dev, info.st_ino)
        if self.start_lock_fd is not None:  # listening: the next bridge may take the lock now
            with contextlib.suppress(OSError):
                os.close(self.start_lock_fd)
            self.start_lock_fd = None
        log.info(
            "shared hub serving", socket=str(self.socket_path), key=self.key, idle_exit_s=self.idle_exit_s
        )
        with self.stop_scope:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._stop_on_signal)
                tg.start_soon(self.exit_when_idle)
                tg.start_soon(self._exit_when_store_lost)
                async with listener:
                    await listener.serve(lambda stream: _serve_connection(self, stream), task_group=tg)

    async def _exit_when_store_lost(self) -> None:
        """The database was deleted or replaced (`StoreLost`): exit, as if this process had died,
        so each bridge starts a new one on the file now at that path and its session goes on
        (calls in flight are answered "the hub restarted"); `S` is not sent, which would end them."""
        await self.hub.store_lost.wait()
        log.error("exiting: the store was deleted or replaced; the next bridge starts a new process")
        self.stop_scope.cancel()

    async def _stop_on_signal(self) -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            async for signum in signals:
                log.info("signal received; shutting down", signal=signum.name)
                self.stop_scope.cancel()
                return


async def _send_line(raw: socket.socket, answer: dict[str, Any]) -> None:
    data = json.dumps(answer).encode() + b"\n"
    with anyio.move_on_after(2):
        while data:
            await anyio.wait_writable(raw)
            try:
                data = data[raw.send(data) :]
            except BlockingIOError:
                continue
            except OSError:
                return


async def serve_shared(
    config: HubConfig, key: str, socket_path: Path, start_lock_fd: int | None = None
) -> None:
    """Serve bridges on `socket_path` until idle for `[daemon] idle_exit_s`, stopped, or a signal.
    `start_lock_fd`: the start lock the bridge that started us holds, closed once we listen."""
    from hub.host import Hub

    async with Hub(config) as hub:
        await hub.instances.mark_shared(key, str(socket_path))
        process = SharedProcess(hub, key, socket_path, config.daemon.idle_exit_s)
        process.start_lock_fd = start_lock_fd
        try:
            await process.serve()
        finally:
            process.remove_socket()


def describe(instance: Any) -> dict[str, Any]:
    """One shared process as `hub status` shows it."""
    rss = None
    try:
        for line in Path(f"/proc/{instance.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * 1024
    except OSError:
        pass
    return {
        "instance": instance.id,
        "pid": instance.pid,
        "key": instance.share_key,
        "sessions": instance.sessions,
        "uptime_s": round(time.time() - instance.started_at, 1),
        "rss_mb": round(rss / 2**20, 1) if rss is not None else None,
        "cwd": instance.cwd,
        "socket": instance.socket,
        "version": instance.version,
    }
