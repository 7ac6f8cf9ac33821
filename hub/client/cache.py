"""The connection cache: downstream MCP connections, shared by every plugin.

``async with hub.connections.session("fs") as session:`` (in a plugin) gives an initialized
`mcp.ClientSession` for the `[servers.fs]` table. The first use starts the server (two
concurrent first uses start one process); later uses reuse it; it is closed after
`idle_timeout_s` without use; a server that died is started again on the next use, with backoff
when it keeps dying (see `restart_delay`), and on its own when it is kept alive (`keep_alive`:
the proxy's `eager`); and every child is shut down (stdin closed, then SIGTERM, then SIGKILL)
when the hub stops.

Each connection is owned by one task in the cache's task group, which enters and leaves the
transport's context managers itself: anyio cancel scopes must be exited by the task that
entered them, so a connection can never be opened by one request and closed by another.
"""

from __future__ import annotations

import contextlib
import enum
import os
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import anyio
import anyio.abc
import structlog
from mcp import ClientSession, StdioServerParameters
from mcp.shared.exceptions import MCPError
from mcp.types import CONNECTION_CLOSED

from hub.client.environment import child_environment
from hub.client.errors import InvalidOutput, ServerUnavailable
from hub.client.raw import attach_stdio, call_tool_raw
from hub.client.sdk import create_http_client
from hub.client.stdio import open_stdio
from hub.config.expand import expand_vars
from hub.config.paths import open_private, private_dir
from hub.config.settings import ServerConfig
from hub.errors import ConfigError
from hub.wire.jsonrpc import ProgressFn

log = structlog.get_logger("hub.connections")

STDERR_TAIL_LINES = 20
# Restart backoff: a server that died or failed to start is tried again at once the first time,
# then after 0.5 s, 1 s, 2 s ... at most 30 s while it keeps failing. A run of STABLE_AFTER_S
# or more starts the count afresh. Eager servers are restarted by the cache itself, at most
# MAX_AUTO_RESTARTS times in a row; after that, on their next use.
BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 30.0
STABLE_AFTER_S = 30.0
MAX_AUTO_RESTARTS = 8


def restart_delay(failures: int) -> float:
    """Seconds to wait before starting a server that failed `failures` times in a row."""
    if failures <= 1:
        return 0.0
    return float(min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2 ** (failures - 2)))


class ServerState(enum.StrEnum):
    STOPPED = "stopped"  # configured, not running (never used, idle-closed, or hub stopping)
    STARTING = "starting"
    READY = "ready"
    FAILED = "failed"  # could not start; the next use tries again
    DIED = "died"  # was ready, then the process exited or the stream closed


@dataclass
class _Connection:
    name: str
    config: ServerConfig
    state: ServerState = ServerState.STARTING
    session: ClientSession | None = None
    error: str | None = None
    server_info: dict[str, Any] | None = None
    capabilities: Any = None  # the server's ServerCapabilities once ready
    started_at: float = field(default_factory=time.monotonic)
    ready_at: float | None = None
    last_used: float = field(default_factory=time.monotonic)
    leases: int = 0
    ready: anyio.Event = field(default_factory=anyio.Event)
    stop: anyio.Event = field(default_factory=anyio.Event)
    done: anyio.Event = field(default_factory=anyio.Event)

    @property
    def live(self) -> bool:
        return self.state in (ServerState.STARTING, ServerState.READY)


@dataclass
class _History:
    starts: int = 0
    last_error: str | None = None
    last_state: ServerState = ServerState.STOPPED
    failures: int = 0  # in a row; reset by a clean stop or a long enough run
    retry_at: float = 0.0  # monotonic time before which the server is not started again


def _leaf_exceptions(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for sub in exc.exceptions for leaf in _leaf_exceptions(sub)]
    return [exc]


class ConnectionCache:
    """Opens, shares, idles out, reopens and finally closes downstream MCP sessions.

    Use as an async context manager around the hub's lifetime.
    """

    def __init__(
        self,
        servers: Mapping[str, ServerConfig],
        *,
        log_dir: Path | None = None,
        environ: Mapping[str, str] | None = None,
        message_handler: Callable[[str, Any], Any] | None = None,
        keep_running: Iterable[str] = (),
        offline: bool = False,
    ) -> None:
        """`offline`: start no server (`hub plugins` only inspects what plugins register)."""
        self.servers = dict(servers)
        # Servers restarted (with backoff) when they die, without waiting for a use (the proxy's `eager`).
        self._keep_running: set[str] = set(keep_running)
        self.log_dir = log_dir
        self.environ = os.environ if environ is None else environ
        self.message_handler = message_handler
        self._conns: dict[str, _Connection] = {}
        self._history: dict[str, _History] = {name: _History() for name in self.servers}
        self._locks: dict[str, anyio.Lock] = {}
        self._tg: anyio.abc.TaskGroup | None = None
        self._exit_stack: contextlib.AsyncExitStack | None = None
        self._closing = False
        self._literal: set[str] = set()  # servers whose strings are not ${VAR}-expanded
        self.offline = offline

    async def __aenter__(self) -> ConnectionCache:
        stack = contextlib.AsyncExitStack()
        self._tg = await stack.enter_async_context(anyio.create_task_group())
        self._exit_stack = stack
        self._tg.start_soon(self._reap_idle)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close every connection (their children exit) and stop the reaper."""
        if self._exit_stack is None:
            return
        self._closing = True
        conns = list(self._conns.values())
        for conn in conns:
            conn.stop.set()
        # The SDK gives a child 2 s after stdin closes, then SIGTERM and 2 s, then SIGKILL.
        with anyio.CancelScope(shield=True), anyio.move_on_after(10):
            for conn in conns:
                await conn.done.wait()
        assert self._tg is not None
        self._tg.cancel_scope.cancel()
        stack, self._exit_stack, self._tg = self._exit_stack, None, None
        await stack.aclose()

    # -- public API ------------------------------------------------------------------------

    def names(self) -> list[str]:
        """The configured servers' names (hub.toml's and those added with `add_server`), sorted."""
        return sorted(self.servers)

    def keep_alive(self, name: str) -> None:
        """Restart `name` (with backoff) when it dies, without waiting for its next use: the
        proxy's `eager` servers."""
        self._keep_running.add(name)

    @contextlib.asynccontextmanager
    async def session(self, name: str) -> AsyncIterator[ClientSession]:
        """Lease the session for `name`: it is not idled out while the block runs. A call in the
        block that finds the connection closed (`MCPError` `CONNECTION_CLOSED`, left to propagate
        out of the block) marks it dead, so the next use starts the server again."""
        conn = await self._ready(name)
        conn.leases += 1
        session = conn.session
        assert session is not None
        try:
            yield session
        except MCPError as exc:
            if exc.code == CONNECTION_CLOSED:
                self.mark_dead(name, session)
            raise
        finally:
            conn.leases -= 1
            conn.last_used = time.monotonic()

    async def call_tool(
        self,
        name: str,
        tool: str,
        arguments: Mapping[str, Any] | None,
        *,
        progress: ProgressFn | None = None,
    ) -> dict[str, Any]:
        """`tools/call` of `tool` on server `name`: its result as wire JSON (a dict), passed through
        as the server sent it (`call_tool_raw`), or, with `validate_output = true` in its table,
        checked against the tool's output schema first (`InvalidOutput` names the mismatch).
        Raises `ServerUnavailable` and `MCPError` like `session()`."""
        if not self.servers[name].validate_output:
            conn = await self._ready(name)  # session() without the context manager: a hot path
            session = conn.session
            assert session is not None
            conn.leases += 1
            try:
                return await call_tool_raw(session, tool, arguments, progress=progress)
            except MCPError as exc:
                if exc.code == CONNECTION_CLOSED:
                    self.mark_dead(name, session)
                raise
            finally:
                conn.leases -= 1
                conn.last_used = time.monotonic()
        async with self.session(name) as session:
            try:
                result = await session.call_tool(tool, dict(arguments or {}), progress_callback=progress)  # type: ignore[arg-type]
            except RuntimeError as exc:  # the SDK's output-schema check
                raise InvalidOutput(
                    f"server {name!r} tool {tool!r}: {exc} (validate_output is set for this server)"
                ) from None
            dumped: dict[str, Any] = result.model_dump(by_alias=True, mode="json", exclude_none=True)
            return dumped

    async def get(self, name: str) -> ClientSession:
        """The session for `name`, started if needed (prefer `session()` for long calls)."""
        conn = await self._ready(name)
        conn.last_used = time.monotonic()
        assert conn.session is not None
        return conn.session

    async def close(self, name: str) -> None:
        """Close the connection to `name` now, if open (the next use starts it again)."""
        conn = self._conns.get(name)
        if conn is not None:
            conn.stop.set()
            with anyio.CancelScope(shield=True):
                await conn.done.wait()

    def mark_dead(self, name: str, session: ClientSession) -> None:
        """Tell the cache a call found `session` closed, so the next use reconnects."""
        conn = self._conns.get(name)
        if conn is not None and conn.session is session and conn.live:
            conn.state = ServerState.DIED  # not live any more: the next use starts a new process
            conn.error = f"server {name!r} closed the connection during a call"
            conn.stop.set()

    def add_server(self, name: str, config: ServerConfig, *, expand: bool = True) -> None:
        """Add a server at run time (batchit's inline servers); the same name and config again is a no-op.

        `expand=False` takes its strings literally: ``${VAR}`` in a config that came from a request
        must never pull the hub's own secrets into a command line or URL.
        """
        existing = self.servers.get(name)
        if existing is not None:
            if existing != config:
                raise ValueError(f"a different server is already called {name!r}")
            return
        self.servers[name] = config
        self._history[name] = _History()
        if not expand:
            self._literal.add(name)

    def capabilities(self, name: str) -> Any:
        """The `ServerCapabilities` of `name` if it is running, else None."""
        conn = self._conns.get(name)
        return conn.capabilities if conn is not None and conn.state == ServerState.READY else None

    def status(self) -> dict[str, dict[str, Any]]:
        """Each configured server: transport, state, starts, failures in a row, when it may restart,
        last error, idle time, users."""
        now = time.monotonic()
        out: dict[str, dict[str, Any]] = {}
        for name, config in sorted(self.servers.items()):
            conn, history = self._conns.get(name), self._history[name]
            live = conn is not None and conn.live
            # A connection still winding down already knows how it ended (history learns it last).
            ending = conn if conn is not None and not conn.done.is_set() else None
            state = ending.state if ending else history.last_state
            last_error = (ending.error if ending else None) or history.last_error
            out[name] = {
                "transport": config.transport,
                "state": str(state),
                "starts": history.starts,
                "failures_in_a_row": history.failures,
                "restart_in_s": round(history.retry_at - now, 1)
                if not live and history.retry_at > now
                else None,
                "last_error": last_error,
                "in_use": conn.leases if conn is not None and live else 0,
                "idle_s": round(now - conn.last_used, 1) if conn is not None and live else None,
                "server_info": conn.server_info if conn is not None and live else None,
            }
        return out

    # -- internals ---------------------------------------------------------------------------

    async def _ready(self, name: str) -> _Connection:
        if name not in self.servers:
            known = ", ".join(self.names()) or "none configured"
            raise ServerUnavailable(f"no downstream server called {name!r} in hub.toml (known: {known})")
        if self._tg is None or self._closing:
            raise ServerUnavailable("the connection cache is closed (the hub is shutting down)")
        if self.offline:
            raise ServerUnavailable(f"server {name!r} is not started: this hub only inspects its plugins")
        conn = self._conns.get(name)
        if conn is not None and conn.state == ServerState.READY and not conn.stop.is_set():
            return conn  # the common case: no lock, no extra trip through the event loop
        lock = self._locks.setdefault(name, anyio.Lock())
        async with lock:
            conn = self._conns.get(name)
            if conn is not None and conn.live and conn.stop.is_set():
                await conn.done.wait()  # being closed (idle, or by close()): start a fresh one
            if conn is None or not conn.live:
                history = self._history[name]
                wait = history.retry_at - time.monotonic()
                if wait > 0:
                    raise ServerUnavailable(
                        f"server {name!r} failed {history.failures} times in a row; the hub starts it "
                        f"again in {wait:.1f} s. Last error: {history.last_error}"
                    )
                conn = _Connection(name, self.servers[name])
                self._conns[name] = conn
                self._history[name].starts += 1
                self._tg.start_soon(self._own, conn)
            await conn.ready.wait()
        if conn.state != ServerState.READY:
            raise ServerUnavailable(conn.error or f"server {name!r} is not available")
        return conn

    def _expand(self, name: str, text: str, where: str) -> str:
        return text if name in self._literal else expand_vars(text, self.environ, where=where)

    def _stdio_params(self, conn: _Connection) -> StdioServerParameters:
        config, where, name = conn.config, f"servers.{conn.name}", conn.name
        assert config.command is not None
        env = {k: self._expand(name, v, f"{where}.env.{k}") for k, v in config.env.items()}
        cwd = self._expand(name, config.cwd, f"{where}.cwd") if config.cwd else None
        return StdioServerParameters(
            command=self._expand(name, config.command, f"{where}.command"),
            args=[self._expand(name, a, f"{where}.args") for a in config.args],
            env=child_environment(env, self.environ),
            cwd=str(Path(cwd).expanduser()) if cwd else None,
        )

    async def _own(self, conn: _Connection) -> None:
        """Open the transport and session, serve until told to stop or the server dies, close."""
        bound = log.bind(server=conn.name)
        stderr_path = self._stderr_path(conn.name)
        try:
            async with contextlib.AsyncExitStack() as stack:
                if conn.config.transport == "stdio":
                    params = self._stdio_params(conn)
                    errlog = stack.enter_context(_stderr_file(stderr_path))
                    downstream = await stack.enter_async_context(open_stdio(params, errlog))
                    read, write = downstream.read, downstream.write
                else:
                    read, write = await stack.enter_async_context(self._http_transport(conn))
                died = anyio.Event()
                watched = _WatchedStream(read, died)
                session = await stack.enter_async_context(
                    ClientSession(watched, write, message_handler=self._message_handler_for(conn.name))
                )
                with anyio.fail_after(conn.config.startup_timeout_s):
                    init = await session.initialize()
                conn.session = session
                if conn.config.transport == "stdio":
                    attach_stdio(session, downstream)
                conn.server_info = init.server_info.model_dump(mode="json", exclude_none=True)
                conn.capabilities = init.capabilities
                conn.ready_at = conn.last_used = time.monotonic()  # idle time counts from now, not from spawn
                conn.state = ServerState.READY
                conn.ready.set()
                bound.info("downstream server ready", server_info=conn.server_info)
                async with anyio.create_task_group() as wait:

                    async def until(event: anyio.Event) -> None:
                        await event.wait()
                        wait.cancel_scope.cancel()

                    wait.start_soon(until, conn.stop)
                    wait.start_soon(until, died)
                if died.is_set() and not conn.stop.is_set():
                    conn.state = ServerState.DIED
                    conn.error = f"server {conn.name!r} exited{self._stderr_hint(stderr_path)}"
                    bound.warning("downstream server died; the next use restarts it")
                conn.session = None
        except Exception as exc:
            conn.error = self._describe_failure(conn, exc, stderr_path)
            conn.state = ServerState.DIED if conn.state == ServerState.READY else ServerState.FAILED
            bound.warning("downstream server failed", error=conn.error)
        finally:
            conn.session = None
            if conn.state in (ServerState.READY, ServerState.STARTING):
                conn.state = ServerState.STOPPED
            history = self._history[conn.name]
            history.last_state = conn.state
            if conn.error:
                history.last_error = conn.error
            self._count_failure(conn, history)
            conn.ready.set()
            conn.done.set()

    def _count_failure(self, conn: _Connection, history: _History) -> None:
        if conn.state not in (ServerState.DIED, ServerState.FAILED):
            history.failures, history.retry_at = 0, 0.0
            return
        ran_long = conn.ready_at is not None and time.monotonic() - conn.ready_at >= STABLE_AFTER_S
        history.failures = 1 if ran_long else history.failures + 1
        delay = restart_delay(history.failures)
        history.retry_at = time.monotonic() + delay
        if (
            conn.name in self._keep_running
            and history.failures <= MAX_AUTO_RESTARTS
            and not self._closing
            and self._tg
        ):
            log.info("restarting eager downstream server", server=conn.name, after_s=delay)
            self._tg.start_soon(self._restart_later, conn.name, delay)

    async def _restart_later(self, name: str, delay: float) -> None:
        await anyio.sleep(delay)
        conn = self._conns.get(name)
        if self._tg is None or (conn is not None and conn.live):
            return
        with contextlib.suppress(
            ServerUnavailable
        ):  # counted and logged by _own, which schedules the next try
            await self._ready(name)

    @contextlib.asynccontextmanager
    async def _http_transport(self, conn: _Connection) -> AsyncIterator[tuple[Any, Any]]:
        from mcp.client.streamable_http import streamable_http_client

        where = f"servers.{conn.name}"
        assert conn.config.url is not None
        url = self._expand(conn.name, conn.config.url, f"{where}.url")
        headers = {
            k: self._expand(conn.name, v, f"{where}.headers.{k}") for k, v in conn.config.headers.items()
        }
        if conn.config.transport == "sse":  # the older HTTP+SSE transport (`type = "sse"`)
            from mcp.client.sse import sse_client

            async with sse_client(url, headers=headers) as (read, write):
                yield read, write
            return
        async with (
            create_http_client(headers=headers) as http,
            streamable_http_client(url, http_client=http) as (
                read,
                write,
            ),
        ):
            yield read, write

    def _message_handler_for(self, name: str) -> Any:
        handler = self.message_handler
        if handler is None:
            return None

        async def on_message(message: Any) -> None:
            result = handler(name, message)
            if hasattr(result, "__await__"):
                await result

        return on_message

    def _stderr_path(self, name: str) -> Path | None:
        if self.log_dir is None:
            return None
        private_dir(self.log_dir)
        return self.log_dir / f"{name}.stderr.log"

    @staticmethod
    def _stderr_hint(path: Path | None) -> str:
        if path is None or not path.exists():
            return ""
        try:
            with path.open(errors="replace") as f:
                tail = [line.rstrip() for line in deque(f, STDERR_TAIL_LINES) if line.strip()]
        except OSError:
            return ""
        if not tail:
            return ""
        return f"; its stderr ends with: {' | '.join(tail[-5:])} (full log: {path})"

    def _describe_failure(self, conn: _Connection, exc: BaseException, stderr_path: Path | None) -> str:
        leaves = _leaf_exceptions(exc)
        first = leaves[0]
        name, config = conn.name, conn.config
        if isinstance(first, ConfigError):
            return str(first)
        if isinstance(first, FileNotFoundError) and config.transport == "stdio":
            return f"server {name!r}: command {config.command!r} not found (check [servers.{name}] command and PATH)"
        if isinstance(first, PermissionError) and config.transport == "stdio":
            return f"server {name!r}: command {config.command!r} is not executable"
        if isinstance(first, TimeoutError):
            return (
                f"server {name!r} did not finish the MCP handshake within {config.startup_timeout_s:g} s"
                f"{self._stderr_hint(stderr_path)}"
            )
        if conn.state == ServerState.STARTING:
            return f"server {name!r} failed to start: {_short(first)}{self._stderr_hint(stderr_path)}"
        return f"server {name!r} failed: {_short(first)}{self._stderr_hint(stderr_path)}"

    async def _reap_idle(self) -> None:
        timeouts = [c.idle_timeout_s for c in self.servers.values()] or [300.0]
        tick = max(0.05, min(5.0, min(timeouts) / 4))
        while True:
            await anyio.sleep(tick)
            now = time.monotonic()
            for conn in list(self._conns.values()):
                if (
                    conn.state == ServerState.READY
                    and conn.leases == 0
                    and now - conn.last_used > conn.config.idle_timeout_s
                ):
                    log.info("closing idle downstream server", server=conn.name)
                    conn.stop.set()


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) < 300 else text[:300] + "..."


class _WatchedStream:
    """The transport's read stream, setting `died` when it ends: the session's receive loop
    iterates it directly, so watching costs no extra task or stream hop."""

    def __init__(self, inner: Any, died: anyio.Event) -> None:
        self._inner = inner
        self._died = died

    def __getattr__(self, name: str) -> Any:  # receive, close, aclose, last_context ...
        return getattr(self._inner, name)

    async def __aenter__(self) -> _WatchedStream:
        await self._inner.__aenter__()
        return self

    async def __aexit__(self, *exc_info: Any) -> Any:
        return await self._inner.__aexit__(*exc_info)

    def __aiter__(self) -> _WatchedStream:
        return self

    async def __anext__(self) -> Any:
        try:
            return await self._inner.__anext__()
        except (StopAsyncIteration, anyio.ClosedResourceError, anyio.BrokenResourceError, anyio.EndOfStream):
            self._died.set()
            raise


def _stderr_file(path: Path | None) -> IO[str]:
    """Where a stdio server's stderr goes: its log, private (0600: it may echo secrets), or nowhere."""
    if path is None:
        return open(os.devnull, "w")
    return os.fdopen(open_private(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), "w")
