"""proxy: serve the tools, resources and prompts of every `[servers.NAME]` through the hub.

Tools and prompts are served as ``NAME__tool`` (the separator is `[plugins.proxy] separator`);
resources and resource templates keep their URIs, so links between them still work. Per server
(in its `[servers.NAME]` table): `expose = false` hides it, `include` / `exclude` pick tools,
`prefix` renames (the default prefix is NAME), `eager = true` starts it with the hub and has the
connection cache restart it when it dies.

A server's lists are kept in the store, so a lazy server is listed without starting it: it
starts on the first call. A server never seen before is started once in the background to learn
its lists (and closed again after its idle timeout). A downstream `list_changed` refreshes the
lists, and the hub's clients get `list_changed` in turn. Progress notifications are relayed to
the caller, and cancelling a call cancels it downstream.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import mcp.types as types
from mcp.shared.exceptions import MCPError
from pydantic import BaseModel, ConfigDict, Field

from hub import (
    CLAUDE_PREFIX,
    ForwardedTool,
    HubError,
    Lifecycle,
    Plugin,
    PluginContext,
    Prompt,
    PromptArgument,
    RawResult,
    RegisterResource,
    RegistrationError,
    Resource,
    ResourceTemplate,
    ServerUnavailable,
    Tool,
    ToolCall,
    ToolError,
    failure_message,
    hookimpl,
)

MIGRATIONS = [
    """
    CREATE TABLE proxy_tools (
        server TEXT PRIMARY KEY,
        tools_json TEXT NOT NULL,
        updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
    );
    """,
    """
    CREATE TABLE proxy_lists (
        server TEXT PRIMARY KEY,
        lists_json TEXT NOT NULL,
        updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
    );
    INSERT INTO proxy_lists (server, lists_json, updated_at)
        SELECT server, json_object('tools', json(tools_json)), updated_at FROM proxy_tools;
    DROP TABLE proxy_tools;
    """,
]
Answer = TypeVar("Answer")


@dataclass
class Lists:
    """What a downstream server offers."""

    tools: list[types.Tool] = field(default_factory=list)
    resources: list[types.Resource] = field(default_factory=list)
    templates: list[types.ResourceTemplate] = field(default_factory=list)
    prompts: list[types.Prompt] = field(default_factory=list)

    def dump(self) -> str:
        def items(values: list[Any]) -> list[Any]:
            return [v.model_dump(mode="json", by_alias=True, exclude_none=True) for v in values]

        return json.dumps(
            {
                "tools": items(self.tools),
                "resources": items(self.resources),
                "templates": items(self.templates),
                "prompts": items(self.prompts),
            }
        )

    @classmethod
    def load(cls, text: str) -> Lists:
        data = json.loads(text)
        return cls(
            tools=[types.Tool.model_validate(t) for t in data.get("tools", [])],
            resources=[types.Resource.model_validate(r) for r in data.get("resources", [])],
            templates=[types.ResourceTemplate.model_validate(t) for t in data.get("templates", [])],
            prompts=[types.Prompt.model_validate(p) for p in data.get("prompts", [])],
        )


async def _all_pages(fetch: Callable[..., Awaitable[Any]], attribute: str) -> list[Any]:
    """Every item of a paginated list request (`fetch` is e.g. `session.list_tools`)."""
    items: list[Any] = []
    cursor: str | None = None
    while True:
        page = await fetch(params=types.PaginatedRequestParams(cursor=cursor) if cursor else None)
        items.extend(getattr(page, attribute))
        cursor = page.next_cursor
        if not cursor:
            return items


@dataclass
class Mounted:
    """What the hub serves for one server: hub name or URI -> downstream name or URI."""

    tools: dict[str, str] = field(default_factory=dict)
    resources: list[str] = field(default_factory=list)
    prompts: dict[str, str] = field(default_factory=dict)


class ServerKeys(BaseModel):
    """The proxy's keys in every `[servers.NAME]` table (declared by `hub_server_config_model`)."""

    expose: bool = Field(default=True, description="Serve this server's tools through the hub.")
    eager: bool = Field(
        default=False,
        description="Start at hub start instead of on first use, and restart (with backoff) when it dies.",
    )
    prefix: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9_-]{1,50}$",
        description="Tool name prefix; default: the server name.",
    )
    include: list[str] | None = Field(default=None, description="Serve only these downstream tools.")
    exclude: list[str] = Field(default_factory=list, description="Never serve these downstream tools.")


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
        keys = {n: c.plugin_settings(ServerKeys) for n, c in hub.settings.servers.items()}
        self.servers: dict[str, ServerKeys] = {n: k for n, k in keys.items() if k.expose}
        self.mounted: dict[str, Mounted] = {name: Mounted() for name in self.servers}
        self.problems: dict[str, list[str]] = {name: [] for name in self.servers}
        self.known: dict[str, Lists] = {}

    # -- lists -------------------------------------------------------------------------------

    async def load_cached(self) -> None:
        for row in await self.hub.store.fetchall("SELECT server, lists_json FROM proxy_lists"):
            if row["server"] in self.servers:
                self.known[row["server"]] = Lists.load(row["lists_json"])

    async def refresh(self, server: str) -> None:
        """Ask `server` for its tools, resources and prompts, remember them, and serve them."""
        try:
            async with self.hub.connections.session(server) as session:
                lists = Lists(tools=await _all_pages(session.list_tools, "tools"))
                capabilities = self.hub.connections.capabilities(server)
                if capabilities is not None and capabilities.resources is not None:
                    lists.resources = await _all_pages(session.list_resources, "resources")
                    lists.templates = await _all_pages(session.list_resource_templates, "resource_templates")
                if capabilities is not None and capabilities.prompts is not None:
                    lists.prompts = await _all_pages(session.list_prompts, "prompts")
                instructions = (await session.initialize()).instructions  # the kept answer

        except (ServerUnavailable, MCPError) as exc:
            self.problems[server] = [f"could not list tools, resources and prompts: {exc}"]
            self.hub.log.warning("could not list a downstream server", server=server, error=str(exc))
            return
        self.known[server] = lists
        self.hub.describe_group(server, instructions)  # for find_tools and Claude Code's tool search
        await self.hub.store.execute(
            "INSERT INTO proxy_lists (server, lists_json) VALUES (?, ?) ON CONFLICT (server) DO UPDATE "
            "SET lists_json = excluded.lists_json, updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')",
            (server, lists.dump()),
        )
        self.mount(server)

    def selected(self, server: str) -> list[types.Tool]:
        config = self.servers[server]
        tools = self.known[server].tools if server in self.known else []
        if config.include is not None:
            tools = [t for t in tools if t.name in config.include]
        return [t for t in tools if t.name not in config.exclude]

    def unmount(self, server: str) -> None:
        mounted = self.mounted[server]
        for hub_name in mounted.tools:
            self.hub.remove_tool(hub_name)
        for uri in mounted.resources:
            self.hub.remove_resource(uri)
        for hub_name in mounted.prompts:
            self.hub.remove_prompt(hub_name)
        self.mounted[server] = Mounted()

    def mount(self, server: str) -> None:
        """Serve `server`'s selected tools, its resources and prompts, replacing what was served before."""
        self.unmount(server)
        config = self.servers[server]
        prefix = config.prefix or server
        problems: list[str] = []
        lists = self.known.get(server, Lists())
        known_names = {t.name for t in lists.tools}
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
            self.mounted[server].tools[hub_name] = tool.name
        resources: list[types.Resource | types.ResourceTemplate] = [*lists.resources, *lists.templates]
        for resource in resources:
            uri = str(resource.uri) if isinstance(resource, types.Resource) else resource.uri_template
            try:
                self.hub.add_resource(self.resource_for(server, resource))
            except RegistrationError as exc:
                problems.append(f"{exc}; only the first is served")
                continue
            self.mounted[server].resources.append(uri)
        for prompt in lists.prompts:
            hub_name = f"{prefix}{self.separator}{prompt.name}"
            try:
                self.hub.add_prompt(self.prompt_for(server, prompt, hub_name))
            except RegistrationError as exc:
                problems.append(f"{exc}; set prefix in [servers.{server}] to rename")
                continue
            self.mounted[server].prompts[hub_name] = prompt.name
        self.problems[server] = problems
        for problem in problems:
            self.hub.log.warning("proxy problem", server=server, problem=problem)

    # -- calls -------------------------------------------------------------------------------

    def tool_for(self, server: str, tool: types.Tool, hub_name: str) -> Tool:
        connections = self.hub.connections

        async def call_downstream(arguments: dict[str, Any], call: ToolCall) -> RawResult:
            # Raw forwarding: JSON-RPC in, the downstream's result dict out, no SDK models per call.
            try:
                return RawResult(
                    await connections.call_tool(server, tool.name, arguments, progress=call.report_progress)
                )
            except (MCPError, HubError) as exc:  # a closed connection is marked dead by the cache itself
                raise ToolError(failure_message(server, tool.name, exc)) from None

        # What the tool does first (what a model and a tool search read), its server last.
        description = f"{tool.description or ''} [{server}]".strip()
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
        self, server: str, what: str, request: Callable[[Any], Awaitable[Answer]]
    ) -> Answer:
        """Run `request(session)` on `server`, turning its failures into messages for the caller."""
        try:
            async with self.hub.connections.session(server) as session:
                return await request(session)
        except (MCPError, HubError) as exc:  # a closed connection is marked dead by the cache itself
            raise ToolError(failure_message(server, what, exc)) from None

    def resource_for(
        self, server: str, resource: types.Resource | types.ResourceTemplate
    ) -> Resource | ResourceTemplate:
        description = f"[{server}] {resource.description or ''}".strip()

        async def read_uri(uri: str) -> types.ReadResourceResult:
            return await self._downstream(
                server, f"reading {uri}", lambda session: session.read_resource(uri)
            )

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

    def prompt_for(self, server: str, prompt: types.Prompt, hub_name: str) -> Prompt:
        async def render(arguments: dict[str, str]) -> types.GetPromptResult:
            return await self._downstream(
                server, f"prompt {prompt.name}", lambda session: session.get_prompt(prompt.name, arguments)
            )

        return Prompt(
            hub_name,
            render,
            f"[{server}] {prompt.description or ''}".strip(),
            [PromptArgument(a.name, a.description or "", bool(a.required)) for a in prompt.arguments or []],
            prompt.title,
        )

    async def on_message(self, server: str, message: Any) -> None:
        changed = (
            types.ToolListChangedNotification,
            types.ResourceListChangedNotification,
            types.PromptListChangedNotification,
        )
        if server in self.servers and isinstance(message, changed):
            self.hub.log.info("downstream lists changed; refreshing", server=server)
            self.hub.start_soon(self.refresh, server, name=f"refresh {server}")

    async def describe(self) -> dict[str, Any]:
        status = self.hub.connections.status()
        return {
            name: {
                "state": status[name]["state"],
                "last_error": status[name]["last_error"],
                "failures_in_a_row": status[name]["failures_in_a_row"],
                "restart_in_s": status[name]["restart_in_s"],
                "tools": sorted(self.mounted[name].tools),
                "resources": sorted(self.mounted[name].resources),
                "prompts": sorted(self.mounted[name].prompts),
                "problems": self.problems[name],
            }
            for name in self.servers
        }


class ProxyPlugin(Plugin):
    """The proxy plugin (entry point ``hub_proxy:ProxyPlugin``): one `Proxy` per hub run."""

    proxy: Proxy  # set by hub_startup, which runs before every other hook

    @hookimpl
    def hub_config_model(self) -> type[BaseModel]:
        return Settings

    @hookimpl
    def hub_server_config_model(self) -> type[BaseModel]:
        return ServerKeys

    @hookimpl
    def hub_startup(self, hub: PluginContext) -> Lifecycle:
        async def start() -> None:
            await hub.store.migrate("proxy", MIGRATIONS)
            proxy = self.proxy = Proxy(hub)
            await proxy.load_cached()
            hub.on_downstream_message(proxy.on_message)
            for name, config in proxy.servers.items():
                if config.eager:
                    hub.connections.keep_alive(name)
                if config.eager or name not in proxy.known:
                    hub.start_soon(proxy.refresh, name, name=f"refresh {name}")

        return start

    @hookimpl
    def hub_register_tools(self) -> None:
        # Resources and prompts are mounted here too, with the tools of their server.
        for server in self.proxy.servers:
            if server in self.proxy.known:
                self.proxy.mount(server)

    @hookimpl
    def hub_register_resources(self, register: RegisterResource) -> None:
        register(
            Resource(
                "proxy://servers",
                "servers",
                self.proxy.describe,
                "Each proxied server: state, restarts, last error, tools, resources and prompts served, naming problems.",
            )
        )
