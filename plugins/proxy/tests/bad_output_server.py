"""A downstream server whose `count` tool breaks its own output schema (returns a string for an
integer), for the proxy's `validate_output` tests."""

from __future__ import annotations

import anyio
import mcp.types as types
from mcp.server import Server, ServerRequestContext
from mcp.server.stdio import stdio_server

TOOL = types.Tool(
    name="count",
    description="Returns {n}, but as a string",
    input_schema={"type": "object", "properties": {}},
    output_schema={"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]},
)


async def list_tools(
    ctx: ServerRequestContext, params: types.PaginatedRequestParams | None
) -> types.ListToolsResult:
    return types.ListToolsResult(tools=[TOOL])


async def call_tool(ctx: ServerRequestContext, params: types.CallToolRequestParams) -> types.CallToolResult:
    return types.CallToolResult(
        content=[types.TextContent(type="text", text='{"n": "three"}')], structured_content={"n": "three"}
    )


server = Server("bad-output", on_list_tools=list_tools, on_call_tool=call_tool)


async def main() -> None:
    async with stdio_server() as (read, write):
        await server.run(read, write, server.create_initialization_options())


if __name__ == "__main__":
    anyio.run(main)
