"""`PluginContext`: what every hook receives as `hub`, a plugin's own view of the running hub.

It holds the shared services (`Services`: store, budget, context, connections, listings,
instances) and
the plugin's name, config and logger, and reaches the host that runs the plugins only through
the narrow `Host` protocol (its task group, its registry, its bookkeeping), so this contract
never imports the engine (`hub.host.Hub` implements `Host`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import structlog
from pydantic import BaseModel

from hub.client.cache import ConnectionCache
from hub.client.listing import Listings
from hub.config.settings import HubConfig
from hub.errors import StoreError
from hub.plugin.items import Prompt, Resource, ResourceTemplate, Tool
from hub.plugin.registry import HOLD_KINDS, HoldKind, ListHold, Registry
from hub.services import statusline
from hub.services.budget import Budget, PluginBudget
from hub.services.context_store import ContextStore
from hub.services.instances import Instances
from hub.services.store import Store
from hub.telemetry import PluginTelemetry

__all__ = ["DownstreamListener", "Host", "PluginContext", "Services"]

#: `listener(server_name, message)`, for each notification a downstream server sends.
DownstreamListener = Callable[[str, Any], Awaitable[None] | None]


@dataclass
class Services:
    """The services one hub run shares among its plugins, passed in, never global."""

    store: Store
    budget: Budget
    context: ContextStore
    connections: ConnectionCache
    instances: Instances
    listings: Listings


class Host(Protocol):
    """What a `PluginContext` needs of the engine that runs the plugins (`hub.host.Hub`)."""

    config: HubConfig
    registry: Registry

    @property
    def services(self) -> Services: ...

    def start_soon(self, fn: Callable[..., Coroutine[Any, Any, Any]], *args: Any, name: str) -> None: ...

    def set_busy(self, plugin: str, count: int) -> None: ...

    def warn(self, plugin: str, message: str) -> None: ...

    def on_downstream_message(self, listener: DownstreamListener) -> None: ...

    async def resource_updated(self, uri: str) -> None: ...

    async def status(self) -> dict[str, Any]: ...


class PluginContext:
    """What every hook receives as `hub`: the plugin's own view of the hub.

    Attributes: `name`, `config` (the validated `[plugins.NAME]` model or None), `settings` (the
    whole `HubConfig`), `store`, `budget` (records spend under this plugin's name), `context`,
    `connections`, `listings` (what each downstream server lists, kept in the store), `log` (a structlog logger bound to the plugin), `state` (a dict for the
    plugin's own objects during this run, for a plugin written as a module; a `hub.Plugin` object
    keeps them as its attributes), `instance_id` (this hub process's id in the store:
    stamp live work with it), `instances` (every hub process sharing the state directory:
    ``await hub.instances.is_alive(owner)``, ``await hub.instances.get(owner)``) and `telemetry`
    (OpenTelemetry spans and metrics, free when off: `hub.telemetry.PluginTelemetry`).
    """

    def __init__(self, host: Host, name: str, config: BaseModel | None) -> None:
        self._host = host
        self.name = name
        self.config = config
        services = host.services
        self.settings: HubConfig = host.config
        self.store: Store = services.store
        self.budget: PluginBudget = services.budget.for_plugin(name)
        self.context: ContextStore = services.context
        self.connections: ConnectionCache = services.connections
        self.listings: Listings = services.listings
        self.instances: Instances = services.instances
        self.instance_id: str = services.instances.id
        self.log = structlog.get_logger(f"hub.plugins.{name}").bind(plugin=name)
        # OpenTelemetry for this plugin's own spans and metrics: no-ops when telemetry is off.
        self.telemetry = PluginTelemetry(name)
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
            except StoreError as exc:  # said in one sentence: the store's fault, not the plugin's
                self.log.error(
                    "background task stopped: the store cannot be used", task=label, problem=str(exc)
                )
            except Exception:
                self.log.exception("background task failed", task=label)

        self._host.start_soon(guarded, name=f"{self.name}:{label}")

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

    def hold_lists(self, reason: str, *, wait_s: float, kinds: Iterable[HoldKind] = HOLD_KINDS) -> ListHold:
        """Make the hub's answers to list requests (and `initialize` / `server/discover`, for the
        instructions) wait until `hold.release()`, each request for at most `wait_s`: for work
        about to change what the hub lists, such as a server starting. A request that waited
        `wait_s` in vain is answered as things are, the log names the `reason`, and no later
        request waits for that hold; release it anyway when the work is done or given up.
        `kinds` narrows it ("tools", "resources", "prompts", "instructions")."""
        return self._host.registry.hold(reason, self.name, wait_s, kinds)

    def set_instructions(self, text: str | None) -> None:
        """This plugin's part of the hub's instructions (what `initialize` and `server/discover`
        give clients, and Claude Code shows the model), after the hub's own; None removes it.
        Sessions that start from now on get it."""
        self._host.registry.set_instructions(self.name, text)

    def describe_group(self, group: str, text: str | None) -> None:
        """What your tools of `group` (`Tool.group`) are about, in words: `find_tools` searches
        it and Claude Code's tool search gets its start as a hint (the proxy gives each server's
        instructions). None forgets it."""
        self._host.registry.describe_group(group, text)

    def on_downstream_message(self, listener: DownstreamListener) -> None:
        """Call `listener(server_name, message)` for each notification a downstream server sends
        (tools/list_changed, progress, log messages)."""
        self._host.on_downstream_message(listener)

    async def resource_updated(self, uri: str) -> None:
        """Tell the clients subscribed to resource `uri` (either protocol era) that it changed;
        a `Resource` or `ResourceTemplate` learns of its first and last subscriber through its
        `subscribe` and `unsubscribe`."""
        await self._host.resource_updated(uri)

    async def status(self) -> dict[str, Any]:
        """The hub's status (what `hub://status` shows)."""
        return await self._host.status()

    def set_busy(self, count: int) -> None:
        """How many pieces of work this plugin has in progress (running or queued tasks, say). A
        shared hub process (one per launch, behind `hub serve`'s bridge) does not exit while any
        plugin has work, even with no session connected; 0 when it has none."""
        self._host.set_busy(self.name, max(0, count))

    def set_capacity(self, capacity: int, busy: int, unit: str = "slots") -> None:
        """How many pieces of work (`unit`) this plugin can run at once in this process, and how
        many it runs now: written with the hub's heartbeat, so `hub status` and `hub://status`
        list this process as a worker (host, capacity, busy, heartbeat). 0 capacity: none."""
        self.instances.set_work(self.name, max(0, capacity), max(0, busy), unit)

    def warn(self, message: str) -> None:
        """A problem the user should know about but that does not stop the plugin (a missing
        command, say): logged once and listed under this plugin's `warnings` in `hub://status`."""
        self.log.warning(message)
        self._host.warn(self.name, message)

    async def set_status_line(self, text: str | None) -> None:
        """This plugin's part of `hub statusline` (Claude Code's status line); None removes it."""
        await statusline.set_line(self.store, self.name, text)
