"""A downstream MCP server with many tools (default 52), each with a description and a small
input schema, about 570 bytes per tool in `tools/list`: ten of them make the 524-tool, ~300 KB
list of the `tools_list` benchmark. `echo` answers `tools/call` for any of its tools.

Run as ``python many_tools_server.py [N]``; it speaks MCP over stdio (the low-level SDK server).
"""

from __future__ import annotations

import sys

import anyio
import mcp.types as types
from mcp.server import Server, ServerRequestContext
from mcp.server.stdio import stdio_server

COUNT = int(sys.argv[1]) if len(sys.argv) > 1 else 52
TOOLS = [
    types.Tool(
        name=f"tool_{i:03d}",
        description=(
            f"Tool number {i}: returns its text argument unchanged. It stands for a typical tool "
            "of a typical server, described in a sentence or two so that a model can pick it."
        ),
        input_schema={
            "type": "object",
            "properties": {
                "text": {"type": "string", "description": "The text to return."},
                "repeat": {"type": "integer", "description": "How many times (default 1).", "minimum": 1},
                "upper": {"type": "boolean", "description": "Upper-case the text first."},
            },
            "required": ["text"],
        },
    )
    for i in range(COUNT)
]


async def list_tools(
    ctx: ServerRequestContext, params: types.PaginatedRequestParams | None
) -> types.ListToolsResult:
    return types.ListToolsResult(tools=TOOLS)


async def call_tool(ctx: ServerRequestContext, params: types.CallToolRequestParams) -> types.CallToolResult:
    text = str((params.arguments or {}).get("text", ""))
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)])


server = Server("many-tools", on_list_tools=list_tools, on_call_tool=call_tool)


async def main() -> None:
    async with stdio_server() as (read, write):
        await server.run(read, write, server.create_initialization_options())


if __name__ == "__main__":
    anyio.run(main)
