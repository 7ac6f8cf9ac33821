"""proxy: serve the tools of every `[servers.NAME]` through the hub as ``NAME__tool``.

Per server (in its `[servers.NAME]` table): `expose = false` hides it, `include` / `exclude` pick
tools, `prefix` renames (the default prefix is NAME), `eager = true` starts it with the hub.

A server's tool list is kept in the store, so a lazy server's tools are listed without starting
it: it starts on the first call. A server never seen before is started once in the background
to learn its tools (and closed again after its idle timeout). A downstream `tools/list_changed`
refreshes the list, and the hub's clients get `tools/list_changed` in turn. Progress
notifications are relayed to the caller, and cancelling a call cancels it downstream.
"""

from __future__ import annotations

import json
from typing import Any

import mcp.types as types
from mcp.shared.exceptions import MCPError
from pydantic import BaseModel, ConfigDict, Field

from hub import Resource, Tool, ToolCall, ToolError, hookimpl
from hub.config import ServerConfig
from hub.connections import ServerUnavailable
from hub.host import PluginContext
from hub.registry import CLAUDE_PREFIX, RegistrationError

MIGRATIONS = [
    """
    CREATE TABLE proxy_tools (
        server TEXT PRIMARY KEY,
        tools_json TEXT NOT NULL,
        updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
    );
    """,
]


class Settings(BaseModel):
    """`[plugins.proxy]`."""

    model_config = ConfigDict(extra="forbid")
    separator: str = Field(
        default="__", pattern=r"^[A-Za-z0-9_-]{1,3}$", description="Between prefix and tool."
    )


class Proxy:
    """The proxy's state for one hub run."""

    def __init__(self, hub: PluginContext) -> None:
        self.hub = hub
        settings = hub.config
        assert isinstance(settings, Settings)
        self.separator = settings.separator
        self.servers: dict[str, ServerConfig] = {n: c for n, c in hub.settings.servers.items() if c.expose}
        self.mounted: dict[str, dict[str, str]] = {
            name: {} for name in self.servers
        }  # server -> hub name -> tool
        self.problems: dict[str, list[str]] = {name: [] for name in self.servers}
        self.known: dict[str, list[types.Tool]] = {}

    # -- tool lists --------------------------------------------------------------------------

    async def load_cached(self) -> None:
        for row in await self.hub.store.fetchall("SELECT server, tools_json FROM proxy_tools"):
            if row["server"] in self.servers:
                self.known[row["server"]] = [
                    types.Tool.model_validate(t) for t in json.loads(row["tools_json"])
                ]

    async def refresh(self, server: str) -> None:
        """Ask `server` for its tools, remember them, and serve the new list."""
        try:
            async with self.hub.connections.session(server) as session:
                tools: list[types.Tool] = []
                cursor = None
                while True:
                    page = await session.list_tools(
                        params=types.PaginatedRequestParams(cursor=cursor) if cursor else None
                    )
                    tools.extend(page.tools)
                    cursor = page.next_cursor
                    if not cursor:
                        break
        except (ServerUnavailable, MCPError) as exc:
            self.problems[server] = [f"could not list tools: {exc}"]
            self.hub.log.warning("could not list a downstream server's tools", server=server, error=str(exc))
            return
        self.known[server] = tools
        dumped = json.dumps([t.model_dump(mode="json", by_alias=True, exclude_none=True) for t in tools])
        await self.hub.store.execute(
            "INSERT INTO proxy_tools (server, tools_json) VALUES (?, ?) ON CONFLICT (server) DO UPDATE "
            "SET tools_json = excluded.tools_json, updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')",
            (server, dumped),
        )
        self.mount(server)

    def selected(self, server: str) -> list[types.Tool]:
        config = self.servers[server]
        tools = self.known.get(server, [])
        if config.include is not None:
            tools = [t for t in tools if t.name in config.include]
        return [t for t in tools if t.name not in config.exclude]

    def mount(self, server: str) -> None:
        """Serve `server`'s selected tools, replacing what was served for it before."""
        for hub_name in self.mounted[server]:
            self.hub.remove_tool(hub_name)
        self.mounted[server] = {}
        config = self.servers[server]
        prefix = config.prefix or server
        problems: list[str] = []
        known_names = {t.name for t in self.known.get(server, [])}
        for missing in sorted(set(config.include or []) - known_names):
            problems.append(f"include names {missing!r}, which the server does not have")
        for tool in self.selected(server):
            hub_name = f"{prefix}{self.separator}{tool.name}"
            if len(CLAUDE_PREFIX) + len(hub_name) > 64:
                problems.append(
                    f"{hub_name!r} is {len(CLAUDE_PREFIX) + len(hub_name)} characters with {CLAUDE_PREFIX!r}, "
                    f"over Claude's 64; set a shorter prefix in [servers.{server}]"
                )
            try:
                self.hub.add_tool(self.tool_for(server, tool, hub_name))
            except RegistrationError as exc:
                problems.append(f"{exc}; set prefix in [servers.{server}] to rename")
                continue
            self.mounted[server][hub_name] = tool.name
        self.problems[server] = problems
        for problem in problems:
            self.hub.log.warning("proxy problem", server=server, problem=problem)

    # -- calls -------------------------------------------------------------------------------

    def tool_for(self, server: str, tool: types.Tool, hub_name: str) -> Tool:
        async def call_downstream(arguments: dict[str, Any], call: ToolCall) -> types.CallToolResult:
            try:
                async with self.hub.connections.session(server) as session:
                    try:
                        return await session.call_tool(
                            tool.name, arguments, progress_callback=call.report_progress
                        )
                    except MCPError as exc:
                        if exc.code == types.CONNECTION_CLOSED:
                            self.hub.connections.mark_dead(server, session)
                            raise ToolError(
                                f"server {server!r} died during {tool.name}; it is restarted on the next call"
                            ) from None
                        raise ToolError(f"{server} {tool.name}: {exc.message}") from None
            except ServerUnavailable as exc:
                raise ToolError(str(exc)) from None

        description = f"[{server}] {tool.description or ''}".strip()
        return Tool(
            hub_name,
            call_downstream,
            description,
            input_schema=dict(tool.input_schema),
            output_schema=tool.output_schema,
            title=tool.title,
            annotations=tool.annotations,
        )

    async def on_message(self, server: str, message: Any) -> None:
        if server in self.servers and isinstance(message, types.ToolListChangedNotification):
            self.hub.log.info("downstream tools changed; refreshing", server=server)
            self.hub.start_soon(self.refresh, server, name=f"refresh {server}")

    async def describe(self) -> dict[str, Any]:
        status = self.hub.connections.status()
        return {
            name: {
                "state": status[name]["state"],
                "last_error": status[name]["last_error"],
                "tools": sorted(self.mounted[name]),
                "problems": self.problems[name],
            }
            for name in self.servers
        }


def _proxy(hub: PluginContext) -> Proxy:
    proxy = hub.state.get("proxy")
    assert isinstance(proxy, Proxy), "hub_startup did not run"
    return proxy


@hookimpl
def hub_config_model() -> type[BaseModel]:
    return Settings


@hookimpl
def hub_startup(hub: PluginContext) -> Any:
    async def start() -> None:
        await hub.store.migrate("proxy", MIGRATIONS)
        proxy = hub.state["proxy"] = Proxy(hub)
        await proxy.load_cached()
        hub.on_downstream_message(proxy.on_message)
        for name, config in proxy.servers.items():
            if config.eager or name not in proxy.known:
                hub.start_soon(proxy.refresh, name, name=f"refresh {name}")

    return start


@hookimpl
def hub_register_tools(register: Any, hub: PluginContext) -> None:
    proxy = _proxy(hub)
    for server in proxy.servers:
        if server in proxy.known:
            proxy.mount(server)


@hookimpl
def hub_register_resources(register: Any, hub: PluginContext) -> None:
    register(
        Resource(
            "proxy://servers",
            "servers",
            _proxy(hub).describe,
            "Each proxied server: state, last error, tools served, naming problems.",
        )
    )
