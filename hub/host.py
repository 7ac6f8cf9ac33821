"""The running hub: plugins, shared services and the task group they live in.

``async with Hub(config) as hub:`` loads the plugins, opens the store, budget, context and
connection cache, runs every plugin's startup inside the hub's task group and collects what the
plugins register. Leaving the block runs their shutdown hooks, closes downstream servers and
cancels background tasks. `hub.server` serves it all over MCP.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

import anyio
import anyio.abc
import structlog
from pydantic import BaseModel

from hub import __version__, statusline
from hub.budget import Budget, PluginBudget
from hub.config import HubConfig
from hub.connections import ConnectionCache
from hub.context import ContextStore
from hub.instances import HEARTBEAT_S, Instance, Instances
from hub.pluginbase import Plugin
from hub.plugins import (
    HubPluginManager,
    PluginInfo,
    PluginLoadError,
    check_tool_selections,
    load_plugins,
    plugin_config,
    register_plugin,
    tool_selection,
)
from hub.registry import ListKind, Prompt, RegistrationError, Registry, Resource, ResourceTemplate, Tool
from hub.store import Store

__all__ = ["Hub", "PluginContext"]

log = structlog.get_logger("hub")
SHUTDOWN_GRACE_S = 10.0


class PluginContext:
    """What every hook receives as `hub`: the plugin's own view of the hub.

    Attributes: `name`, `config` (the validated `[plugins.NAME]` model or None), `settings` (the
    whole `HubConfig`), `store`, `budget` (records spend under this plugin's name), `context`,
    `connections`, `log` (a structlog logger bound to the plugin), `state` (a dict for the
    plugin's own objects during this run, for a plugin written as a module; a `hub.Plugin` object
    keeps them as its attributes), `instance_id` (this hub process's id in the store:
    stamp live work with it) and `instances` (every hub process sharing the state directory:
    ``await hub.instances.is_alive(owner)``, ``await hub.instances.get(owner)``).
    """

    def __init__(self, host: Hub, name: str, config: BaseModel | None) -> None:
        self._host = host
        self.name = name
        self.config = config
        self.settings: HubConfig = host.config
        self.store: Store = host.store
        self.budget: PluginBudget = host.budget.for_plugin(name)
        self.context: ContextStore = host.context
        self.connections: ConnectionCache = host.connections
        self.instances: Instances = host.instances
        self.instance_id: str = host.instances.id
        self.log = structlog.get_logger(f"hub.plugins.{name}").bind(plugin=name)
        # Plugin-private objects for this hub run, for a plugin that is a module (a `hub.Plugin`
        # object keeps its own): never module globals, so two hubs in one process never share it.
        self.state: dict[str, Any] = {}

    def start_soon(self, fn: Callable[..., Awaitable[Any]], *args: Any, name: str | None = None) -> None:
        """Run `fn(*args)` in the hub's task group until it returns or the hub stops.

        An exception is logged with its traceback and ends only that task, never the hub.
        """
        label = name or getattr(fn, "__name__", "task")

        async def guarded() -> None:
            try:
                await fn(*args)
            except Exception:
                self.log.exception("background task failed", task=label)

        self._host.task_group.start_soon(guarded, name=f"{self.name}:{label}")

    def add_tool(self, tool: Tool) -> None:
        """Serve `tool` from now on; connected clients get `tools/list_changed`."""
        self._host.registry.add(tool, self.name)

    def remove_tool(self, name: str) -> bool:
        """Stop serving this plugin's tool `name`; returns whether it existed."""
        tool = self._host.registry.tools.get(name)
        if tool is None or tool.plugin != self.name:
            return False
        return self._host.registry.remove("tools", name)

    def add_resource(self, resource: Resource | ResourceTemplate) -> None:
        self._host.registry.add(resource, self.name)

    def remove_resource(self, uri: str) -> bool:
        item = self._host.registry.resources.get(uri) or self._host.registry.templates.get(uri)
        if item is None or item.plugin != self.name:
            return False
        return self._host.registry.remove("resources", uri)

    def add_prompt(self, prompt: Prompt) -> None:
        self._host.registry.add(prompt, self.name)

    def remove_prompt(self, name: str) -> bool:
        prompt = self._host.registry.prompts.get(name)
        if prompt is None or prompt.plugin != self.name:
            return False
        return self._host.registry.remove("prompts", name)

    def on_downstream_message(self, listener: Callable[[str, Any], Awaitable[None] | None]) -> None:
        """Call `listener(server_name, message)` for each notification a downstream server sends
        (tools/list_changed, progress, log messages)."""
        self._host.on_downstream_message(listener)

    async def status(self) -> dict[str, Any]:
        """The hub's status (what `hub://status` shows)."""
        return await self._host.status()

    def set_busy(self, count: int) -> None:
        """How many pieces of work this plugin has in progress (running or queued tasks, say). A
        shared hub process (one per launch, behind `hub serve`'s bridge) does not exit while any
        plugin has work, even with no session connected; 0 when it has none."""
        self._host.work[self.name] = max(0, count)
        self._host.session_changed.set()

    def warn(self, message: str) -> None:
        """A problem the user should know about but that does not stop the plugin (a missing
        command, say): logged once and listed under this plugin's `warnings` in `hub://status`."""
        self.log.warning(message)
        self._host.plugins[self.name].warnings.append(message)

    async def set_status_line(self, text: str | None) -> None:
        """This plugin's part of `hub statusline` (Claude Code's status line); None removes it."""
        await statusline.set_line(self.store, self.name, text)


async def _await_lifecycle(result: Any) -> None:
    """Run what a lifecycle hook returned: an async function, a coroutine, or nothing."""
    if result is None:
        return
    if callable(result) and not inspect.isawaitable(result):
        result = result()
    if inspect.isawaitable(result):
        await result


class Hub:
    """One hub instance. Construct, then ``async with``; nothing is global."""

    def __init__(self, config: HubConfig, *, extra_plugins: dict[str, Any] | None = None) -> None:
        from hub.builtin import context as core

        self.config = config
        self.extra_plugins = {"core": core, **(extra_plugins or {})}
        self.registry = Registry(
            warn=lambda message: log.warning(message),
            selection=lambda plugin: tool_selection(plugin, config),  # [plugins.NAME] tools / hide
        )
        self.started_at = time.time()
        self.pm: HubPluginManager
        self.plugins: dict[str, PluginInfo] = {}
        self.contexts: dict[str, PluginContext] = {}
        self._started: set[str] = set()  # plugins whose hub_startup ran: only they get hub_shutdown
        self._stack: AsyncExitStack | None = None
        self._task_group: anyio.abc.TaskGroup | None = None
        self._server: Any = None
        self._clean_shutdown = False
        # MCP sessions connected to this hub when it is a shared process (hub.shared), by id.
        self.sessions: dict[int, dict[str, Any]] = {}
        self.session_changed = anyio.Event()
        # Work in progress per plugin (PluginContext.set_busy): a shared process stays up for it.
        self.work: dict[str, int] = {}
        self.downstream_listeners: list[Callable[[str, Any], Awaitable[None] | None]] = []

    # -- services ----------------------------------------------------------------------------

    @property
    def task_group(self) -> anyio.abc.TaskGroup:
        if self._task_group is None:
            raise RuntimeError("the hub is not running (use `async with Hub(...)`)")
        return self._task_group

    @property
    def server(self) -> Any:
        """The MCP server (`mcp.server.Server`) serving this hub."""
        if self._server is None:
            from hub.server import HubServer

            self._server = HubServer(self)
        return self._server

    @property
    def loaded(self) -> list[str]:
        return [name for name, info in self.plugins.items() if info.status == "loaded"]

    async def __aenter__(self) -> Hub:
        self.pm, self.plugins = load_plugins(self.config, extra=self.extra_plugins)
        stack = AsyncExitStack()
        await stack.__aenter__()
        try:
            self.store = Store.in_state_dir(self.config.state_dir)
            stack.callback(self.store.close)
            self.instances = Instances(self.store, version=__version__)
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
            self._task_group = await stack.enter_async_context(anyio.create_task_group())
            stack.callback(self._task_group.cancel_scope.cancel)
            self.connections = ConnectionCache(
                self.config.servers,
                log_dir=self.config.state_dir / "logs",
                message_handler=self._on_downstream_message,
            )
            await stack.enter_async_context(self.connections)
            stack.push_async_callback(self._shutdown_plugins)
            await self._start_plugins()
            self._register_all()
            check_tool_selections(self.registry, self.loaded, self.config)
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
        )
        return self

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
        """Heartbeat, and recover the work of hubs that died, every few seconds."""
        while True:
            await anyio.sleep(HEARTBEAT_S)
            try:
                await self.instances.heartbeat()
                await self.recover_dead()
            except Exception:
                log.exception("heartbeat or recovery failed; trying again")

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
            except Exception:
                log.exception("could not record this hub's stop")

    # -- downstream notifications, fanned out to whoever listens --------------------------

    def on_downstream_message(self, listener: Callable[[str, Any], Awaitable[None] | None]) -> None:
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

    def _hook_args(self, impl: Any, name: str, instance: Instance | None = None) -> dict[str, Any]:
        info = self.plugins[name]

        def register(item: Tool | Resource | ResourceTemplate | Prompt) -> None:
            try:
                self.registry.add(item, name)
            except RegistrationError as exc:
                info.warnings.append(str(exc))
                log.warning("skipped a registration", plugin=name, problem=str(exc))

        available = {"hub": self._context(name), "register": register, "instance": instance}
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
        self.pm.unregister(info.plugin)
        info.status = "not selected"

    # -- reporting ---------------------------------------------------------------------------

    def on_registry_change(self, callback: Callable[[ListKind], None]) -> None:
        self.registry.on_change = callback

    async def status(self) -> dict[str, Any]:
        """Plugins and versions, budget, context size and each downstream server's state."""
        plugins = []
        for name, info in self.plugins.items():
            entry = info.describe()
            entry.update(self.registry.contributions(name))
            plugins.append(entry)
        return {
            "hub": {
                "version": __version__,
                "uptime_s": round(time.time() - self.started_at, 1),
                "config": self.config.source,
                "state_dir": str(self.config.state_dir),
                "instance": self.instances.id,
            },
            "instances": [i.describe() for i in await self.instances.live()],
            "sessions": list(self.sessions.values()),
            "plugins": plugins,
            "budget": await self.budget.summary(),
            "context": {"entries": len(await self.context.all())},
            "servers": self.connections.status(),
            "counts": {
                "tools": len(self.registry.tools),
                "resources": len(self.registry.resources) + len(self.registry.templates),
                "prompts": len(self.registry.prompts),
            },
        }
