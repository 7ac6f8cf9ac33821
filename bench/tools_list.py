"""`tools/list` of 500+ proxied tools, warm, against `mcp-hub` (npm) over the same ten servers, and
`tools/list` of the hub's own tools, in paired rounds.

Ten `many_tools_server.py` processes of 52 tools each (about 300 KB of tools/list). The hub runs
the proxy plugin over stdio (its usual transport) and is also measured over streamable HTTP;
mcp-hub serves only the legacy SSE transport, so it is measured on SSE (the comparison crosses
transports, as a user choosing between them would). mcp-hub is started offline (see peers.py).
Each side answers LISTS requests per round (raw JSON-RPC on an SDK `ClientSession`, so no client
result models); its figure is the median. The hub's own tools: the hub with every built-in plugin
and no servers, against `minimal_server.py` (one tool) as the floor of the same SDK client.

Targets (issue 15): proxied list at most 0.8x mcp-hub; the hub's own list at most 2 ms.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import anyio
from clients import http_session, hub_over_http, raw, sse_session, stdio_session, wait_for_tools
from mcp import ClientSession
from paired import Rounds, settle, summary
from peers import mcp_hub_server

HERE = Path(__file__).resolve().parent
SERVERS, TOOLS_EACH = 10, 52
ROUNDS = int(os.environ.get("BENCH_ROUNDS", 8))
LISTS = int(os.environ.get("BENCH_LISTS", 10))


def lister(session: ClientSession) -> Any:
    async def measure() -> float:
        times = []
        for _ in range(LISTS):
            started = time.perf_counter()
            await raw(session, "tools/list")
            times.append(time.perf_counter() - started)
        return statistics.median(times)

    return measure


async def run() -> dict[str, Any]:
    servers = {
        f"s{i}": {"command": sys.executable, "args": [str(HERE / "many_tools_server.py"), str(TOOLS_EACH)]}
        for i in range(SERVERS)
    }
    total = SERVERS * TOOLS_EACH
    result: dict[str, Any] = {"benchmark": "tools_list", "proxied_tools": total}
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp, "hub.toml")
        config.write_text(
            "".join(
                f'[servers.{name}]\ncommand = "{s["command"]}"\nargs = ["{s["args"][0]}", "{s["args"][1]}"]\neager = true\n'
                for name, s in servers.items()
            )
        )
        env = {"PATH": os.environ["PATH"], "HUB_STATE_DIR": tmp, "HUB_LOG_LEVEL": "warning", "HUB_SHARE": "0"}
        http_state = Path(tmp, "http")
        http_state.mkdir()
        async with AsyncExitStack() as stack:
            hub = await stdio_session(
                stack, sys.executable, ["-m", "hub", "--plugins", "proxy", "--config", str(config)], env
            )
            await wait_for_tools(hub, total)
            sides = {"hub_stdio": lister(hub)}
            url = await stack.enter_async_context(hub_over_http(config, http_state, "proxy"))
            http = await http_session(stack, url)
            await wait_for_tools(http, total)
            sides["hub_http"] = lister(http)
            peer_url = await stack.enter_async_context(mcp_hub_server(servers, Path(tmp, "mcp-hub")))
            if peer_url is not None:
                peer = await sse_session(stack, peer_url)
                await wait_for_tools(peer, total)
                sides["mcp_hub_sse"] = lister(peer)
            size = len(str(await raw(hub, "tools/list")))
            result["settled_s"] = await settle()  # after starting 30 servers
            proxied = Rounds()
            await proxied.run(ROUNDS, sides)
        checks: dict[str, Any] = {}
        if "mcp_hub_sse" in proxied.values:
            checks["hub_stdio_vs_mcp_hub_sse"] = (proxied.ratio("hub_stdio", "mcp_hub_sse"), 0.8)
            checks["hub_http_vs_mcp_hub_sse"] = (proxied.ratio("hub_http", "mcp_hub_sse"), 0.8)
        result["proxied"] = {
            "list_chars": size,
            "ms": {name: proxied.side(name) for name in proxied.values},
            "mcp_hub": "measured over SSE" if peer_url is not None else "not installed (see bench/peers.py)",
            **summary(proxied, checks),
        }

        Path(tmp, "empty.toml").write_text("")
        async with AsyncExitStack() as stack:
            hub = await stdio_session(
                stack, sys.executable, ["-m", "hub", "--config", str(Path(tmp, "empty.toml"))], env
            )
            floor = await stdio_session(stack, sys.executable, [str(HERE / "minimal_server.py")])
            count = len(await wait_for_tools(hub, 1))
            await settle()
            own = Rounds()
            await own.run(ROUNDS, {"hub": lister(hub), "minimal_server": lister(floor)})
        figure = own.side("hub")
        result["own_tools"] = {
            "tools": count,
            "ms": {name: own.side(name) for name in own.values},
            "ratio_to_minimal_server": own.ratio("hub", "minimal_server"),
            **summary(own, {"hub_ms": (figure, 2.0)}),
        }
    return result


def main() -> dict[str, Any]:
    return anyio.run(run)


if __name__ == "__main__":
    import json

    sys.path.insert(0, str(HERE))
    print(json.dumps(main(), indent=2))
