"""hub-hello: the smallest useful third-party hub plugin."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from hub import Tool, ToolCall, hookimpl


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    greeting: str = "hello"


class HelloArgs(BaseModel):
    name: str


@hookimpl
def hub_config_model() -> type[BaseModel]:
    return Settings


@hookimpl
def hub_register_tools(register: Any, hub: Any) -> None:
    async def hello(args: HelloArgs, call: ToolCall) -> dict[str, str]:
        return {"message": f"{hub.config.greeting}, {args.name}!"}

    register(Tool("hello", hello, "Say hello (from the hub-hello package).", input_model=HelloArgs))
    _more_tools(register, hub)


class WaitArgs(BaseModel):
    seconds: float


class ViaArgs(BaseModel):
    server: str
    text: str


@hookimpl
def hub_register_resources(register: Any, hub: Any) -> None:
    from hub import Resource

    async def about() -> dict[str, str]:
        return {"plugin": "hello", "greeting": hub.config.greeting}

    register(Resource("hello://about", "about", about, "What this plugin is."))


def _more_tools(register: Any, hub: Any) -> None:
    import anyio

    async def hello_wait(args: WaitArgs, call: ToolCall) -> str:
        await call.report_progress(0, args.seconds, "waiting")  # so a test knows the call is running
        await anyio.sleep(args.seconds)
        return f"waited {args.seconds}"

    async def hello_via(args: ViaArgs, call: ToolCall) -> dict[str, Any]:
        async with hub.connections.session(args.server) as session:
            echoed = await session.call_tool("echo", {"text": args.text})
            who = await session.call_tool("whoami", {})
        return {"echo": echoed.content[0].text, "server_pid": who.structured_content["pid"]}

    register(Tool("hello_wait", hello_wait, "Wait a while.", input_model=WaitArgs))
    register(Tool("hello_via", hello_via, "Echo through a downstream server.", input_model=ViaArgs))
