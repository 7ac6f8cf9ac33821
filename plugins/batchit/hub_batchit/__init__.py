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

from hub import Tool, ToolCall, hookimpl
from hub.host import PluginContext

from .request import BatchRequest
from .run import BatchRun, Limits, ToolLists, plan, render

__all__ = ["BatchRequest", "Settings"]

DESCRIPTION = """\
Run many tool calls on downstream MCP servers (the [servers] of hub.toml) in one request.
Give `server` (or BatchIt's `targetServer`) and `operations` [{tool, arguments, id?, server?, timeoutMs?}];
`options` {maxConcurrent=10, timeoutMs=30000, stopOnError=false, cancelOnError=false}.
An argument {"$ref": "ID", "path": "structuredContent.items.0"} takes a value from the result of the
operation with that id (path from content/structuredContent/text; none: structuredContent, else text);
{"$text": "... {{ID}} ... {{ID.structuredContent.name}} ..."} splices results into text;
{"$literal": value} passes value as is. Referencing operations wait for what they reference.
Results come in request order with status ok/error/skipped/timeout/cancelled; isError is set when
any operation did not succeed."""


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


@hookimpl
def hub_config_model() -> type[BaseModel]:
    return Settings


@hookimpl
def hub_startup(hub: PluginContext) -> Any:
    async def start() -> None:
        batchit = hub.state["batchit"] = BatchIt(hub)
        hub.on_downstream_message(batchit.on_message)

    return start


@hookimpl
def hub_register_tools(register: Any, hub: PluginContext) -> None:
    batchit = hub.state["batchit"]
    assert isinstance(batchit, BatchIt), "hub_startup did not run"
    register(
        Tool(
            "batch_execute",
            batchit.batch_execute,
            DESCRIPTION,
            BatchRequest,
            title="Run many downstream tool calls at once",
        )
    )
