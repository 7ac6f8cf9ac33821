"""The running hub, the engine behind every transport: plugins, shared services and the task
group they live in.

``async with Hub(config) as hub:`` loads the plugins (`hub.plugin.manager`), opens the services
(`hub.services`: store, budget, context, instances; `hub.client`: downstream connections and
what each server lists), runs every plugin's startup inside the hub's task group and collects what the
plugins register in its `Registry`. Leaving the block runs their shutdown hooks, closes
downstream servers and cancels background tasks. `hub.server.app` is its MCP face (`Hub.server`);
`hub.launch` and `hub.cli` decide which process serves it to whom.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Coroutine
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
import structlog

from hub import __version__
from hub.builtin import core
from hub.client.cache import ConnectionCache
from hub.client.listing import Listings
from hub.config.settings import HubConfig
from hub.errors import PluginLoadError, StoreError, StoreLost, StoreUnavailable, ToolError
from hub.plugin.base import Plugin
from hub.plugin.context import DownstreamListener, PluginContext, Services
from hub.plugin.items import Prompt, RegistrationError, Resource, ResourceTemplate, Tool
from hub.plugin.manager import (
    HubPluginManager,
    PluginInfo,
    check_tool_selections,
    load_plugins,
    plugin_config,
    register_plugin,
    tool_selection,
)
from hub.plugin.panels import Panel, Panels
from hub.plugin.registry import Registry
from hub.services import statusline
from hub.services.backends import open_store
from hub.services.budget import Budget
from hub.services.context_store import ContextStore
from hub.services.instances import Instance, Instances
from hub.services.processes import dies_with_parent
from hub.services.store import Store
from hub.telemetry import configure as configure_telemetry
from hub.telemetry import flush as flush_telemetry

if TYPE_CHECKING:
    from hub.server.app import HubServer

__all__ = ["Hub"]

log = structlog.get_logger("hub")
SHUTDOWN_GRACE_S = 10.0


async def _await_lifecycle(result: Any) -> None:
    """Run what a lifecycle hook returned: an async function, a coroutine, or nothing."""
    if result is None:
        return
    if callable(result) and not inspect.isawaitable(result):
        result = result()
    if inspect.isawaitable(result):
        await result


def describe_worker(instance: Instance) -> dict[str, Any]:
    """An instance that can take work (a pool's slots, say): where, how much, and its heartbeat."""
    return {
        "instance": instance.id,
        "host": instance.host,
        "pid": instance.pid,
        "role": instance.role,
        "heartbeat_at": instance.heartbeat_at,
        "heartbeat_age_s": round(max(0.0, time.time() - instance.heartbeat_at), 1),
        "work": instance.work,
    }


class Hub:
    """One hub instance. Construct, then ``async with``; nothing is global."""

    def __init__(
        self,
        config: HubConfig,
        *,
        extra_plugins: dict[str, Any] | None = None,
        inspect: bool = False,
        role: str = "serve",
    ) -> None:
        """`inspect`: only to see what the plugins register (`hub plugins`): no background work,
        no recovery of dead hubs, no heartbeat, and no downstream server started. `role`: what
        the store records this hub as (serve, shared, or worker: `hub worker`, see `run_workers`)."""
        self.config = config
        self.inspect = inspect
        self.role = role
        self.extra_plugins = {"core": core, **(extra_plugins or {})}
        self.registry = Registry(
            warn=lambda message: log.warning(message),
            selection=lambda plugin: tool_selection(plugin, config),  # [plugins.NAME] tools / hide
        )
        self.started_at = time.time()
        self.panels = Panels()  # what plugins show on `hub dashboard` (hub_dashboard_panels)
        self.pm: HubPluginManager
        self.plugins: dict[str, PluginInfo] = {}
        self.contexts: dict[str, PluginContext] = {}
        self._started: set[str] = set()  # plugins whose hub_startup ran: only they get hub_shutdown
        self._stack: AsyncExitStack | None = None
        self._task_group: anyio.abc.TaskGroup | None = None
        self._server: HubServer | None = None
        self._clean_shutdown = False
        # MCP sessions connected to this hub when it is a shared process (`hub.launch.shared_process`), by id.
        self.sessions: dict[int, dict[str, Any]] = {}
        self.session_changed = anyio.Event()
        # Work in progress per plugin (PluginContext.set_busy): a shared process stays up for it.
        self.work: dict[str, int] = {}
        self.downstream_listeners: list[DownstreamListener] = []
        # Set when the store's file was deleted or replaced under this hub (`StoreLost`): a
        # shared process exits on it, so the next bridge starts one on the new file.
        self.store_lost = anyio.Event()
        self._store_problem: str | None = None

    # -- services ----------------------------------------------------------------------------

    @property
    def task_group(self) -> anyio.abc.TaskGroup:
        if self._task_group is None:
            raise RuntimeError("the hub is not running (use `async with Hub(...)`)")
        return self._task_group

    @property
    def server(self) -> HubServer:
        """The hub's MCP face (`hub.server.app.HubServer`), built on first use."""
        if self._server is None:
            from hub.server.app import HubServer

            server = self._server = HubServer(
                self.registry, self.start_soon, status=self.status, tools=self.config.tools
            )
            # What the hub's clients ask for reaches the downstream servers (hub.client.cache).
            server.relay.on_log_level = lambda level: self.connections.set_log_level(level)
            server.relay.on_roots_changed = lambda session: self.connections.roots_changed(session)
            server.relay.on_client_closed = lambda session: self.connections.session_closed(session)
        return self._server

    async def resource_updated(self, uri: str) -> None:
        """Tell the clients subscribed to `uri` that it changed (see `PluginContext.resource_updated`)."""
        await self.server.resource_updated(uri)

    @property
    def services(self) -> Services:
        """The services this run shares among its plugins."""
        return Services(
            self.store, self.budget, self.context, self.connections, self.instances, self.listings
        )

    def start_soon(self, fn: Callable[..., Coroutine[Any, Any, Any]], *args: Any, name: str) -> None:
        """Run `fn(*args)` in the hub's task group (it must handle its own errors); nothing runs
        in an `inspect` hub."""
        if self.inspect:
            log.debug("not started: this hub only inspects", task=name)
            return
        self.task_group.start_soon(fn, *args, name=name)

    def set_busy(self, plugin: str, count: int) -> None:
        """`plugin` has `count` pieces of work in progress (see `PluginContext.set_busy`)."""
        self.work[plugin] = count
        self.session_changed.set()

    def warn(self, plugin: str, message: str) -> None:
        """A problem of `plugin` listed under its `warnings` (see `PluginContext.warn`)."""
        self.plugins[plugin].warnings.append(message)

    @property
    def loaded(self) -> list[str]:
        return [name for name, info in self.plugins.items() if info.status == "loaded"]

    async def __aenter__(self) -> Hub:
        self.pm, self.plugins = load_plugins(self.config, extra=self.extra_plugins)
        stack = AsyncExitStack()
        await stack.__aenter__()
        try:
            if not self.inspect:
                self._start_telemetry(stack)
            await self._open_services(stack)
            self._task_group = await stack.enter_async_context(anyio.create_task_group())
            stack.callback(self._task_group.cancel_scope.cancel)
            self.connections = ConnectionCache(
                self.config.servers,
                log_dir=self.config.state_dir / "logs",
                message_handler=self._on_downstream_message,
                offline=self.inspect,
                store=self.store,  # remote servers' OAuth tokens
                wrap_command=dies_with_parent,  # no server outlives the hub, even by kill -9
                starting=self.config.limits.starting_servers,
            )
            await stack.enter_async_context(self.connections)
            self.listings = Listings(self.store, self.connections)
            await self.listings.setup()
            stack.push_async_callback(self._shutdown_plugins)
            await self._start_plugins()
            self._register_all()
            check_tool_selections(self.registry, self.loaded, self.config)
            if not self.inspect:
                await self.recover_dead()
                self._task_group.start_soon(self._keep_alive, name="hub:heartbeat")
        except BaseException:
            await stack.aclose()
            raise
        self._stack = stack
        log.info(
            "hub ready",
            instance=self.instances.id,
            plugins=self.loaded,
            tools=len(self.registry.tools),
            state_dir=str(self.config.state_dir),
            store=self.store.where,
        )
        return self

    async def _open_services(self, stack: AsyncExitStack) -> None:
        """The store (`open_store`: SQLite or PostgreSQL), this hub's registration in it, the
        budget, the context and the status lines."""
        self.store: Store = open_store(self.config)
        stack.callback(self.store.close)
        liveness = self.config.liveness
        self.instances = Instances(
            self.store,
            version=__version__,
            role=self.role,
            heartbeat_s=liveness.heartbeat_s,
            dead_after_s=liveness.dead_after_s,
        )
        await self.instances.register()
        stack.push_async_callback(self._record_stop)
        self.budget = Budget(
            self.store,
            self.config.budget.limit_usd,
            owner=self.instances.id,
            period=self.config.budget.period,
        )
        await self.budget.setup()
        self.context = ContextStore(self.store)
        await self.context.setup(self.config.context)
        await statusline.setup(self.store)

    def _start_telemetry(self, stack: AsyncExitStack) -> None:
        """OpenTelemetry on or off (`hub.telemetry`); what is buffered is exported at exit."""
        problem = configure_telemetry(self.config.telemetry)
        if problem is not None:
            log.warning(problem)
        stack.callback(flush_telemetry)

    async def __aexit__(self, *exc_info: object) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.aclose()
        self._task_group = None

    def busy(self) -> bool:
        """Whether any plugin has work in progress (a shared process does not exit then)."""
        return any(self.work.values())

    # -- other hub processes on the same state directory -----------------------------------

    async def _keep_alive(self) -> None:
        """Heartbeat, and recover the work of hubs that died, every few seconds; the store's file
        is checked on each (`Store.check`), so a deleted database is noticed within one. A store
        that cannot be reached (`StoreUnavailable`) is said once in the log and `hub://status`,
        and tried again; so is a full or read-only one."""
        while True:
            await anyio.sleep(self.config.liveness.heartbeat_s)
            try:
                await self.instances.heartbeat()
                await self.recover_dead()
            except StoreLost as exc:
                log.error("the store is gone; this hub no longer reads or writes it", problem=str(exc))
                self._store_problem = str(exc)
                self.store_lost.set()
                return
            except StoreError as exc:  # unreachable, full, read-only...: said once, tried again
                if isinstance(exc, StoreUnavailable):
                    self.instances.store_away()
                if str(exc) != self._store_problem:
                    log.error(
                        "the store cannot be used; this hub takes no new work and tries again",
                        problem=str(exc),
                    )
                self._store_problem = str(exc)
            except Exception:
                log.exception("heartbeat or recovery failed; trying again")
            else:
                if self._store_problem is not None:
                    log.info("the store can be used again; this hub carries on", store=self.store.where)
                self._store_problem = None

    @property
    def store_problem(self) -> str | None:
        """Why the store cannot be used now, or None."""
        return self._store_problem or self.store.problem

    async def run_workers(self, slots: int | None) -> None:
        """`hub worker`: run every loaded plugin's `hub_worker` role (see the hook) until
        cancelled; `PluginLoadError` if no loaded plugin has one."""
        impls = self._impls("hub_worker")
        if not impls:
            raise PluginLoadError(
                "no loaded plugin has a worker role (hub_worker): enable one, e.g. "
                '--plugins pool or [plugins] enabled = ["pool"]'
            )

        async def run_one(plugin: str, work: Any) -> None:
            try:
                await _await_lifecycle(work)
            except ToolError as exc:  # what the plugin says the user must fix: one line
                raise PluginLoadError(f"{plugin}: {exc}") from None

        async with anyio.create_task_group() as tg:
            for plugin, impl in impls:
                work = impl.function(**self._hook_args(impl, plugin, slots=slots))
                tg.start_soon(run_one, plugin, work, name=f"{plugin}:worker")
            await anyio.sleep_forever()

    async def recover_dead(self) -> None:
        """For each loaded plugin, settle what dead hub processes left: its `hub_recover` hook,
        then its reservations still open are charged in full. Claimed in the store, so each dead
        hub's work is recovered once, by one hub."""
        for name in self.loaded:
            for instance in await self.instances.needing_recovery(name):
                if not await self.instances.claim(instance.id, name):
                    continue
                try:
                    for plugin, impl in self._impls("hub_recover", name):
                        args = self._hook_args(impl, plugin, instance=instance)
                        await _await_lifecycle(impl.function(**args))
                    await self.budget.abandon(instance.id, name)
                except StoreError:
                    raise  # the store's fault, not the plugin's: said once by the heartbeat
                except Exception:
                    log.exception(
                        "recovering a dead hub's work failed; will try again",
                        plugin=name,
                        dead_instance=instance.id,
                    )
                    continue
                await self.instances.done(instance.id, name)
                log.debug("recovered the work of a hub that died", plugin=name, dead_instance=instance.id)

    async def _record_stop(self) -> None:
        with anyio.CancelScope(shield=True):
            try:
                if self._clean_shutdown:  # what a plugin left open is settled by the same rule
                    for name in self.plugins:  # as after a crash, since no one recovers after this hub
                        await self.budget.abandon(self.instances.id, name)
                await self.instances.stop(clean=self._clean_shutdown)
            except StoreError as exc:
                log.warning("could not record this hub's stop", problem=str(exc))
            except Exception:
                log.exception("could not record this hub's stop")

    # -- downstream notifications, fanned out to whoever listens --------------------------

    def on_downstream_message(self, listener: DownstreamListener) -> None:
        """Call `listener(server_name, message)` for every notification a downstream server sends."""
        self.downstream_listeners.append(listener)

    async def _on_downstream_message(self, server: str, message: Any) -> None:
        for listener in list(self.downstream_listeners):
            result = listener(server, message)
            if inspect.isawaitable(result):
                await result

    # -- plugin lifecycle --------------------------------------------------------------------

    def _context(self, name: str) -> PluginContext:
        if name not in self.contexts:
            context = self.contexts[name] = PluginContext(self, name, self.plugins[name].config)
            plugin = self.plugins[name].plugin
            if isinstance(plugin, Plugin):
                plugin.hub = context  # a plugin object sees its context as `self.hub` in every hook
        return self.contexts[name]

    def _fail(self, name: str, error: str) -> None:
        info = self.plugins[name]
        info.status, info.error = "failed", error
        self.registry.remove_plugin(name)
        self.panels.remove_plugin(name)
        if info.plugin is not None and self.pm.is_registered(info.plugin):
            self.pm.unregister(info.plugin)
        named = self.config.plugins.enabled is not None or name in self.extra_plugins
        if named:
            raise PluginLoadError(f"plugin {name!r} failed to start: {error}")
        log.error("plugin failed to start; serving the others", plugin=name, error=error)

    def _impls(self, hook: str, name: str | None = None) -> list[tuple[str, Any]]:
        """Implementations of `hook` by loaded plugins (only `name`'s when given), in load order."""
        return [
            (plugin, impl)
            for plugin, impl in self.pm.impls(hook)
            if (name is None or plugin == name) and self.plugins[plugin].status == "loaded"
        ]

    async def _start_plugins(self, name: str | None = None) -> None:
        names = [name] if name is not None else self.loaded
        starting = [(plugin, impl) for plugin, impl in self._impls("hub_startup", name)]
        for plugin in names:
            self._context(plugin)  # binds a plugin object's `self.hub` before any hook runs
        self._started.update(set(names) - {plugin for plugin, _ in starting})
        for plugin, impl in starting:
            try:
                await _await_lifecycle(impl.function(**self._hook_args(impl, plugin)))
            except StoreError:
                raise  # not this plugin's fault: the hub cannot start (exit 2, one line)
            except Exception as exc:
                log.exception("plugin startup raised", plugin=plugin)
                self._fail(plugin, f"{type(exc).__name__}: {exc}")
            else:
                self._started.add(plugin)

    def _register_all(self, name: str | None = None) -> None:
        for hook in ("hub_register_tools", "hub_register_resources", "hub_register_prompts"):
            for plugin, impl in self._impls(hook, name):
                try:
                    result = impl.function(**self._hook_args(impl, plugin))
                    if inspect.isawaitable(result):
                        if inspect.iscoroutine(result):
                            result.close()
                        raise TypeError(
                            "it returned an awaitable, but registration hooks run synchronously; "
                            "register directly and do async work in hub_startup"
                        )
                except Exception as exc:
                    log.exception("plugin registration raised", plugin=plugin, hook=hook)
                    self._fail(plugin, f"{hook}: {type(exc).__name__}: {exc}")
        self._register_panels(name)

    def _register_panels(self, name: str | None = None) -> None:
        """`hub_dashboard_panels`: each plugin's panels into `panels`."""
        for plugin, impl in self._impls("hub_dashboard_panels", name):
            info = self.plugins[plugin]

            def register(panel: Panel, plugin: str = plugin, info: PluginInfo = info) -> None:
                try:
                    self.panels.add(panel, plugin)
                except RegistrationError as exc:
                    info.warnings.append(str(exc))
                    log.warning("skipped a panel", plugin=plugin, problem=str(exc))

            args = {**self._hook_args(impl, plugin), "register": register}
            try:
                impl.function(**{arg: args[arg] for arg in impl.argnames})
            except Exception as exc:
                log.exception("plugin registration raised", plugin=plugin, hook="hub_dashboard_panels")
                self._fail(plugin, f"hub_dashboard_panels: {type(exc).__name__}: {exc}")

    def _hook_args(
        self, impl: Any, name: str, instance: Instance | None = None, slots: int | None = None
    ) -> dict[str, Any]:
        info = self.plugins[name]

        def register(item: Tool | Resource | ResourceTemplate | Prompt) -> None:
            try:
                self.registry.add(item, name)
            except RegistrationError as exc:
                info.warnings.append(str(exc))
                log.warning("skipped a registration", plugin=name, problem=str(exc))

        available = {
            "hub": self._context(name),
            "register": register,
            "instance": instance,
            "slots": slots,
        }
        return {arg: available[arg] for arg in impl.argnames}

    async def _shutdown_plugins(self, name: str | None = None) -> None:
        clean = True
        with anyio.CancelScope(shield=True), anyio.move_on_after(SHUTDOWN_GRACE_S) as scope:
            for plugin, impl in reversed(self._impls("hub_shutdown", name)):
                if plugin not in self._started:
                    continue  # its hub_startup never ran (another plugin failed first): nothing to release
                try:
                    await _await_lifecycle(impl.function(**self._hook_args(impl, plugin)))
                except Exception:
                    clean = False
                    log.exception("plugin shutdown raised", plugin=plugin)
        if scope.cancelled_caught:
            clean = False
            log.warning("plugin shutdown hooks took too long; stopping anyway", grace_s=SHUTDOWN_GRACE_S)
        if name is None:
            # Every plugin settled its own work: no other hub needs to recover after this one.
            self._clean_shutdown = clean

    # -- runtime plugin changes --------------------------------------------------------------

    async def add_plugin(self, plugin: Any, name: str) -> None:
        """Load `plugin` into the running hub: its config is validated, then startup and
        registration hooks run now, exactly as at start (failures raise `PluginLoadError`)."""
        if name in self.plugins and self.plugins[name].status == "loaded":
            raise PluginLoadError(f"plugin {name!r} is already loaded")
        info = PluginInfo(name, getattr(plugin, "__name__", type(plugin).__name__))
        register_plugin(self.pm, name, plugin, info)
        self.plugins[name] = info
        self.extra_plugins[name] = plugin  # a plugin added by hand is a named one: failures raise
        try:
            info.config = plugin_config(self.pm, name, self.config)
        except Exception:
            self.pm.unregister(plugin)
            del self.plugins[name]
            raise
        self.contexts.pop(name, None)
        await self._start_plugins(name)
        self._register_all(name)

    async def remove_plugin(self, name: str) -> None:
        """Unload plugin `name`: its shutdown hook runs and everything it registered goes away."""
        info = self.plugins.get(name)
        if info is None or info.status != "loaded":
            raise PluginLoadError(f"plugin {name!r} is not loaded")
        await self._shutdown_plugins(name)
        self._started.discard(name)
        self.registry.remove_plugin(name)
        self.panels.remove_plugin(name)
        self.pm.unregister(info.plugin)
        info.status = "not selected"

    # -- reporting ---------------------------------------------------------------------------

    async def status(self) -> dict[str, Any]:
        """Plugins and versions, budget, context size and each downstream server's state; the
        store's problem, if it has one (then what it holds is left out, not read from a file
        that is gone)."""
        plugins = []
        for name, info in self.plugins.items():
            entry = info.describe()
            entry.update(self.registry.contributions(name))
            plugins.append(entry)
        store: dict[str, Any] = {**self.store.describe(), "problem": self.store_problem}
        if hasattr(self.store, "path"):
            store["path"] = str(self.store.path)
        try:
            live = await self.instances.live()
            from_store: dict[str, Any] = {
                "instances": [i.describe() for i in live],
                "workers": [describe_worker(i) for i in live if i.work],
                "budget": await self.budget.summary(),
                "context": {"entries": len(await self.context.all())},
            }
        except StoreError as exc:
            store["problem"], from_store = str(exc), {}
        return {
            "hub": {
                "version": __version__,
                "uptime_s": round(time.time() - self.started_at, 1),
                "config": self.config.source,
                "state_dir": str(self.config.state_dir),
                "instance": self.instances.id,
            },
            "store": store,
            "sessions": list(self.sessions.values()),
            # [tools] expose: what is listed now, and the tools each session loaded (find_tools).
            **({"tools": self._server.discovery.describe()} if self._server is not None else {}),
            "plugins": plugins,
            **from_store,
            "servers": self.connections.status(),
            "counts": {
                "tools": len(self.registry.tools),
                "resources": len(self.registry.resources) + len(self.registry.templates),
                "prompts": len(self.registry.prompts),
            },
        }
