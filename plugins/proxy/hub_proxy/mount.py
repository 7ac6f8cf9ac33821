"""Serving one downstream server's items through the hub: what is mounted (`Mounted`), and the
hub tool, resource and prompt that stand for each downstream one (`tool_for`, `resource_for`,
`prompt_for`), each forwarding to the server through the connection cache."""

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

Answer = TypeVar("Answer")


@dataclass
class Mounted:
    """What the hub serves for one server: hub name or URI -> downstream name or URI."""

    tools: dict[str, str] = field(default_factory=dict)
    resources: list[str] = field(default_factory=list)
    prompts: dict[str, str] = field(default_factory=dict)


def tool_for(hub: PluginContext, server: str, tool: types.Tool, hub_name: str) -> Tool:
    """The hub tool `hub_name` that calls `server`'s `tool`."""
    connections = hub.connections

    async def call_downstream(arguments: dict[str, Any], call: ToolCall) -> RawResult:
        # Raw forwarding: JSON-RPC in, the downstream's result dict out, no SDK models per call.
        try:
            return RawResult(
                await connections.call_tool(server, tool.name, arguments, progress=call.report_progress)
            )
        except (MCPError, HubError) as exc:  # a closed connection is marked dead by the cache itself
            raise ToolError(failure_message(server, tool.name, exc)) from None

    description = f"[{server}] {tool.description or ''}".strip()
    return ForwardedTool(
        hub_name,
        call_downstream,
        description,
        input_schema=dict(tool.input_schema),
        output_schema=tool.output_schema,
        title=tool.title,
        annotations=tool.annotations,
        group=server,
    )


async def _downstream(
    hub: PluginContext, server: str, what: str, request: Callable[[Any], Awaitable[Answer]]
) -> Answer:
    """Run `request(session)` on `server`, turning its failures into messages for the caller."""
    try:
        async with hub.connections.session(server) as session:
            return await request(session)
    except (MCPError, HubError) as exc:  # a closed connection is marked dead by the cache itself
        raise ToolError(failure_message(server, what, exc)) from None


def resource_for(
    hub: PluginContext, server: str, resource: types.Resource | types.ResourceTemplate
) -> Resource | ResourceTemplate:
    """The hub resource (or template) that reads `server`'s."""
    description = f"[{server}] {resource.description or ''}".strip()

    async def read_uri(uri: str) -> types.ReadResourceResult:
        return await _downstream(hub, server, f"reading {uri}", lambda session: session.read_resource(uri))

    if isinstance(resource, types.Resource):
        uri = str(resource.uri)
        return Resource(
            uri, resource.name, lambda: read_uri(uri), description, resource.mime_type, resource.title
        )
    template = ResourceTemplate(
        resource.uri_template,
        resource.name,
        lambda params: read_uri(template.expand(params)),
        description,
        resource.mime_type,
        resource.title,
    )
    return template


def prompt_for(hub: PluginContext, server: str, prompt: types.Prompt, hub_name: str) -> Prompt:
    """The hub prompt `hub_name` that renders `server`'s `prompt`."""

    async def render(arguments: dict[str, str]) -> types.GetPromptResult:
        return await _downstream(
            hub, server, f"prompt {prompt.name}", lambda session: session.get_prompt(prompt.name, arguments)
        )

    return Prompt(
        hub_name,
        render,
        f"[{server}] {prompt.description or ''}".strip(),
        [PromptArgument(a.name, a.description or "", bool(a.required)) for a in prompt.arguments or []],
        prompt.title,
    )
