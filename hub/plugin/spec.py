"""Every hook a hub plugin can implement.

A plugin is a module or object with functions named after these hooks and marked with
``@hub.hookimpl``. It is found through the ``hub.plugin.manager`` entry-point group. Hooks are plain
(synchronous) functions: lifecycle hooks *return* a coroutine or async function that the hub
awaits inside its anyio task group, so no hook is itself ``async def`` (a plugin with an
``async def`` hook is refused at load and reported as failed, naming the hook). A plugin may
also be a class (`hub.Plugin`) whose methods are the hooks; see `hub.plugin.base`.

Each hook receives `hub`, the plugin's own `hub.PluginContext`: its name, validated config and
the shared services (store, budget, context, downstream connections, logger). Registration
hooks also receive `register`, a callback bound to the plugin, so the hub records who
contributed what. The argument list of an implementation may be any subset of the spec's.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeAlias

import pluggy

from hub.plugin.items import Prompt, Resource, ResourceTemplate, Tool
from hub.plugin.panels import RegisterPanel

if TYPE_CHECKING:
    from pydantic import BaseModel

    from hub.plugin.context import PluginContext
    from hub.services.instances import Instance

__all__ = ["Lifecycle", "RegisterPrompt", "RegisterResource", "RegisterTool", "hookimpl", "hookspec"]

PROJECT = "hub"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

#: What a lifecycle hook (`hub_startup`, `hub_shutdown`, `hub_recover`) returns for the hub to await.
Lifecycle: TypeAlias = Callable[[], Awaitable[Any]] | Awaitable[Any] | None
#: The ``register`` argument of `hub_register_tools`: call it once per tool.
RegisterTool: TypeAlias = Callable[[Tool], None]
#: The ``register`` argument of `hub_register_resources`.
RegisterResource: TypeAlias = Callable[[Resource | ResourceTemplate], None]
#: The ``register`` argument of `hub_register_prompts`.
RegisterPrompt: TypeAlias = Callable[[Prompt], None]


@hookspec
def hub_config_model() -> type[BaseModel] | None:  # type: ignore[empty-body]
    """Return the pydantic model of this plugin's ``[plugins.NAME]`` table in hub.toml.

    Called once when the plugin loads, before any other hook. The hub validates the table (an
    empty one when the file has none) against the model and hands the instance to every later
    hook as ``hub.config``. A validation error stops the hub with ``FILE: plugins.NAME.key: problem``.
    Give every field a default, so the plugin works with no table at all. Use
    ``model_config = ConfigDict(extra="forbid")`` so a misspelt key is reported.

    Example::

        class Settings(BaseModel):
            model_config = ConfigDict(extra="forbid")
            greeting: str = "hello"

        @hookimpl
        def hub_config_model():
            return Settings
    """


@hookspec
def hub_server_config_model() -> type[BaseModel] | None:  # type: ignore[empty-body]
    """Return the pydantic model of the keys this plugin adds to every ``[servers.NAME]`` table.

    Called once when the plugin loads. The core owns the connection keys (`type`, `command`,
    `args`, `env`, `cwd`, `url`, `headers`, `timeout`, `idle_timeout_s`, `startup_timeout_s`);
    any other key of a server table must be a field of a loaded plugin's model, or the hub stops
    with ``FILE: servers.NAME.key: unknown key`` (with a did-you-mean). Each plugin's keys are
    validated by its model; read them with ``hub.settings.servers[name].plugin_settings(Model)``.
    Give every field a default.

    Example::

        class ServerKeys(BaseModel):
            expose: bool = True

        @hookimpl
        def hub_server_config_model():
            return ServerKeys
    """


@hookspec
def hub_startup(hub: PluginContext) -> Lifecycle:
    """Prepare the plugin: create tables, open files, start background tasks.

    Called once per hub run after configs are validated and before any registration hook.
    Return an async function (or coroutine); the hub awaits it inside its task group. Start
    long-running work with ``hub.start_soon(fn)``: it is cancelled at shutdown. If it raises, the
    plugin is reported as failed by name and the hub serves the others (or stops, if the user
    asked for this plugin by name).

    Example::

        @hookimpl
        def hub_startup(hub):
            async def start():
                await hub.store.migrate("hello", ["CREATE TABLE greetings (name TEXT)"])
                hub.start_soon(poll_forever, hub)
            return start
    """


@hookspec
def hub_register_tools(register: RegisterTool, hub: PluginContext) -> None:
    """Register this plugin's tools by calling ``register(Tool(...))`` once per tool.

    Called after `hub_startup`. Tool names must match ``^[A-Za-z0-9_-]{1,64}$`` and be unique
    across plugins; a clash or bad name is reported with both plugins' names and that tool is
    skipped. Arguments are validated against the tool's schema before the handler runs. Tools
    can also be added or removed later with ``hub.add_tool`` / ``hub.remove_tool``; clients are
    told with ``tools/list_changed``.

    Example::

        class Greet(BaseModel):
            name: str

        async def greet(args: Greet, call: ToolCall) -> dict:
            return {"greeting": f"hello {args.name}"}

        @hookimpl
        def hub_register_tools(register):
            register(Tool("greet", greet, "Greet someone", input_model=Greet))
    """


@hookspec
def hub_register_resources(register: RegisterResource, hub: PluginContext) -> None:
    """Register resources (fixed URIs) and resource templates (URIs with ``{params}``).

    Called after `hub_startup`. ``read()`` (or ``read(params)`` for a template) returns text,
    bytes or JSON-ready data. URIs must be unique across plugins.

    Example::

        @hookimpl
        def hub_register_resources(register, hub):
            async def greetings():
                return {"count": 3}
            register(Resource("hello://greetings", "greetings", greetings))

            async def one(params):
                return {"name": params["name"]}
            register(ResourceTemplate("hello://greetings/{name}", "greeting", one))
    """


@hookspec
def hub_register_prompts(register: RegisterPrompt, hub: PluginContext) -> None:
    """Register prompts (MCP prompt templates) with their arguments.

    Called after `hub_startup`. ``render(arguments)`` returns the text of one user message or a
    list of ``mcp.types.PromptMessage``; required and unknown arguments are checked first.

    Example::

        @hookimpl
        def hub_register_prompts(register):
            async def render(args):
                return f"Say hello to {args['name']}."
            register(Prompt("greet", render, "Greet someone", [PromptArgument("name", required=True)]))
    """


@hookspec
def hub_shutdown(hub: PluginContext) -> Lifecycle:
    """Release what `hub_startup` acquired. Return an async function (or coroutine).

    Called once when the hub stops (end of input, SIGTERM, Ctrl-C), in reverse load order,
    before downstream connections close and background tasks are cancelled; only for plugins
    whose `hub_startup` ran (or that have none), so it may rely on what startup set. Keep it short:
    the hub gives all shutdown hooks together a few seconds. Errors are logged, not raised.

    Example::

        @hookimpl
        def hub_shutdown(hub):
            async def stop():
                await flush_pending_writes(hub.store)
            return stop
    """


@hookspec
def hub_recover(hub: PluginContext, instance: Instance) -> Lifecycle:
    """Settle the live work a dead hub process left behind. Return an async function (or coroutine).

    Several hubs share one state directory, so every piece of live work a plugin keeps in the
    store (a running task, a job being submitted, a worktree) should carry its owner,
    ``hub.instance_id``. When a hub process dies without stopping cleanly (killed, crashed,
    machine lost), one other hub that loads this plugin calls this hook once for it, with the
    dead process's `instance` (``instance.id``, ``pid``, ``host``, ``cwd``, ``heartbeat_at``):
    at its own start, or within seconds while it runs. Touch only rows whose owner is
    ``instance.id``. The hub claims the recovery in the store first, so no two hubs run it for
    the same instance and plugin; if this hook raises, it is tried again later. Afterwards, any
    non-durable budget reservation of the dead hub for this plugin that is still open is charged
    in full (its spend cannot be known); release what you know was not spent before that.

    Example::

        @hookimpl
        def hub_recover(hub, instance):
            async def recover():
                await hub.store.execute(
                    "UPDATE jobs SET state = 'interrupted' WHERE owner = ? AND state = 'running'",
                    (instance.id,),
                )
            return recover
    """


@hookspec
def hub_worker(hub: PluginContext, slots: int | None) -> Lifecycle:
    """Do this plugin's work in `hub worker`: a hub that serves no MCP client and takes work queued
    in the store by any hub (on this machine or, with a PostgreSQL store, another). Return an async
    function (or coroutine).

    Called only in `hub worker`, once per plugin that implements it, after every `hub_startup`;
    the hub awaits it in its task group, alongside its heartbeat and recovery of dead hubs, until
    the worker stops (SIGTERM, Ctrl-C), when it is cancelled and `hub_shutdown` runs as usual.
    `slots` is ``hub worker --slots N``: how many pieces of work this worker may run at once
    (None: the plugin's own setting). A plugin whose work is only done for a client does not
    implement it; `hub worker` refuses to start when no loaded plugin does. Say what the worker
    can take with ``hub.set_capacity(...)`` (shown by `hub status`).

    Example::

        @hookimpl
        def hub_worker(hub, slots):
            async def work():
                await run_queue(hub, concurrency=slots or 2)  # until cancelled
            return work
    """


@hookspec
def hub_dashboard_panels(register: RegisterPanel, hub: PluginContext) -> None:
    """Register this plugin's panels on `hub dashboard` by calling ``register(Panel(...))``.

    Called after `hub_startup`, with the other registration hooks. A `Panel` has a `name` (unique
    within the plugin), a `title`, an async `render()` returning a `PanelView` (key figures,
    `PanelTable`s whose cells may be text, numbers, `PanelLink`s to local files or `PanelAction`
    buttons, and a note), and `actions`: name -> ``async handler(args) -> message`` that its
    buttons run. The dashboard renders the view to HTML itself; `render` is called about once a
    second while a dashboard is open, never otherwise, and gets 2 s. A bad or duplicate name is
    reported and that panel skipped. A panel that raises shows its error in its place.

    Example::

        @hookimpl
        def hub_dashboard_panels(register, hub):
            async def render():
                rows = await hub.store.fetchall("SELECT name FROM greetings ORDER BY name LIMIT 10")
                table = PanelTable(["name", ""], [[r["name"], PanelAction("forget", "forget", {"name": r["name"]})] for r in rows])
                return PanelView(facts={"greetings": len(rows)}, tables=[table])

            async def forget(args):
                await hub.store.execute("DELETE FROM greetings WHERE name = ?", (args["name"],))
                return f"forgot {args['name']}"

            register(Panel("greetings", "Greetings", render, actions={"forget": forget}))
    """
