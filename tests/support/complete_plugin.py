"""A plugin written from docs/plugins.md alone, importing only from `hub`, that does everything a
built-in plugin does: a `Plugin` object owning its state, a config model, tools, resources,
prompts, a background task, downstream sessions (and their notifications), budget reservations
(settled after a crash by `hub_recover`), a status line, tools added at run time, and the errors
a plugin raises and catches. `tests/test_complete_plugin.py` drives it through an MCP client.
"""

from __future__ import annotations

import sys
from typing import Any

import anyio
from pydantic import BaseModel, ConfigDict, Field

from hub import (
    BudgetExceeded,
    Instance,
    Lifecycle,
    Plugin,
    PluginContext,
    Prompt,
    PromptArgument,
    RegisterPrompt,
    RegisterResource,
    RegisterTool,
    RegistrationError,
    Reservation,
    Resource,
    ResourceTemplate,
    ServerConfig,
    ServerUnavailable,
    Tool,
    ToolCall,
    ToolError,
    dies_with_parent,
    hookimpl,
    process_start_token,
)

MIGRATIONS = [
    "CREATE TABLE complete_jobs (id INTEGER PRIMARY KEY, owner TEXT NOT NULL, reservation INTEGER,"
    " state TEXT NOT NULL)"
]


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    greeting: str = Field(default="hello", description="What `complete_greet` says.")
    tick_s: float = Field(default=0.01, gt=0, description="How often the background task ticks.")


class GreetArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(description="Who to greet.")


class CallArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    server: str = Field(description="A [servers.NAME] of hub.toml.")
    text: str = Field(description="What the downstream echo tool echoes.")


class JobArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    usd: float = Field(ge=0, description="What to reserve for the job.")
    spend_usd: float = Field(default=0, ge=0, description="What it spends, if it finishes.")
    finish: bool = Field(default=True, description="False leaves the job open (as if the hub died).")


class NoArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Service:
    """What this plugin keeps for one hub run: its settings, counters and open jobs."""

    def __init__(self, hub: PluginContext, settings: Settings) -> None:
        self.hub = hub
        self.settings = settings
        self.ticks = 0
        self.ticked = anyio.Event()
        self.notifications: list[tuple[str, str]] = []
        self.open_jobs: dict[int, Reservation] = {}

    async def tick_forever(self) -> None:
        while True:
            await anyio.sleep(self.settings.tick_s)
            self.ticks += 1
            self.ticked.set()

    async def on_downstream(self, server: str, message: Any) -> None:
        self.notifications.append((server, type(message).__name__))

    async def job(self, args: JobArgs) -> dict[str, Any]:
        hub = self.hub
        try:
            # A job left running outlives this hub: durable, so hub_recover settles it after a crash.
            reservation = await hub.budget.reserve(args.usd, "complete job", durable=not args.finish)
        except BudgetExceeded as exc:
            raise ToolError(f"cannot start the job: {exc}") from None
        insert = "INSERT INTO complete_jobs (owner, reservation, state) VALUES (?, ?, 'running')"
        job_id = await hub.store.transaction(
            lambda conn: int(conn.execute(insert, (hub.instance_id, reservation.id)).lastrowid or 0)
        )
        if not args.finish:
            self.open_jobs[job_id] = reservation
            await hub.set_status_line(f"complete: {len(self.open_jobs)} running")
            return {"job": job_id, "state": "running"}
        await reservation.commit(args.spend_usd)
        await hub.store.execute("UPDATE complete_jobs SET state = 'done' WHERE id = ?", (job_id,))
        await hub.set_status_line("complete: idle")
        return {"job": job_id, "state": "done", "budget": await hub.budget.summary()}


class CompletePlugin(Plugin):
    """The plugin object: `service` is set by hub_startup, before every other hook."""

    service: Service

    @hookimpl
    def hub_config_model(self) -> type[BaseModel]:
        return Settings

    @hookimpl
    def hub_startup(self) -> Lifecycle:
        async def start() -> None:
            hub = self.hub
            assert isinstance(hub.config, Settings)
            await hub.store.migrate("complete", MIGRATIONS)
            self.service = Service(hub, hub.config)
            hub.start_soon(self.service.tick_forever, name="tick")
            hub.on_downstream_message(self.service.on_downstream)
            await hub.set_status_line("complete: idle")

        return start

    @hookimpl
    def hub_shutdown(self) -> Lifecycle:
        async def stop() -> None:
            await self.hub.set_status_line(None)

        return stop

    @hookimpl
    def hub_recover(self, instance: Instance) -> Lifecycle:
        async def recover() -> None:
            hub = self.hub
            rows = await hub.store.fetchall(
                "SELECT id, reservation FROM complete_jobs WHERE owner = ? AND state = 'running'",
                (instance.id,),
            )
            for row in rows:
                # What the job spent is known here: nothing, so its reservation is released.
                reservation = await hub.budget.reservation(row["reservation"])
                if reservation is not None:
                    await reservation.release()
                await hub.store.execute(
                    "UPDATE complete_jobs SET state = 'interrupted' WHERE id = ?", (row["id"],)
                )

        return recover

    @hookimpl
    def hub_register_tools(self, register: RegisterTool, hub: PluginContext) -> None:
        service = self.service

        async def complete_greet(args: GreetArgs, call: ToolCall) -> dict[str, Any]:
            if not args.name.strip():
                raise ToolError("name is empty; give someone's name")
            await call.report_progress(1, 1, "greeted")
            return {"message": f"{service.settings.greeting}, {args.name}!", "ticks": service.ticks}

        async def complete_call(args: CallArgs, call: ToolCall) -> dict[str, Any]:
            try:
                async with hub.connections.session(args.server) as session:
                    result = await session.call_tool("echo", {"text": args.text})
            except ServerUnavailable as exc:
                raise ToolError(f"downstream server unavailable: {exc}") from None
            return {"echo": result.content[0].text}

        async def complete_job(args: JobArgs, call: ToolCall) -> dict[str, Any]:
            return await service.job(args)

        async def complete_add_server(args: NoArgs, call: ToolCall) -> dict[str, Any]:
            downstream = sys.modules["hubtests"].DOWNSTREAM
            hub.connections.add_server(
                "added", ServerConfig(command=sys.executable, args=[str(downstream)]), expand=False
            )
            return {"servers": hub.connections.names()}

        async def complete_add_tool(args: NoArgs, call: ToolCall) -> dict[str, Any]:
            async def late(a: NoArgs, c: ToolCall) -> str:
                return "late"

            hub.add_tool(Tool("complete_late", late, "Added at run time.", NoArgs))
            try:
                hub.add_tool(Tool("context_set", late, "Clashes with the core plugin.", NoArgs))
            except RegistrationError as exc:
                return {"added": "complete_late", "refused": str(exc)}
            raise AssertionError("a clashing tool was accepted")

        async def complete_argv(args: NoArgs, call: ToolCall) -> dict[str, Any]:
            argv = dies_with_parent([sys.executable, "-c", "pass"])
            process = await anyio.run_process(argv, start_new_session=True)
            return {
                "argv": argv,
                "returncode": process.returncode,
                "token": process_start_token(1) is not None,
            }

        register(Tool("complete_greet", complete_greet, "Greet someone.", GreetArgs))
        register(Tool("complete_call", complete_call, "Echo through a downstream server.", CallArgs))
        register(Tool("complete_job", complete_job, "Run a job against the shared budget.", JobArgs))
        register(Tool("complete_add_server", complete_add_server, "Add a downstream server.", NoArgs))
        register(Tool("complete_add_tool", complete_add_tool, "Add a tool at run time.", NoArgs))
        register(Tool("complete_argv", complete_argv, "Run a child that dies with the hub.", NoArgs))

    @hookimpl
    def hub_register_resources(self, register: RegisterResource) -> None:
        service = self.service

        async def state() -> dict[str, Any]:
            return {"ticks": service.ticks, "open_jobs": sorted(service.open_jobs)}

        async def job(params: dict[str, str]) -> dict[str, Any]:
            row = await self.hub.store.fetchone("SELECT * FROM complete_jobs WHERE id = ?", (params["id"],))
            if row is None:
                raise ToolError(f"no job {params['id']}")
            return dict(row)

        register(Resource("complete://state", "state", state, "Ticks and open jobs."))
        register(ResourceTemplate("complete://jobs/{id}", "job", job, "One job."))

    @hookimpl
    def hub_register_prompts(self, register: RegisterPrompt) -> None:
        async def render(args: dict[str, str]) -> str:
            return f"{self.service.settings.greeting}, {args['name']}: write a haiku."

        register(Prompt("complete_haiku", render, "A haiku prompt.", [PromptArgument("name", required=True)]))
