"""Capture the real tool lists (and instructions) of six everyday MCP servers into
bench/fixtures/servers.json, once, for `bench discovery` and its labelled requests.

    python3 -m venv /tmp/cap/venv && /tmp/cap/venv/bin/pip install mcp-server-git mcp-server-fetch mcp-server-time
    npm install --prefix /tmp/cap/npm @modelcontextprotocol/server-memory
    npm install --prefix /tmp/cap/npm2 @modelcontextprotocol/server-github @modelcontextprotocol/server-slack \
        @modelcontextprotocol/server-sequential-thinking @modelcontextprotocol/server-google-maps
    .venv/bin/python bench/capture_servers.py --venv /tmp/cap/venv --npm /tmp/cap/npm --extra /tmp/cap/npm2

filesystem and everything come from .cache/npm (the test suite's). The four `--extra` servers
(github, slack, sequential-thinking, google-maps: their lists need no account; dummy tokens are
given) go to servers_extra.json: with the six they make the ten of `bench discovery`. The installs are not kept:
only the captured lists are committed. Each server is asked as the hub asks it (the handshake
era, no client capabilities: server-everything then lists no sampling/elicitation/roots tools).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import anyio
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "fixtures" / "servers.json"
OUT_EXTRA = ROOT / "bench" / "fixtures" / "servers_extra.json"


def extra_servers(npm: Path) -> dict[str, StdioServerParameters]:
    def server(name: str, **env: str) -> StdioServerParameters:
        return StdioServerParameters(
            command=str(npm / "node_modules" / ".bin" / f"mcp-server-{name}"), env=env
        )

    return {
        "github": server("github", GITHUB_PERSONAL_ACCESS_TOKEN="dummy"),
        "slack": server("slack", SLACK_BOT_TOKEN="dummy", SLACK_TEAM_ID="T0"),
        "thinking": server("sequential-thinking"),
        "maps": server("google-maps", GOOGLE_MAPS_API_KEY="dummy"),
    }


def servers(venv: Path, npm: Path, scratch: Path) -> dict[str, StdioServerParameters]:
    bins = ROOT / ".cache" / "npm" / "node_modules" / ".bin"
    return {
        "filesystem": StdioServerParameters(command=str(bins / "mcp-server-filesystem"), args=[str(scratch)]),
        "everything": StdioServerParameters(command=str(bins / "mcp-server-everything"), args=["stdio"]),
        "memory": StdioServerParameters(
            command=str(npm / "node_modules" / ".bin" / "mcp-server-memory"),
            env={"MEMORY_FILE_PATH": str(scratch / "memory.jsonl")},
        ),
        "git": StdioServerParameters(command=str(venv / "bin" / "mcp-server-git")),
        "fetch": StdioServerParameters(command=str(venv / "bin" / "mcp-server-fetch")),
        "time": StdioServerParameters(command=str(venv / "bin" / "mcp-server-time")),
    }


async def capture(params: StdioServerParameters) -> dict[str, Any]:
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        init = await session.initialize()
        tools = (await session.list_tools()).tools
        return {
            "server_info": init.server_info.model_dump(mode="json", exclude_none=True),
            "instructions": init.instructions,
            "tools": [t.model_dump(mode="json", by_alias=True, exclude_none=True) for t in tools],
        }


async def capture_all(found: dict[str, StdioServerParameters], out: Path) -> None:
    captured: dict[str, Any] = {}
    for name, params in found.items():
        captured[name] = await capture(params)
        print(f"{name}: {len(captured[name]['tools'])} tools", file=sys.stderr)
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(captured, indent=1, ensure_ascii=False) + "\n")


async def main(venv: Path, npm: Path, extra: Path | None) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        await capture_all(servers(venv, npm, Path(scratch)), OUT)
    if extra is not None:
        await capture_all(extra_servers(extra), OUT_EXTRA)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--venv", type=Path, required=True)
    parser.add_argument("--npm", type=Path, required=True)
    parser.add_argument("--extra", type=Path, default=None)
    args = parser.parse_args()
    anyio.run(main, args.venv, args.npm, args.extra)
