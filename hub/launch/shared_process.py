"""The shared hub process: one `Hub` serving every bridge of a launch over a Unix socket.

`hub serve` over stdio is a thin bridge (`hub.launch.bridge`); this is what it connects to. Each
connection is its own MCP session (either protocol era) on the hub's one `HubServer`, so every
plugin's services are shared: downstream connections, pool slots and queue, batch polling,
budget, context. The process exits after `[daemon] idle_exit_s` with no session connected and no
work in progress (`Hub.busy`), and on SIGTERM/SIGINT. Started by a bridge as
`hub shared --key KEY --socket PATH [the launch's options]`; never by hand.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import signal
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
import structlog

from hub.launch.handoff import HANDOFF, encode_event

if TYPE_CHECKING:
    from hub.config.settings import HubConfig
    from hub.host import Hub

__all__ = ["serve_shared"]

log = structlog.get_logger("hub.shared")
REPORT_BUFFER = 1 << 20  # bytes of events a bridge may leave unread
EVENT_MAX = 1 << 16  # bytes of one event; a larger one (a 3 MB request id) is left out
BYE_TIMEOUT_S = 5.0
_ids = itertools.count(1)


def _peer_pid(sock: socket.socket) -> int | None:
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
    except (OSError, AttributeError):
        return None
    return int.from_bytes(creds[:4], "little")


async def _serve_connection(hub: Hub, stream: anyio.abc.SocketStream) -> None:
    from hub.server.stdio import stdio_transport
    from hub.wire.fds import FdWriter, LineReader

    raw: socket.socket = stream.extra(anyio.abc.SocketAttribute.raw_socket)
    session_id = next(_ids)
    hub.sessions[session_id] = {
        "session": session_id,
        "bridge_pid": _peer_pid(raw),
        "connected_at": round(time.time(), 3),
    }
    hub.session_changed.set()
    log.info("session connected", session=session_id, sessions=len(hub.sessions))
    fds: list[int] = []
    try:
        first, fds = await _first_message(raw)
        if fds:
            await _serve_handoff(hub, raw, first, fds)
        else:
            # A session on the socket itself (the bridge's liveness probe, or any client that
            # speaks MCP lines here): its descriptor is read and written directly, not through
            # the anyio stream, which costs a trip through the event loop per message.
            reader, writer = LineReader(raw.fileno(), first), FdWriter(raw.fileno())
            async with stdio_transport(reader, writer, hub.server.dispatch) as (read, write):
                await hub.server.mcp.run(read, write, hub.server.mcp.create_initialization_options())
    except Exception as exc:  # one session's failure never stops the others
        log.warning("session ended with an error", session=session_id, error=str(exc))
    finally:
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        hub.sessions.pop(session_id, None)
        hub.session_changed.set()
        log.info("session closed", session=session_id, sessions=len(hub.sessions))
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
    """The control events for the bridge (`hub.transport.stdio.Events`, see `hub.handoff`),
    written once per turn of the event loop however many there were, never blocking: a bridge
    that does not read (stopped) has them buffered, up to `REPORT_BUFFER` bytes, after which it
    is no longer told (it can no longer answer for a dead process, and says so when it must).
    One event over `EVENT_MAX` bytes is left out (the bridge cannot answer for that request)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.parts: list[bytes] = []
        self.loop = asyncio.get_running_loop()
        self.waiting = b""  # what the socket did not take yet
        self.gone = False

    def request(self, request_id: Any) -> None:
        self._add(encode_event("R", request_id))

    def answered(self, request_id: Any) -> None:
        self._add(encode_event("A", request_id))

    def keep(self, line: str) -> None:
        self._add(encode_event("K", line))

    async def bye(self) -> None:
        """The session is over: say so, and see it sent (a bridge that misses it would take
        this process for dead)."""
        if self.gone:
            return
        rest = self.waiting + b"".join(self.parts) + encode_event("B", None)
        # From here this sends the rest alone: a flush still scheduled would remove the writer
        # this waits on (anyio's), and it would wait out BYE_TIMEOUT_S.
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

    def _add(self, data: bytes) -> None:
        if self.gone:
            return
        if len(data) > EVENT_MAX:  # no real client sends one; it would fill the buffer by itself
            log.info("an event too large to tell the bridge was left out", size=len(data))
            return
        if not self.parts:
            self.loop.call_soon(self.flush)
        self.parts.append(data)

    def flush(self) -> None:
        if self.gone or not (self.parts or self.waiting):
            return
        data, self.parts = self.waiting + b"".join(self.parts), []
        try:
            sent = self.sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError:
            self.gone = True  # the bridge went away: the session is being cancelled
            return
        was_waiting = bool(self.waiting)
        self.waiting = data[sent:]
        if len(self.waiting) > REPORT_BUFFER:
            log.warning("the bridge is not reading its events; it is no longer told of requests")
            self.gone, self.waiting = True, b""
        if self.waiting and not was_waiting:
            self.loop.add_writer(self.sock.fileno(), self.flush)
        elif was_waiting and not self.waiting:
            self.loop.remove_writer(self.sock.fileno())

    def close(self) -> None:
        self.loop.remove_writer(self.sock.fileno())
        self.gone, self.waiting = True, b""


async def _serve_handoff(hub: Hub, raw: socket.socket, first: bytes, fds: list[int]) -> None:
    """Serve the client whose stdin and stdout a bridge handed over (`hub.launch.handoff`)."""
    from hub.launch.fast_start import AnswerCache, EarlyAnswers
    from hub.launch.session import serve_fds

    message = json.loads(first)[HANDOFF]
    cache = None
    if message.get("cache"):
        cache = AnswerCache(Path(message["cache"]["path"]), message["cache"]["fingerprint"])
    early = EarlyAnswers.from_json(message["early"]) if message.get("early") is not None else None
    swallow: set[Any] = set(message.get("swallow", []))
    swallow |= {("ack", subscription) for subscription in message.get("swallow_acks", [])}
    reporter = _Reporter(raw)
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
            )
            for fd in fds:  # the client sees the end of its output once the bridge exits too
                with contextlib.suppress(OSError):
                    os.close(fd)
            fds.clear()
            await reporter.bye()
        finally:
            reporter.close()
        tg.cancel_scope.cancel()


async def serve_shared(config: HubConfig, key: str, socket_path: Path) -> None:
    """Serve bridges on `socket_path` until idle for `[daemon] idle_exit_s`, or a signal."""
    from hub.host import Hub

    idle_exit_s = config.daemon.idle_exit_s
    async with Hub(config) as hub, anyio.create_task_group() as tg:
        await hub.instances.mark_shared(key, str(socket_path))
        with contextlib.suppress(FileNotFoundError):
            socket_path.unlink()  # the bridge that started us holds the lock: any file here is stale
        listener = await anyio.create_unix_listener(socket_path)
        os.chmod(socket_path, 0o600)
        log.info("shared hub serving", socket=str(socket_path), key=key, idle_exit_s=idle_exit_s)

        async def stop_on_signal() -> None:
            with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
                async for signum in signals:
                    log.info("signal received; shutting down", signal=signum.name)
                    tg.cancel_scope.cancel()
                    return

        async def accept() -> None:
            async with listener:
                await listener.serve(lambda stream: _serve_connection(hub, stream), task_group=tg)

        async def exit_when_idle() -> None:
            idle_since = time.monotonic()
            recorded = -1
            while True:
                hub.session_changed = anyio.Event()
                if len(hub.sessions) != recorded:
                    recorded = len(hub.sessions)
                    await hub.instances.set_sessions(recorded)
                if hub.sessions or hub.busy():
                    idle_since = time.monotonic()
                elif time.monotonic() - idle_since >= idle_exit_s:
                    log.info("idle: no session and no work; exiting", idle_exit_s=idle_exit_s)
                    tg.cancel_scope.cancel()
                    return
                with anyio.move_on_after(min(1.0, max(0.05, idle_exit_s / 4))):
                    await hub.session_changed.wait()

        tg.start_soon(stop_on_signal)
        tg.start_soon(accept)
        tg.start_soon(exit_when_idle)
    with contextlib.suppress(FileNotFoundError):
        socket_path.unlink()


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
        "pid": instance.pid,
        "key": instance.share_key,
        "sessions": instance.sessions,
        "uptime_s": round(time.time() - instance.started_at, 1),
        "rss_mb": round(rss / 2**20, 1) if rss is not None else None,
        "cwd": instance.cwd,
        "socket": instance.socket,
        "version": instance.version,
    }
