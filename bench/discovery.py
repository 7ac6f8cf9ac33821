"""`bench discovery`: what `[tools] expose` saves the model, and how well `find_tools` finds.

- **MCP bytes per turn**: the real Claude Code CLI answers one `-p` prompt (fake Messages API)
  with the hub (every built-in plugin, plus 6 or 10 downstream servers) in each mode (`all`,
  `search`, `auto`), with Claude Code's tool search off (`ENABLE_TOOL_SEARCH=false`) and on (its
  default); the figure is the size of the first Messages request minus that of the same run with
  no MCP server (so tool definitions, deferred names and instructions all count). The servers
  are `replay_server.py` serving the tool lists captured from the real servers
  (fixtures/servers.json: filesystem, everything, memory, git, fetch, time; servers_extra.json:
  github, slack, sequential-thinking, google-maps). Also each mode's `tools/list` size.
- **recall@1 / recall@3** of `find_tools` over fixtures/discovery_queries.json (requests a model
  would make, each with the tools that answer it), through a hub's real `find_tools`.
- **find_tools latency** with about 1,000 tools (the ten servers' lists served 11 times over),
  median and p95 of calls through an in-process MCP client, and of the index's search alone.

Targets (issue 28): search list <= 4 KB with every plugin and 10 servers; recall@3 >= 0.9;
find_tools <= 20 ms at 1,000 tools.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT / "tests" / "peers"))
from fake_anthropic import FakeAnthropic  # noqa: E402

from hub.config.settings import HubConfig  # noqa: E402
from hub.testing import make_config, running_hub  # noqa: E402

CLAUDE = ROOT / ".cache" / "npm" / "node_modules" / ".bin" / "claude"
FIXTURES = HERE / "fixtures"
SIX = ["filesystem", "everything", "memory", "git", "fetch", "time"]
EXTRA = ["github", "slack", "thinking", "maps"]
PLUGINS = ["batch", "batchit", "pool", "proxy"]
CLI_FLAGS = ["--output-format", "json", "--model", "claude-sonnet-4-5"]


def server_table(names: list[str], copies: int = 1) -> dict[str, Any]:
    """`[servers]` of replay servers for `names` (each from the fixture that has it)."""
    tables = {}
    for name in names:
        fixture = FIXTURES / ("servers.json" if name in SIX else "servers_extra.json")
        tables[name] = {
            "command": sys.executable,
            "args": [str(HERE / "replay_server.py"), name, str(fixture)],
            "env": {"REPLAY_COPIES": str(copies)},
        }
    return tables


def hub_config(work: Path, servers: list[str], expose: str, copies: int = 1) -> HubConfig:
    return make_config(
        work,
        plugins={"enabled": PLUGINS, "pool": {"claude_command": str(CLAUDE)}},
        servers=server_table(servers, copies),
        tools={"expose": expose},
    )


async def _mounted(hub: Any, count: int) -> None:
    """Wait until the proxy serves `count` downstream tools (it learns each list in the background)."""
    with anyio.fail_after(120):
        while sum(1 for t in hub.registry.tools.values() if t.group) < count:
            await anyio.sleep(0.05)


def _downstream_count(servers: list[str], copies: int = 1) -> int:
    total = 0
    for name in servers:
        fixture = FIXTURES / ("servers.json" if name in SIX else "servers_extra.json")
        total += len(json.loads(fixture.read_text())[name]["tools"]) * copies
    return total


# -- recall -------------------------------------------------------------------------------------


async def recall(work: Path) -> dict[str, Any]:
    queries = json.loads((FIXTURES / "discovery_queries.json").read_text())["queries"]
    hits1 = hits3 = 0
    misses = []
    async with running_hub(hub_config(work, SIX, "search")) as (hub, client):
        await _mounted(hub, _downstream_count(SIX))
        for item in queries:
            result = await client.call_tool("find_tools", {"query": item["q"], "limit": 3})
            names = [t["name"] for t in (result.structured_content or {})["tools"]]
            hits1 += bool(names[:1] and names[0] in item["expect"])
            top3 = any(name in item["expect"] for name in names[:3])
            hits3 += top3
            if not top3:
                misses.append({"q": item["q"], "expected": item["expect"], "got": names})
        tools = len(hub.registry.tools) - 2
    return {
        "queries": len(queries),
        "tools": tools,
        "recall_at_1": round(hits1 / len(queries), 3),
        "recall_at_3": round(hits3 / len(queries), 3),
        "misses_at_3": misses,
    }


# -- latency ------------------------------------------------------------------------------------


async def latency(work: Path, copies: int = 11, calls: int = 60) -> dict[str, Any]:
    queries = [q["q"] for q in json.loads((FIXTURES / "discovery_queries.json").read_text())["queries"]]
    async with running_hub(hub_config(work, SIX + EXTRA, "search", copies)) as (hub, client):
        await _mounted(hub, _downstream_count(SIX + EXTRA, copies))
        await client.call_tool("find_tools", {"query": "warm the index"})
        timings, index_only = [], []
        for n in range(calls):
            query = queries[n % len(queries)]
            started = time.perf_counter()
            await client.call_tool("find_tools", {"query": query})
            timings.append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            hub.server.discovery.index.search(query, 5)
            index_only.append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        hub.server.discovery._indexed = False
        hub.server.discovery._indexed_tools()
        rebuild_ms = (time.perf_counter() - started) * 1000
        tools = len(hub.registry.tools) - 2
    return {
        "tools": tools,
        "calls": calls,
        "find_tools_ms_median": round(statistics.median(timings), 2),
        "find_tools_ms_p95": round(sorted(timings)[int(len(timings) * 0.95) - 1], 2),
        "index_search_ms_median": round(statistics.median(index_only), 3),
        "index_rebuild_ms": round(rebuild_ms, 1),
    }


# -- bytes per turn through Claude Code -------------------------------------------------------


async def list_bytes(work: Path, servers: list[str], expose: str) -> int:
    """The size of the hub's tools/list answer (compact JSON) in a mode."""
    async with running_hub(hub_config(work, servers, expose)) as (hub, client):
        await _mounted(hub, _downstream_count(servers))
        tools = (await client.list_tools()).tools
        dumped = [t.model_dump(by_alias=True, mode="json", exclude_none=True) for t in tools]
        return len(json.dumps({"tools": dumped}, separators=(",", ":")).encode())


def claude_request(work: Path, api: FakeAnthropic, mcp_config: Path, search: bool) -> dict[str, Any]:
    """The first Messages request the CLI sends for one prompt with `mcp_config`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLAUDE")}
    env.update(
        HOME=str(work / "home"),
        ANTHROPIC_BASE_URL=api.url,
        ANTHROPIC_API_KEY=api.api_key,
        CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1",
        DISABLE_TELEMETRY="1",
        ENABLE_TOOL_SEARCH="true" if search else "false",
        HUB_SHARE="0",
    )
    before = len(api.messages)
    done = subprocess.run(
        [str(CLAUDE), "-p", "hello", "--mcp-config", str(mcp_config), "--strict-mcp-config", *CLI_FLAGS],
        capture_output=True,
        text=True,
        env=env,
        cwd=work,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return api.messages[before]


def _mcp_parts(request: dict[str, Any]) -> dict[str, int]:
    tools = [t for t in request.get("tools", []) if t.get("name", "").startswith("mcp__")]
    text = json.dumps(request.get("messages")) + json.dumps(request.get("system"))
    return {
        "tools_in_full": len(tools),
        "tool_definition_bytes": sum(len(json.dumps(t)) for t in tools),
        "names_in_text": text.count("mcp__hub__"),
    }


def _hub_entry(work: Path, servers: list[str], expose: str) -> dict[str, Any]:
    toml = work / f"hub-{expose}-{len(servers)}.toml"
    lines = [f'[plugins]\nenabled = {json.dumps(PLUGINS)}\n[plugins.pool]\nclaude_command = "{CLAUDE}"\n']
    lines.append(f'[tools]\nexpose = "{expose}"\n')
    for name, table in server_table(servers).items():
        lines.append(
            f'[servers.{name}]\ncommand = "{table["command"]}"\nargs = {json.dumps(table["args"])}\n'
        )
    toml.write_text("\n".join(lines))
    return {
        "type": "stdio",
        "command": str(Path(sys.executable).parent / "hub"),
        "args": ["serve", "--no-share"],
        "env": {"HUB_CONFIG": str(toml), "HUB_STATE_DIR": str(work / "state"), "HUB_LOG_LEVEL": "warning"},
    }


async def learn(work: Path, servers: list[str]) -> None:
    """Have the hub learn (and keep in the state directory) every server's list, as a first
    session would, so each measured run lists them all from its first answer."""
    async with running_hub(hub_config(work, servers, "all")) as (hub, _):
        await _mounted(hub, _downstream_count(servers))


def turn_bytes(work: Path) -> dict[str, Any]:
    (work / "home").mkdir(parents=True, exist_ok=True)
    (work / "none.json").write_text(json.dumps({"mcpServers": {}}))
    rows: dict[str, Any] = {}
    with FakeAnthropic() as api:
        for search in (False, True):
            base = len(json.dumps(claude_request(work, api, work / "none.json", search)))
            for servers in (SIX, SIX + EXTRA):
                anyio.run(learn, work, servers)
                for expose in ("all", "search", "auto"):
                    config = work / f"{expose}-{len(servers)}.json"
                    config.write_text(json.dumps({"mcpServers": {"hub": _hub_entry(work, servers, expose)}}))
                    request = claude_request(work, api, config, search)
                    key = f"{len(servers)} servers, {expose}, tool search {'on' if search else 'off'}"
                    rows[key] = {"mcp_bytes_per_turn": len(json.dumps(request)) - base, **_mcp_parts(request)}
    return rows


def main() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)

        async def measured() -> dict[str, Any]:
            sizes = {}
            for servers in (SIX, SIX + EXTRA):
                for expose in ("all", "search"):
                    sizes[f"{len(servers)} servers, {expose}"] = await list_bytes(
                        work / f"l-{expose}-{len(servers)}", servers, expose
                    )
            from hub.server import tool_index

            synonyms, tool_index.SYNONYMS = tool_index.SYNONYMS, {}
            try:  # what the words alone find, without the query expansion
                bare = await recall(work / "recall-bare")
            finally:
                tool_index.SYNONYMS = synonyms
            return {
                "tools_list_bytes": sizes,
                "recall": await recall(work / "recall"),
                "recall_without_synonyms": {k: v for k, v in bare.items() if k != "misses_at_3"},
                "latency": await latency(work / "latency"),
            }

        result = anyio.run(measured)
        result["claude_code"] = turn_bytes(work / "claude")
    search_list = result["tools_list_bytes"]["10 servers, search"]
    result["verdicts"] = {
        "search list <= 4 KB (every plugin, 10 servers)": search_list <= 4096,
        "recall@3 >= 0.9": result["recall"]["recall_at_3"] >= 0.9,
        "find_tools <= 20 ms at 1,000 tools": result["latency"]["find_tools_ms_median"] <= 20,
    }
    return result


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
