"""A stdio MCP server that serves a captured server's tool list (bench/fixtures/servers.json)
and its instructions, standing in for a server the benchmarks cannot run: every call answers
``called NAME`` as text.

    python bench/replay_server.py SERVER [FIXTURE]        # SERVER: a key of the fixture
    REPLAY_COPIES=N                                          # serve N copies (name_2, name_3...)
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import anyio
import mcp.types as types
from mcp.server import Server, ServerRequestContext
from mcp.server.stdio import stdio_server

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "servers.json"


def load(server: str, fixture: Path, copies: int = 1) -> tuple[list[types.Tool], str | None]:
    captured = json.loads(fixture.read_text())[server]
    tools = [types.Tool.model_validate(t) for t in captured["tools"]]
    extra = [t.model_copy(update={"name": f"{t.name}_{n}"}) for n in range(2, copies + 1) for t in tools]
    return tools + extra, captured.get("instructions")


def build(server: str, fixture: Path = FIXTURE, copies: int = 1) -> Server[Any]:
    tools, instructions = load(server, fixture, copies)

    async def list_tools(
        ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        return types.ListToolsResult(tools=tools)

    async def call_tool(
        ctx: ServerRequestContext[Any, Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        return types.CallToolResult(content=[types.TextContent(type="text", text=f"called {params.name}")])

    return Server(
        f"replay-{server}", instructions=instructions, on_list_tools=list_tools, on_call_tool=call_tool
    )


async def main() -> None:
    fixture = Path(sys.argv[2]) if len(sys.argv) > 2 else FIXTURE
    server = build(sys.argv[1], fixture, int(os.environ.get("REPLAY_COPIES", "1")))
    async with stdio_server() as (read, write):
        await server.run(read, write, server.create_initialization_options())


if __name__ == "__main__":
    anyio.run(main)
