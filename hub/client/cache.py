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
import warnings
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import anyio
import anyio.abc
import structlog
from mcp import ClientSession, StdioServerParameters
from mcp.shared.exceptions import MCPDeprecationWarning, MCPError
from mcp.types import CONNECTION_CLOSED, ToolListChangedNotification
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from hub.client.asking import INPUT_METHODS, Caller, Calls, drive_input_required
from hub.client.auth import ServerAuth, SignInFailed, remote_headers, remote_streams
from hub.client.environment import child_environment
from hub.client.errors import InvalidOutput, RemoteRefused, ServerUnavailable
from hub.client.listing import config_digest
from hub.client.metrics import CallMetrics
from hub.client.raw import attach_stdio, call_tool_raw
from hub.client.sdk import negotiate
from hub.client.stdio import open_stdio
from hub.client.watching import Watching
from hub.config.expand import expand_vars
from hub.config.paths import open_private, private_dir
from hub.config.settings import ServerConfig
from hub.errors import ConfigError
from hub.telemetry import STATE as TELEMETRY
from hub.telemetry import count_downstream
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
# A client session's own connection to a server (see ConnectionCache._lane_for) closes after this
# long unused, or the server's idle_timeout_s if shorter.
LANE_IDLE_S = 60.0
OTHERS = "(sessions that cannot be asked)"  # the lane such sessions share on a server that asks


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
    start_released: bool = False  # its place among the servers starting at once is given back
    ready: anyio.Event = field(default_factory=anyio.Event)
    stop: anyio.Event = field(default_factory=anyio.Event)
    done: anyio.Event = field(default_factory=anyio.Event)
    # A client session's own connection to the server ("lane"), or None: the shared one.
    lane: Hashable | None = None
    calls: Calls = field(default_factory=lambda: Calls(""))
    owner: Hashable | None = None  # the session a shared connection of a server that asks belongs to
    modern: bool = False  # speaks the 2026-07-28 era

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
    asks: bool = False  # made a request of its client within a call (see hub.client.asking)


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
        store: Any = None,
        wrap_command: Callable[[list[str]], list[str]] | None = None,
        starting: int | None = None,
    ) -> None:
        """`offline`: start no server (`hub plugins` only inspects what plugins register)."""
        self.servers = dict(servers)
        # How stdio servers are started (the hub's `dies_with_parent`), and how many at once.
        self._wrap = wrap_command
        self._starting = anyio.Semaphore(starting) if starting else None
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
        self._ready_listeners: list[Callable[[str], object]] = []
        # Client sessions' own connections to servers that ask for input (see `_lane_for`).
        self._lanes: dict[tuple[str, Hashable], _Connection] = {}
        self._lane_locks: dict[tuple[str, Hashable], anyio.Lock] = {}
        self.log_level: str | None = None  # what handshake-era servers are asked to log (set_log_level)
        self.watching = Watching()  # resources clients subscribed to, per server
        # Remote servers' credentials; OAuth tokens live in `store` (hub.client.tokens).
        self.auth = ServerAuth(store, self.environ)
        self.metrics = CallMetrics()  # calls, errors and latency per server and tool

    async def __aenter__(self) -> ConnectionCache:
        stack = contextlib.AsyncExitStack()
        self._tg = await stack.enter_async_context(anyio.create_task_group())
        self._exit_stack = stack
        self._tg.start_soon(self._reap_idle)
        self._tg.start_soon(self.auth.watch, self._signed_in)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close every connection (their children exit) and stop the reaper."""
        if self._exit_stack is None:
            return
        self._closing = True
        conns = [*self._conns.values(), *self._lanes.values()]
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
            refused = self._refused(name, exc)
            if refused is not None:
                raise refused from None
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
        caller: Caller | None = None,
        elicit_url: Callable[[str, str], Awaitable[str | None]] | None = None,
    ) -> dict[str, Any]:
        """`tools/call` of `tool` on server `name`: its result as wire JSON (a dict), passed through
        as the server sent it (`call_tool_raw`), or, with `validate_output = true` in its table,
        checked against the tool's output schema first (`InvalidOutput` names the mismatch).

        `caller` is the hub's client the call is for (a `hub.ToolCall`): what the server asks
        during the call (sampling, elicitation, roots) and the log messages it sends go to it
        (`hub.client.asking`), and its log level goes with the call. Raises `ServerUnavailable`
        and `MCPError` like `session()`.

        `elicit_url(message, url)`: when a remote server refuses the hub until someone signs in,
        the caller's client is asked to open the sign-in URL, and the call is made again once
        signed in."""
        if elicit_url is None:
            return await self._call_tool(name, tool, arguments, progress, caller)
        try:
            return await self._call_tool(name, tool, arguments, progress, caller)
        except ServerUnavailable:
            if not self.needs_sign_in(name) or not await self._sign_in_for(name, elicit_url):
                raise
        return await self._call_tool(name, tool, arguments, progress, caller)

    async def _call_tool(
        self,
        name: str,
        tool: str,
        arguments: Mapping[str, Any] | None,
        progress: ProgressFn | None,
        caller: Caller | None,
    ) -> dict[str, Any]:
        """`_call_tool_once`, counted in `metrics` (and OpenTelemetry's, when on)."""
        started = time.perf_counter()
        try:
            result = await self._call_tool_once(name, tool, arguments, progress, caller)
        except Exception as exc:
            self._count(name, tool, started, _short(exc))
            raise
        self._count(name, tool, started, _error_text(result) if result.get("isError") is True else None)
        return result

    def _count(self, name: str, tool: str, started: float, error: str | None) -> None:
        seconds = time.perf_counter() - started
        self.metrics.record(name, tool, seconds, error)
        if TELEMETRY.on:
            count_downstream(name, tool, seconds, error is not None)

    async def _call_tool_once(
        self,
        name: str,
        tool: str,
        arguments: Mapping[str, Any] | None,
        progress: ProgressFn | None,
        caller: Caller | None,
    ) -> dict[str, Any]:
        conn = await self._ready(name, self._lane_for(name, caller))  # a hot path: no context manager
        session = conn.session
        assert session is not None
        conn.leases += 1
        try:
            with conn.calls.running(caller):
                if not self.servers[name].validate_output:
                    return await call_tool_raw(session, tool, arguments, progress=progress, caller=caller)
                return await self._call_checked(name, session, tool, arguments, progress, caller)
        except MCPError as exc:
            if exc.code == CONNECTION_CLOSED:
                self.mark_dead(name, session)
            refused = self._refused(name, exc)
            if refused is not None:
                raise refused from None
            raise
        finally:
            conn.leases -= 1
            conn.last_used = time.monotonic()

    async def _call_checked(
        self,
        name: str,
        session: ClientSession,
        tool: str,
        arguments: Mapping[str, Any] | None,
        progress: ProgressFn | None,
        caller: Caller | None,
    ) -> dict[str, Any]:
        """`tools/call` through the SDK session, which checks the result against the tool's output schema."""
        try:
            result = await drive_input_required(session, tool, dict(arguments or {}), progress, caller, name)
        except RuntimeError as exc:  # the SDK's output-schema check
            raise InvalidOutput(
                f"server {name!r} tool {tool!r}: {exc} (validate_output is set for this server)"
            ) from None
        dumped: dict[str, Any] = result.model_dump(by_alias=True, mode="json", exclude_none=True)
        return dumped

    def watch_resource(self, name: str, uri: str) -> None:
        """Subscribe to `uri` on server `name`, now and on every connection to it from now on,
        until `unwatch_resource` (updates arrive as `notifications/resources/updated`, to the
        hub's downstream listeners)."""
        self.watching.watch(name, uri)

    def unwatch_resource(self, name: str, uri: str) -> None:
        """Drop the subscription `watch_resource` made."""
        self.watching.unwatch(name, uri)

    def watched_resources(self, name: str) -> set[str]:
        """The URIs `watch_resource` follows on server `name`."""
        return set(self.watching.uris.get(name, ()))

    async def set_log_level(self, level: str | None) -> None:
        """Ask every handshake-era server that logs for messages from `level` up (the least severe
        level any of the hub's clients asked for); 2026-07-28 servers get each caller's level
        with its call instead."""
        self.log_level = level
        for conn in [*self._conns.values(), *self._lanes.values()]:
            if conn.state == ServerState.READY and conn.session is not None:
                try:
                    await self._apply_log_level(conn, conn.session)
                except Exception as exc:
                    log.info("downstream log level not set", server=conn.name, error=str(exc))

    async def _apply_log_level(self, conn: _Connection, session: ClientSession) -> None:
        if self.log_level is None or conn.modern or getattr(conn.capabilities, "logging", None) is None:
            return
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", MCPDeprecationWarning)
            await session.set_logging_level(self.log_level)  # type: ignore[arg-type]

    def session_closed(self, session_key: Hashable) -> None:
        """A client session ended: its own connections close, and a shared connection it owned
        goes to the next session it asks."""
        for (_, lane), conn in self._lanes.items():
            if lane == session_key:
                conn.stop.set()
        for conn in self._conns.values():
            if conn.owner == session_key:
                conn.owner = None

    async def roots_changed(self, session_key: Hashable) -> None:
        """A client session's roots changed: tell every handshake-era server it has used (which
        asks for them again), and forget the roots each connection kept from before."""
        for conn in [*self._conns.values(), *self._lanes.values()]:
            if session_key not in conn.calls.sessions():
                continue
            conn.calls.roots = None
            if conn.state == ServerState.READY and conn.session is not None and not conn.modern:
                try:
                    await conn.session.send_roots_list_changed()
                except Exception as exc:
                    log.info("roots/list_changed not sent downstream", server=conn.name, error=str(exc))

    async def get(self, name: str) -> ClientSession:
        """The session for `name`, started if needed (prefer `session()` for long calls)."""
        conn = await self._ready(name)
        conn.last_used = time.monotonic()
        assert conn.session is not None
        return conn.session

    async def close(self, name: str) -> None:
        """Close the connections to `name` now, if open (the next use starts it again)."""
        conns = [self._conns.get(name), *(c for (n, _), c in self._lanes.items() if n == name)]
        for conn in conns:
            if conn is not None:
                conn.stop.set()
                with anyio.CancelScope(shield=True):
                    await conn.done.wait()

    def mark_dead(self, name: str, session: ClientSession) -> None:
        """Tell the cache a call found `session` closed, so the next use reconnects."""
        conns = [self._conns.get(name), *(c for (n, _), c in self._lanes.items() if n == name)]
        conn = next((c for c in conns if c is not None and c.session is session), None)
        if conn is not None and conn.live:
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

    def on_ready(self, listener: Callable[[str], object]) -> None:
        """Call `listener(name)` each time server `name`'s connection becomes ready: its first
        start and every restart (after a crash, an idle close, `close`). It runs in the task
        that owns the connection, so it must return at once (start work elsewhere); an
        exception is logged."""
        self._ready_listeners.append(listener)

    def client_profile(self) -> dict[str, Any]:
        """What the hub declares to every downstream server (its client capabilities), which can
        change what a server lists: part of each listing's key (`config_key`)."""
        return {"capabilities": {}}

    def config_key(self, name: str) -> str:
        """A digest of server `name`'s effective configuration (``${VAR}`` expanded, values never
        kept in clear) and of `client_profile`: the key of what it lists
        (`hub.client.listing.config_digest`). Raises `ConfigError` for an unset variable."""
        config = self.servers[name]
        return config_digest(
            config,
            lambda text, key: self._expand(name, text, f"servers.{name}.{key}"),
            client=self.client_profile(),
        )

    def needs_sign_in(self, name: str) -> bool:
        """Whether remote server `name` refused the hub until someone signs in (`hub servers
        login NAME`): its last answer was a 401, or a 403 asking for more scope."""
        return self.auth.needs_sign_in(name)

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
                "protocol_version": conn.session.protocol_version
                if conn is not None and live and conn.session is not None
                else None,
                "own_connections": sum(
                    1 for (n, _), c in self._lanes.items() if n == name and c.live and not c.stop.is_set()
                ),
            }
        return out

    # -- internals ---------------------------------------------------------------------------

    def _lane_for(self, name: str, caller: Caller | None) -> Hashable | None:
        """The client session whose own connection ("lane") a call of `caller` takes, or None
        for the shared one. Only for a server that made requests of its client within calls
        (`_History.asks`) where nothing on the wire tells whose request is whose: a
        handshake-era server on stdio (on streamable HTTP a request comes on its call's
        stream, and a 2026-07-28 server asks inside its call's result). Its shared connection
        belongs to the session it first asked (`owner`); any other session that can be asked
        gets a lane of its own, and sessions that cannot share the lane `OTHERS` (whatever is
        asked there is refused, as no one there can answer)."""
        history = self._history.get(name)
        if caller is None or history is None or not history.asks:
            return None
        shared = self._conns.get(name)
        if self.servers[name].transport == "http" or (shared is not None and shared.modern):
            return None
        key = caller.session_key
        if key is None:  # a client without a session (2026-07-28 over HTTP): calls stand alone
            return None
        askable = any(caller.can_ask(method) for method in INPUT_METHODS)
        if shared is None or not shared.live or shared.stop.is_set():
            return None if askable else OTHERS  # the next shared connection: its first asker owns it
        if shared.owner is None and askable:
            shared.owner = key
        if key == shared.owner:
            return None
        return key if askable else OTHERS

    def _asked(self, conn: _Connection, history: _History, session: Hashable | None) -> None:
        """`conn` made a request of its client within a call, answered by `session` (None: whose
        it was could not be told)."""
        history.asks = True
        if conn.lane is None and conn.owner is None and session is not None:
            conn.owner = session

    async def _ready(self, name: str, lane: Hashable | None = None) -> _Connection:
        if name not in self.servers:
            known = ", ".join(self.names()) or "none configured"
            raise ServerUnavailable(f"no downstream server called {name!r} in hub.toml (known: {known})")
        if self._tg is None or self._closing:
            raise ServerUnavailable("the connection cache is closed (the hub is shutting down)")
        if self.offline:
            raise ServerUnavailable(f"server {name!r} is not started: this hub only inspects its plugins")
        conn = self._conns.get(name) if lane is None else self._lanes.get((name, lane))
        if conn is not None and conn.state == ServerState.READY and not conn.stop.is_set():
            return conn  # the common case: no lock, no extra trip through the event loop
        if lane is None:
            lock = self._locks.setdefault(name, anyio.Lock())
        else:
            lock = self._lane_locks.setdefault((name, lane), anyio.Lock())
        async with lock:
            conn = await self._start(name, lane)
            await conn.ready.wait()
        if conn.state != ServerState.READY:
            raise ServerUnavailable(conn.error or f"server {name!r} is not available")
        return conn

    async def _start(self, name: str, lane: Hashable | None) -> _Connection:
        """The live connection to `name` (on `lane`), started if there is none (under its lock)."""
        conn = self._conns.get(name) if lane is None else self._lanes.get((name, lane))
        if conn is not None and conn.live and conn.stop.is_set():
            await conn.done.wait()  # being closed (idle, or by close()): start a fresh one
        if conn is not None and conn.live:
            return conn
        history = self._history[name]
        wait = history.retry_at - time.monotonic()
        if wait > 0:
            raise ServerUnavailable(
                f"server {name!r} failed {history.failures} times in a row; the hub starts it "
                f"again in {wait:.1f} s. Last error: {history.last_error}"
            )
        conn = _Connection(name, self.servers[name], lane=lane)
        conn.calls = Calls(name, on_asked=lambda session: self._asked(conn, history, session))
        if lane is None:
            self._conns[name] = conn
            history.starts += 1
        else:
            self._lanes[(name, lane)] = conn
            log.info("a client session gets a connection of its own", server=name)
        assert self._tg is not None
        self._tg.start_soon(self._own, conn)
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
        """Open the transport and session, serve until told to stop or the server dies, close.
        At most `starting` servers are between their start and their handshake's end at once."""
        bound = log.bind(server=conn.name, own_connection=conn.lane is not None)
        stderr_path = self._stderr_path(conn.name, lane=conn.lane is not None)
        try:
            async with contextlib.AsyncExitStack() as stack:
                if self._starting is not None:  # at most `starting` servers start at once
                    await self._starting.acquire()
                    stack.callback(self._release_start, conn)
                died = anyio.Event()
                session = await self._open(conn, stack, stderr_path, died)
                bound.info("downstream server ready", server_info=conn.server_info, modern=conn.modern)
                if conn.lane is None:  # a session's own connection lists what the shared one does
                    self._tell_ready(conn.name)
                async with anyio.create_task_group() as wait:

                    async def until(event: anyio.Event) -> None:
                        await event.wait()
                        wait.cancel_scope.cancel()

                    wait.start_soon(until, conn.stop)
                    wait.start_soon(until, died)
                    wait.start_soon(self._follow_clients, conn, session)
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
            if conn.lane is None:  # a session's own connection leaves the server's record alone
                history = self._history[conn.name]
                history.last_state = conn.state
                if conn.error:
                    history.last_error = conn.error
                self._count_failure(conn, history)
            conn.ready.set()
            conn.done.set()

    def _tell_ready(self, name: str) -> None:
        for listener in list(self._ready_listeners):
            try:
                listener(name)
            except Exception:
                log.exception("a ready listener raised", server=name)

    async def _open(
        self, conn: _Connection, stack: contextlib.AsyncExitStack, stderr_path: Path | None, died: anyio.Event
    ) -> ClientSession:
        """Start the transport and the session (declaring sampling, elicitation and roots, answered
        through `conn.calls`), agree on the protocol era, and mark `conn` ready."""
        if conn.config.transport == "stdio":
            params = self._stdio_params(conn)
            errlog = stack.enter_context(_stderr_file(stderr_path, append=conn.lane is not None))
            downstream = await stack.enter_async_context(open_stdio(params, errlog, self._wrap))
            read, write = downstream.read, downstream.write
        else:
            read, write = await stack.enter_async_context(self._http_transport(conn))
        session = await stack.enter_async_context(
            ClientSession(
                _WatchedStream(read, died),
                write,
                message_handler=self._message_handler_for(conn.name),
                **conn.calls.callbacks(),
            )
        )
        with anyio.fail_after(conn.config.startup_timeout_s):
            await negotiate(session, conn.config.protocol)
        conn.session = session
        if conn.config.transport == "stdio":
            attach_stdio(session, downstream)
            downstream.attribute = conn.calls.attribute  # log messages reach their call in order
        info = session.server_info
        conn.server_info = info.model_dump(mode="json", exclude_none=True) if info is not None else None
        conn.capabilities = session.server_capabilities
        conn.modern = session.protocol_version in MODERN_PROTOCOL_VERSIONS
        conn.ready_at = conn.last_used = time.monotonic()  # idle time counts from now, not from spawn
        conn.state = ServerState.READY
        self._release_start(conn)
        conn.ready.set()
        return session

    async def _follow_clients(self, conn: _Connection, session: ClientSession) -> None:
        """For the life of the connection: the log level the hub's clients asked for, and the
        resources they subscribed to (`hub.client.watching`)."""
        try:
            await self._apply_log_level(conn, session)
            await self.watching.follow(conn.name, session, conn.capabilities)
        except Exception as exc:  # the server went away, or refused: it still serves calls
            log.info("downstream log level or subscriptions not applied", server=conn.name, error=str(exc))

    def _release_start(self, conn: _Connection) -> None:
        """`conn` is no longer starting (ready, or failed): another server may start."""
        if self._starting is not None and not conn.start_released:
            conn.start_released = True
            self._starting.release()

    def _count_failure(self, conn: _Connection, history: _History) -> None:
        if conn.state not in (ServerState.DIED, ServerState.FAILED) or self.auth.needs_sign_in(conn.name):
            # A server waiting for a sign-in is tried again on its next use, at once: no backoff.
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
        name, literal = conn.name, conn.name in self._literal
        assert conn.config.url is not None
        url = self._expand(name, conn.config.url, f"servers.{name}.url")
        headers = remote_headers(
            name,
            conn.config,
            lambda text, where: self._expand(name, text, where),
            {} if literal else self.environ,
        )
        auth = await self.auth.for_server(name, conn.config, url, literal=literal)
        async with remote_streams(conn.config.transport, url, headers, auth) as (read, write):
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

    def _stderr_path(self, name: str, *, lane: bool = False) -> Path | None:
        if self.log_dir is None:
            return None
        private_dir(self.log_dir)
        return self.log_dir / (f"{name}.sessions.stderr.log" if lane else f"{name}.stderr.log")

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
        refused = self.auth.explain(name, first)
        if refused is not None:
            return refused
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
            for conn in [*self._conns.values(), *self._lanes.values()]:
                idle_s = conn.config.idle_timeout_s
                if conn.lane is not None:
                    idle_s = min(idle_s, LANE_IDLE_S)
                if conn.state == ServerState.READY and conn.leases == 0 and now - conn.last_used > idle_s:
                    log.info(
                        "closing idle downstream server",
                        server=conn.name,
                        own_connection=conn.lane is not None,
                    )
                    conn.stop.set()
            for key, conn in list(self._lanes.items()):
                if conn.done.is_set():
                    del self._lanes[key]
                    self._lane_locks.pop(key, None)

    async def _sign_in_for(self, name: str, elicit_url: Callable[[str, str], Awaitable[str | None]]) -> bool:
        assert self._tg is not None
        try:
            return await self.auth.sign_in_for_session(
                name, self.servers[name], elicit_url, self._tg.start_soon
            )
        except SignInFailed as exc:
            raise RemoteRefused(str(exc), needs_sign_in=True) from None

    async def _signed_in(self, name: str) -> None:
        """`name` was signed in to elsewhere: start it at once on its next use, and tell the
        listeners its tools may have changed (the proxy lists a server it could not list)."""
        self._history[name].failures, self._history[name].retry_at = 0, 0.0
        if self.message_handler is not None:
            result = self.message_handler(name, ToolListChangedNotification())
            if hasattr(result, "__await__"):
                await result

    def _refused(self, name: str, exc: MCPError) -> RemoteRefused | None:
        """A remote server's HTTP refusal of a request, said with its status and the fix."""
        said = self.auth.explain(name, exc)
        return None if said is None else RemoteRefused(said, needs_sign_in=self.auth.needs_sign_in(name))


def _error_text(result: dict[str, Any]) -> str:
    """An error result's first text, shortened (what the dashboard shows as a tool's last error)."""
    content = result.get("content")
    for block in content if isinstance(content, list) else []:
        if isinstance(block, dict) and isinstance(block.get("text"), str):
            text = str(block["text"]).strip()
            return text[:200] + ("..." if len(text) > 200 else "")
    return "an error result"


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


def _stderr_file(path: Path | None, *, append: bool = False) -> IO[str]:
    """Where a stdio server's stderr goes: its log, private (0600: it may echo secrets), or
    nowhere; `append` for the servers several sessions' own connections share one log with."""
    if path is None:
        return open(os.devnull, "w")
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC)
    return os.fdopen(open_private(path, flags), "a" if append else "w")
