"""A plugin whose tools ask their client (sampling, forms, a URL, roots) and log to it, with a
completable prompt and a subscribable resource template: `hub.ToolCall`'s API as a plugin author
uses it."""

from __future__ import annotations

from typing import Any

import anyio
import mcp.types as types

from hub import (
    ForwardedTool,
    PluginContext,
    Prompt,
    PromptArgument,
    RawResult,
    RegisterPrompt,
    RegisterResource,
    RegisterTool,
    ResourceTemplate,
    Tool,
    ToolCall,
    hookimpl,
)

events: list[str] = []  # subscribe / unsubscribe / cancelled, in order
LEVELS = ["debug", "info", "notice", "warning", "error", "critical", "alert", "emergency"]


async def sample(args: dict[str, Any], call: ToolCall) -> str:
    answer = await call.sample(str(args.get("prompt", "hi")), max_tokens=20)
    return getattr(answer.content, "text", "")


async def everything(args: dict[str, Any], call: ToolCall) -> dict[str, Any]:
    """One question after another: in the 2026-07-28 era, four rounds."""
    sampled = await call.sample("first")
    form = await call.elicit("Who are you?", {"type": "object", "properties": {"name": {"type": "string"}}})
    url = await call.elicit_url("Sign in", "https://example.com/sign-in")
    roots = await call.list_roots()
    return {
        "sample": getattr(sampled.content, "text", ""),
        "form": form.content,
        "url": url.action,
        "roots": [str(root.uri) for root in roots.roots],
    }


async def together(args: dict[str, Any], call: ToolCall) -> list[str]:
    """Two questions at once: one round with both."""
    texts: dict[int, str] = {}

    async def one(i: int) -> None:
        answer = await call.sample(f"question {i}")
        texts[i] = getattr(answer.content, "text", "")

    async with anyio.create_task_group() as tg:
        tg.start_soon(one, 1)
        tg.start_soon(one, 2)
    return [texts[1], texts[2]]


async def waiting(args: dict[str, Any], call: ToolCall) -> str:
    """Asks, and says when it is cancelled while waiting for the answer."""
    try:
        await call.sample("are you there?")
    except anyio.get_cancelled_exc_class():
        events.append("cancelled")
        raise
    return "answered"


async def logs(args: dict[str, Any], call: ToolCall) -> str:
    for level in LEVELS:
        await call.send_log(level, f"{level} line", logger="ask")  # type: ignore[arg-type]
    return "logged"


async def raw_sample(args: dict[str, Any], call: ToolCall) -> RawResult:
    """A raw-result tool (answered by the transports' shortcut) that asks its client."""
    text = await sample(args, call)
    return RawResult({"content": [{"type": "text", "text": text}]})


async def complete(name: str, value: str, context: dict[str, str]) -> list[str]:
    return [v for v in ("apple", "apricot", "banana") if v.startswith(value)]


async def read_item(params: dict[str, str]) -> str:
    return f"item {params['id']}"


async def subscribed(uri: str) -> None:
    events.append(f"subscribe {uri}")


async def unsubscribed(uri: str) -> None:
    events.append(f"unsubscribe {uri}")


@hookimpl
def hub_register_tools(register: RegisterTool, hub: PluginContext) -> None:
    prompt_schema = {"type": "object", "properties": {"prompt": {"type": "string"}}}
    register(Tool("ask_sample", sample, "Ask the client's model.", input_schema=prompt_schema))
    register(Tool("ask_everything", everything, "Ask four questions in turn."))
    register(Tool("ask_together", together, "Ask two questions at once."))
    register(Tool("ask_waiting", waiting, "Ask and wait."))
    register(Tool("ask_logs", logs, "A log message at each level."))
    register(
        ForwardedTool(
            "ask_raw_sample", raw_sample, "Ask, from a raw-result tool.", input_schema=prompt_schema
        )
    )

    async def touch(args: dict[str, Any], call: ToolCall) -> str:
        await hub.resource_updated(str(args["uri"]))
        return "touched"

    register(Tool("ask_touch", touch, "Say a resource changed.", input_schema={"type": "object"}))


@hookimpl
def hub_register_resources(register: RegisterResource) -> None:
    register(
        ResourceTemplate(
            "ask://items/{id}",
            "item",
            read_item,
            complete=complete,
            subscribe=subscribed,
            unsubscribe=unsubscribed,
        )
    )


@hookimpl
def hub_register_prompts(register: RegisterPrompt) -> None:
    async def render(arguments: dict[str, str]) -> str:
        return f"eat an {arguments.get('fruit')}"

    register(
        Prompt("ask_fruit", render, "A fruit.", [PromptArgument("fruit", "which", True)], complete=complete)
    )


__all__ = ["events", "types"]
