"""The shared hub process: one `Hub` serving every bridge of a launch over a Unix socket.

`hub serve` over stdio is a thin bridge (`hub.bridge`); this is what it connects to. Each
connection is its own MCP session (either protocol era) on the hub's one `HubServer`, so every
plugin's services are shared: downstream connections, pool slots and queue, batch polling,
budget, context. The process exits after `[daemon] idle_exit_s` with no session connected and no
work in progress (`Hub.busy`), and on SIGTERM/SIGINT. Started by a bridge as
`hub shared --key KEY --socket PATH [the launch's options]`; never by hand.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
import structlog

if TYPE_CHECKING:
    from hub.config import HubConfig
    from hub.host import Hub

__all__ = ["serve_shared"]

log = structlog.get_logger("hub.shared")
_ids = itertools.count(1)


def _peer_pid(sock: socket.socket) -> int | None:
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
    except (OSError, AttributeError):
        return None
    return int.from_bytes(creds[:4], "little")


async def _serve_connection(hub: Hub, stream: anyio.abc.SocketStream) -> None:
    from hub.transport.stdio import FdWriter, LineReader, stdio_transport

    raw: socket.socket = stream.extra(anyio.abc.SocketAttribute.raw_socket)
    session_id = next(_ids)
    hub.sessions[session_id] = {
        "session": session_id,
        "bridge_pid": _peer_pid(raw),
        "connected_at": round(time.time(), 3),
    }
    hub.session_changed.set()
    log.info("session connected", session=session_id, sessions=len(hub.sessions))
    try:
        # The socket's descriptor is read and written directly (as stdin and stdout are), not
        # through the anyio stream, which costs a trip through the event loop per message.
        reader, writer = LineReader(raw.fileno()), FdWriter(raw.fileno())
        async with stdio_transport(reader, writer, hub.server.fast_path) as (read, write):
            await hub.server.mcp.run(read, write, hub.server.mcp.create_initialization_options())

    except Exception as exc:  # one session's failure never stops the others
        log.warning("session ended with an error", session=session_id, error=str(exc))
    finally:
        hub.sessions.pop(session_id, None)
        hub.session_changed.set()
        log.info("session closed", session=session_id, sessions=len(hub.sessions))
        await stream.aclose()


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
