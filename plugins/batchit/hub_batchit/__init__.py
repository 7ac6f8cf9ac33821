"""batchit: `batch_execute`, many tool calls on downstream MCP servers in one request.

Takes BatchIt's request as written (`targetServer`, `operations`, `options`) and a short form,
``"server": "fs"``, naming a `[servers.fs]` table. Beyond BatchIt: a `server` per operation,
references between operations (see `hub_batchit.refs`), results in request order with a status
each, progress notifications, timeouts that cancel the downstream call, and every check made
before anything runs. Connections come from the hub's shared cache.

`[plugins.batchit]`: `allow_inline_servers` (false: a targetServer not in hub.toml is refused),
`max_operations` (1000), `max_concurrency` (100, the highest `maxConcurrent` accepted).
"""

from __future__ import annotations

import time
from typing import Any

import mcp.types as types
from pydantic import BaseModel, ConfigDict, Field

from hub import Lifecycle, Plugin, PluginContext, RegisterTool, Tool, ToolCall, hookimpl

from .request import BatchRequest
from .run import BatchRun, Limits, ToolLists, plan, render

__all__ = ["BatchItPlugin", "BatchRequest", "Settings"]

DESCRIPTION = """\
Run many tool calls on downstream MCP servers in one request.
Give `server` and `operations` [{tool, arguments, id?, server?, timeoutMs?}].
An argument {"$ref": "ID", "path": "structuredContent.items.0"} takes a value from operation ID's
result; {"$text": "... {{ID}} ..."} splices results into text; {"$literal": v} passes v as is.
Results in request order: {summary, operations: [{index, id?, status, durationMs,
structuredContent | content | error}]}; isError when any operation did not end ok.
options.include errors|status and options.maxResultBytes return less."""


def describe(servers: list[str]) -> str:
    """The tool's description, naming the servers a request can use."""
    known = ", ".join(servers) if servers else "none yet: add [servers.NAME] tables to hub.toml"
    return f"{DESCRIPTION}\nServers: {known}."


class Settings(BaseModel):
    """`[plugins.batchit]`."""

    model_config = ConfigDict(extra="forbid")
    allow_inline_servers: bool = Field(
        default=False,
        description="Let a request's targetServer.transport start a command or reach a URL not in hub.toml.",
    )
    max_operations: int = Field(default=1000, ge=1, description="Most operations in one batch.")
    max_concurrency: int = Field(default=100, ge=1, description="Highest options.maxConcurrent accepted.")


class BatchIt:
    def __init__(self, hub: PluginContext) -> None:
        settings = hub.config
        assert isinstance(settings, Settings)
        self.hub = hub
        self.limits = Limits(settings.allow_inline_servers, settings.max_operations, settings.max_concurrency)
        self.tool_lists = ToolLists(hub.connections)

    async def batch_execute(self, request: BatchRequest, call: ToolCall) -> types.CallToolResult:
        started = time.perf_counter()
        steps = await plan(
            request, self.hub.settings.servers, self.hub.connections, self.tool_lists, self.limits
        )
        outcomes = await BatchRun(steps, request, self.hub.connections, call).run()
        wall_ms = round((time.perf_counter() - started) * 1000, 1)
        self.hub.log.debug("batch done", operations=len(steps), ms=wall_ms)
        return render(request, steps, outcomes, wall_ms)

    async def on_message(self, server: str, message: Any) -> None:
        if isinstance(message, types.ToolListChangedNotification):
            self.tool_lists.forget(server)


class BatchItPlugin(Plugin):
    """The batchit plugin (entry point ``hub_batchit:BatchItPlugin``): one `BatchIt` per hub run."""

    batchit: BatchIt  # set by hub_startup, which runs before every other hook

    @hookimpl
    def hub_config_model(self) -> type[BaseModel]:
        return Settings

    @hookimpl
    def hub_startup(self, hub: PluginContext) -> Lifecycle:
        async def start() -> None:
            self.batchit = BatchIt(hub)
            hub.on_downstream_message(self.batchit.on_message)

        return start

    @hookimpl
    def hub_register_tools(self, register: RegisterTool, hub: PluginContext) -> None:
        register(
            Tool(
                "batch_execute",
                self.batchit.batch_execute,
                describe(sorted(hub.settings.servers)),
                BatchRequest,
                title="Run many downstream tool calls at once",
            )
        )
