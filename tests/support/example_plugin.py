"""An example plugin used by the core tests: one of every kind of hook, written as a plugin author would."""

from __future__ import annotations

from typing import Any

import anyio
from pydantic import BaseModel, ConfigDict, Field

from hub import (
    PluginContext,
    Prompt,
    PromptArgument,
    RegisterPrompt,
    RegisterResource,
    RegisterTool,
    Resource,
    ResourceTemplate,
    Tool,
    ToolCall,
    ToolError,
    hookimpl,
)

events: list[str] = []


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    greeting: str = "hello"
    repeat: int = Field(default=1, ge=1, le=5)


class GreetArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(max_length=2_000_000)
    times: int = 1


class SlowArgs(BaseModel):
    steps: int = 3
    delay: float = 0.01


class SpendArgs(BaseModel):
    reserve_usd: float
    spend_usd: float


class DownstreamArgs(BaseModel):
    server: str
    tool: str
    arguments: dict[str, Any] = {}


@hookimpl
def hub_config_model() -> type[BaseModel]:
    return Settings


@hookimpl
def hub_startup(hub: PluginContext) -> Any:
    async def start() -> None:
        await hub.store.migrate("example", ["CREATE TABLE example_greetings (name TEXT NOT NULL)"])
        events.append("startup")

        async def ticker() -> None:
            while True:
                await anyio.sleep(0.01)

        hub.start_soon(ticker)

    return start


@hookimpl
def hub_shutdown(hub: PluginContext) -> Any:
    async def stop() -> None:
        events.append("shutdown")

    return stop


@hookimpl
def hub_recover(hub: PluginContext, instance: Any) -> Any:
    async def recover() -> None:
        events.append(f"recover {instance.id} pid {instance.pid}")

    return recover


@hookimpl
def hub_register_tools(register: RegisterTool, hub: PluginContext) -> None:
    settings = hub.config
    assert isinstance(settings, Settings)

    async def greet(args: GreetArgs, call: ToolCall) -> dict[str, Any]:
        await hub.store.execute("INSERT INTO example_greetings (name) VALUES (?)", (args.name[:100],))
        return {"greeting": " ".join([f"{settings.greeting} {args.name}"] * (args.times * settings.repeat))}

    async def add(args: dict[str, Any], call: ToolCall) -> int:
        return int(args["a"]) + int(args["b"])

    async def boom(args: dict[str, Any], call: ToolCall) -> str:
        raise RuntimeError("kaboom")

    async def refuse(args: dict[str, Any], call: ToolCall) -> str:
        raise ToolError("no such thing as 'x' (known: a, b)")

    async def slow(args: SlowArgs, call: ToolCall) -> dict[str, int]:
        for i in range(1, args.steps + 1):
            await anyio.sleep(args.delay)
            await call.report_progress(i, args.steps, f"step {i}")
        return {"done": args.steps}

    async def spend(args: SpendArgs, call: ToolCall) -> dict[str, Any]:
        async with await hub.budget.reserve(args.reserve_usd, "example spend") as reservation:
            await reservation.commit(args.spend_usd)
        return await hub.budget.summary()

    async def downstream(args: DownstreamArgs, call: ToolCall) -> Any:
        async with hub.connections.session(args.server) as session:
            result = await session.call_tool(args.tool, args.arguments)
        return result

    async def add_dynamic(args: dict[str, Any], call: ToolCall) -> str:
        async def dyn(a: dict[str, Any], c: ToolCall) -> str:
            return "dynamic!"

        hub.add_tool(Tool(args["name"], dyn, "added at run time"))
        return "added"

    async def remove_dynamic(args: dict[str, Any], call: ToolCall) -> bool:
        return hub.remove_tool(args["name"])

    name_schema = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}
    register(Tool("greet", greet, "Greet someone.", input_model=GreetArgs))
    register(
        Tool(
            "add",
            add,
            "Add two integers.",
            input_schema={
                "type": "object",
                "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                "required": ["a", "b"],
                "additionalProperties": False,
            },
        )
    )
    register(Tool("boom", boom, "Always raises."))
    register(Tool("refuse", refuse, "Always refuses with a ToolError."))
    register(Tool("slow", slow, "Sleeps in steps, reporting progress.", input_model=SlowArgs))
    register(Tool("spend", spend, "Reserve and spend from the budget.", input_model=SpendArgs))
    register(
        Tool("downstream", downstream, "Call a tool on a downstream server.", input_model=DownstreamArgs)
    )
    register(Tool("add_dynamic", add_dynamic, "Add a tool at run time.", input_schema=name_schema))
    register(Tool("remove_dynamic", remove_dynamic, "Remove a run-time tool.", input_schema=name_schema))
    # Refused registrations: reported, the rest still served.
    register(Tool("context_set", boom, "clashes with the core plugin"))
    register(Tool("bad name!", boom, "not a valid tool name"))
    register(Tool("x" * 60, boom, "valid, but too long once Claude Code prefixes it"))


@hookimpl
def hub_register_resources(register: RegisterResource, hub: PluginContext) -> None:
    async def greetings() -> dict[str, Any]:
        rows = await hub.store.fetchall("SELECT name FROM example_greetings")
        return {"names": [row["name"] for row in rows]}

    async def one(params: dict[str, str]) -> dict[str, str]:
        if params["name"] == "nobody":
            raise ToolError("no greeting for 'nobody'")
        return {"name": params["name"], "greeting": f"hello {params['name']}"}

    register(Resource("example://greetings", "greetings", greetings, "Names greeted so far."))
    register(ResourceTemplate("example://greetings/{name}", "greeting", one, "One greeting."))


@hookimpl
def hub_register_prompts(register: RegisterPrompt, hub: PluginContext) -> None:
    async def render(args: dict[str, str]) -> str:
        return f"Write a {args.get('style', 'short')} greeting for {args['name']}."

    register(
        Prompt(
            "greeting",
            render,
            "Ask for a greeting.",
            [PromptArgument("name", "who to greet", required=True), PromptArgument("style")],
        )
    )
