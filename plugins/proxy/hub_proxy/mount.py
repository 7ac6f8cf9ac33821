"""Serving one downstream server's items through the hub: what is mounted (`Mounted`), and the
hub tool, resource and prompt that stand for each downstream one (`tool_for`, `resource_for`,
`prompt_for`), each forwarding to the server through the connection cache (what the server asks of its client
during a call, completion and subscriptions through `relay`).

Each is built from the item as the server listed it (wire JSON) and listed by the hub as that
same JSON (`definition`), renamed and with its server named in its description: after a tool's
(what the tool does comes first, for the model and for tool searches: ``Shows the commit logs
[git]``), before a resource's or a prompt's (``[git] ...``). Every field passes through, those the
SDK does not model too (`_meta`, `icons`, `execution`, ...). An item the SDK cannot read raises
`ValueError` (pydantic's), which the caller reports."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import mcp.types as types
from mcp.shared.exceptions import MCPError

from hub import (
    ForwardedTool,
    HubError,
    PluginContext,
    Prompt,
    PromptArgument,
    RawResult,
    Resource,
    ResourceTemplate,
    Tool,
    ToolCall,
    ToolError,
    failure_message,
)

from . import relay

Answer = TypeVar("Answer")


@dataclass
class Mounted:
    """What the hub serves for one server: hub name or URI -> downstream name or URI."""

    tools: dict[str, str] = field(default_factory=dict)
    resources: list[str] = field(default_factory=list)
    prompts: dict[str, str] = field(default_factory=dict)


def _described(server: str, item: dict[str, Any], *, server_last: bool = False) -> str:
    description = item.get("description")
    text = description if isinstance(description, str) else ""
    return f"{text} [{server}]".strip() if server_last else f"[{server}] {text}".strip()


def tool_for(hub: PluginContext, server: str, listed: dict[str, Any], hub_name: str) -> Tool:
    """The hub tool `hub_name` that calls `server`'s tool, as `server` listed it."""
    tool = types.Tool.model_validate(listed)
    connections = hub.connections

    async def call_downstream(arguments: dict[str, Any], call: ToolCall) -> RawResult:
        # Raw forwarding: JSON-RPC in, the downstream's result dict out, no SDK models per call.
        try:
            return RawResult(
                await connections.call_tool(
                    server,
                    tool.name,
                    arguments,
                    progress=call.report_progress,
                    caller=call,
                    elicit_url=_sign_in_asker(call),
                )
            )
        except (MCPError, HubError) as exc:  # a closed connection is marked dead by the cache itself
            raise ToolError(failure_message(server, tool.name, exc)) from None

    description = _described(server, listed, server_last=True)  # what the tool does first
    return ForwardedTool(
        hub_name,
        call_downstream,
        description,
        input_schema=dict(tool.input_schema),
        output_schema=tool.output_schema,
        title=tool.title,
        annotations=tool.annotations,
        group=server,
        definition={**listed, "name": hub_name, "description": description},
        # A server waiting for a sign-in: the call goes where it can ask the client to sign in.
        needs_client=lambda: connections.needs_sign_in(server),
    )


def _sign_in_asker(call: ToolCall) -> Callable[[str, str], Awaitable[str | None]]:
    """`elicit_url(message, url)` for the connection cache: asks `call`'s client to open a
    remote server's sign-in page (URL-mode elicitation); its answer (``accept``, ``decline``,
    ``cancel``), or None when the client cannot be asked."""

    async def ask(message: str, url: str) -> str | None:
        if not call.can_ask("elicitation/create", {"mode": "url"}):
            return None
        try:
            answer = await call.elicit_url(message, url)
        except ToolError:
            return None
        return str(answer.action)

    return ask


async def _downstream(
    hub: PluginContext, server: str, what: str, request: Callable[[Any], Awaitable[Answer]]
) -> Answer:
    """Run `request(session)` on `server`, turning its failures into messages for the caller."""
    try:
        async with hub.connections.session(server) as session:
            return await request(session)
    except (MCPError, HubError) as exc:  # a closed connection is marked dead by the cache itself
        raise ToolError(failure_message(server, what, exc)) from None


def resource_for(hub: PluginContext, server: str, listed: dict[str, Any]) -> Resource | ResourceTemplate:
    """The hub resource (or template, for an item with a `uriTemplate`) that reads `server`'s."""
    description = _described(server, listed)
    definition = {**listed, "description": description}

    async def read_uri(uri: str) -> types.ReadResourceResult:
        return await _downstream(hub, server, f"reading {uri}", lambda session: session.read_resource(uri))

    subscribe, unsubscribe = relay.watchers(hub, server)
    if "uriTemplate" not in listed:
        resource = types.Resource.model_validate(listed)
        uri = str(resource.uri)
        return Resource(
            uri,
            resource.name,
            lambda: read_uri(uri),
            description,
            resource.mime_type,
            resource.title,
            subscribe=subscribe,
            unsubscribe=unsubscribe,
            definition=definition,
        )
    found = types.ResourceTemplate.model_validate(listed)
    reference = types.ResourceTemplateReference(type="ref/resource", uri=found.uri_template)
    template = ResourceTemplate(
        found.uri_template,
        found.name,
        lambda params: read_uri(template.expand(params)),
        description,
        found.mime_type,
        found.title,
        complete=relay.completer(hub, server, reference),
        subscribe=subscribe,
        unsubscribe=unsubscribe,
        definition=definition,
    )
    return template


def prompt_for(hub: PluginContext, server: str, listed: dict[str, Any], hub_name: str) -> Prompt:
    """The hub prompt `hub_name` that renders `server`'s prompt, as `server` listed it."""
    prompt = types.Prompt.model_validate(listed)

    async def render(arguments: dict[str, str]) -> types.GetPromptResult:
        return await _downstream(
            hub, server, f"prompt {prompt.name}", lambda session: session.get_prompt(prompt.name, arguments)
        )

    description = _described(server, listed)
    return Prompt(
        hub_name,
        render,
        description,
        [PromptArgument(a.name, a.description or "", bool(a.required)) for a in prompt.arguments or []],
        prompt.title,
        complete=relay.completer(hub, server, types.PromptReference(type="ref/prompt", name=prompt.name)),
        definition={**listed, "name": hub_name, "description": description},
    )
