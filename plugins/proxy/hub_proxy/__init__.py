"""proxy: serve the tools, resources and prompts of every `[servers.NAME]` through the hub.

Tools and prompts are served as ``NAME__tool`` (the separator is `[plugins.proxy] separator`);
resources and resource templates keep their URIs, so links between them still work. Per server
(in its `[servers.NAME]` table): `expose = false` hides it, `include` / `exclude` pick tools,
`prefix` renames (the default prefix is NAME), `eager = true` starts it with the hub and has the
connection cache restart it when it dies. Each item is listed as the server listed it (every
field), renamed and with ``[NAME]`` after a tool's description (before a resource's or a
prompt's); each server's `instructions` go into the hub's, named, cut at `[plugins.proxy]
instructions_chars`, and describe its tools for `find_tools` and Claude Code's tool search
(`hub.describe_group`).

What a server lists is kept by the hub under a digest of its configuration (``hub.listings``),
so a lazy server is listed without starting it: it starts on the first call. A server never
listed for its configuration as it is now is started with the hub, and the first lists of a
session (and its `initialize` / `server/discover`) wait for it, up to `[plugins.proxy]
first_list_wait_s`; one that misses it arrives with `list_changed`. A server is asked again
whenever it (re)starts and when it says a list changed; when its lists changed, the hub's
clients get `list_changed` in turn. Progress notifications are relayed to the caller, and
cancelling a call cancels it downstream. What a server asks of its client during a call, its log
messages, completion and resource subscriptions are relayed too (`relay`).
"""

from __future__ import annotations

from typing import Any

import mcp.types as types
from pydantic import BaseModel

from hub import (
    CLAUDE_PREFIX,
    Lifecycle,
    Plugin,
    PluginContext,
    RegisterResource,
    RegistrationError,
    Resource,
    ServerListing,
    hookimpl,
)

from . import relay
from .lists import MIGRATIONS, Refresher
from .mount import Mounted, prompt_for, resource_for, tool_for
from .settings import ServerKeys, Settings

__all__ = ["MIGRATIONS", "Proxy", "ProxyPlugin", "ServerKeys", "Settings"]

INSTRUCTIONS_HEADING = "## Servers behind this hub"


class Proxy:
    """The proxy's state for one hub run."""

    def __init__(self, hub: PluginContext) -> None:
        self.hub = hub
        settings = hub.config
        assert isinstance(settings, Settings)
        self.settings = settings
        self.separator = settings.separator
        keys = {n: c.plugin_settings(ServerKeys) for n, c in hub.settings.servers.items()}
        self.servers: dict[str, ServerKeys] = {n: k for n, k in keys.items() if k.expose}
        self.mounted: dict[str, Mounted] = {name: Mounted() for name in self.servers}
        self.problems: dict[str, list[str]] = {name: [] for name in self.servers}
        self.lists = Refresher(hub, self.changed)

    @property
    def known(self) -> dict[str, ServerListing]:
        return self.lists.known

    async def start(self) -> None:
        """Load the kept lists; start the eager servers and those never listed, holding the
        first answers for the latter; ask a server again whenever it (re)starts."""
        await self.lists.load(list(self.servers))
        self.hub.connections.on_ready(self.on_ready)
        self.hub.on_downstream_message(self.on_message)
        self.compose_instructions()
        for name, config in self.servers.items():
            if config.eager:
                self.hub.connections.keep_alive(name)
            if name not in self.known:
                self.lists.hold_first_lists(name, self.settings.first_list_wait_s)
            if config.eager or name not in self.known:
                self.hub.start_soon(self.lists.start, name, name=f"start {name}")

    # -- serving -----------------------------------------------------------------------------

    def changed(self, server: str, listing: ServerListing) -> None:
        """A server's lists changed (or were seen for the first time): serve them now."""
        self.mount(server)
        self.compose_instructions()

    def selected(self, server: str) -> list[dict[str, Any]]:
        config = self.servers[server]
        tools = self.known[server].tools if server in self.known else []
        if config.include is not None:
            tools = [t for t in tools if t.get("name") in config.include]
        return [t for t in tools if t.get("name") not in config.exclude]

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
        listing = self.known.get(server, ServerListing())
        problems: list[str] = []
        known_names = {t.get("name") for t in listing.tools}
        for missing in sorted(set(self.servers[server].include or []) - known_names):
            problems.append(f"include names {missing!r}, which the server does not have")
        # What the server is about (its instructions, as kept from start-up on): find_tools
        # searches it, and Claude Code's tool search gets its start as a hint.
        self.hub.describe_group(server, listing.instructions)
        self._mount_tools(server, problems)
        self._mount_resources(server, listing, problems)
        self._mount_prompts(server, listing, problems)
        self.problems[server] = problems
        for problem in problems:
            self.hub.log.warning("proxy problem", server=server, problem=problem)

    def _hub_name(self, server: str, name: str) -> str:
        return f"{self.servers[server].prefix or server}{self.separator}{name}"

    def _mount_tools(self, server: str, problems: list[str]) -> None:
        for listed in self.selected(server):
            name = str(listed.get("name"))
            hub_name = self._hub_name(server, name)
            if len(CLAUDE_PREFIX) + len(hub_name) > 64:
                problems.append(
                    f"{hub_name!r} is {len(CLAUDE_PREFIX) + len(hub_name)} characters with {CLAUDE_PREFIX!r}, "
                    f"over Claude's 64; set a shorter prefix in [servers.{server}]"
                )
            try:
                self.hub.add_tool(tool_for(self.hub, server, listed, hub_name))
            except RegistrationError as exc:
                problems.append(f"{exc}; set prefix in [servers.{server}] to rename")
                continue
            except ValueError as exc:  # a definition the SDK cannot read
                problems.append(f"tool {name!r} is not served: its definition is invalid: {_first_line(exc)}")
                continue
            self.mounted[server].tools[hub_name] = name

    def _mount_resources(self, server: str, listing: ServerListing, problems: list[str]) -> None:
        for listed in [*listing.resources, *listing.templates]:
            uri = str(listed.get("uri") or listed.get("uriTemplate"))
            try:
                self.hub.add_resource(resource_for(self.hub, server, listed))
            except RegistrationError as exc:
                problems.append(f"{exc}; only the first is served")
                continue
            except ValueError as exc:
                problems.append(
                    f"resource {uri!r} is not served: its definition is invalid: {_first_line(exc)}"
                )
                continue
            self.mounted[server].resources.append(uri)

    def _mount_prompts(self, server: str, listing: ServerListing, problems: list[str]) -> None:
        for listed in listing.prompts:
            name = str(listed.get("name"))
            hub_name = self._hub_name(server, name)
            try:
                self.hub.add_prompt(prompt_for(self.hub, server, listed, hub_name))
            except RegistrationError as exc:
                problems.append(f"{exc}; set prefix in [servers.{server}] to rename")
                continue
            except ValueError as exc:
                problems.append(
                    f"prompt {name!r} is not served: its definition is invalid: {_first_line(exc)}"
                )
                continue
            self.mounted[server].prompts[hub_name] = name

    def compose_instructions(self) -> None:
        """Each server's instructions, named and cut at `instructions_chars`, as the proxy's
        part of the hub's instructions (none when no server gives any)."""
        budget = self.settings.instructions_chars
        parts = []
        for name in self.servers:
            listing = self.known.get(name)
            text = (listing.instructions or "").strip() if listing is not None else ""
            if not text or budget == 0:
                continue
            tools = f"{self.servers[name].prefix or name}{self.separator}*"
            parts.append(f"### {name} (its tools: {tools})\n{cut(text, budget)}")
        if not parts:
            self.hub.set_instructions(None)
            return
        self.hub.set_instructions(
            f"{INSTRUCTIONS_HEADING}\n\nThe instructions of the downstream servers whose tools the hub serves.\n\n"
            + "\n\n".join(parts)
        )

    # -- events and status -------------------------------------------------------------------

    def on_ready(self, server: str) -> None:
        """A downstream server (re)started: ask it again (what it lists may have changed)."""
        if server in self.servers:
            self.lists.request(server)

    async def on_message(self, server: str, message: Any) -> None:
        changed = (
            types.ToolListChangedNotification,
            types.ResourceListChangedNotification,
            types.PromptListChangedNotification,
        )
        if server in self.servers and isinstance(message, changed):
            self.hub.log.info("downstream lists changed; refreshing", server=server)
            self.lists.request(server)
        await relay.on_resource_updated(self.hub, server, message)

    async def describe(self) -> dict[str, Any]:
        status = self.hub.connections.status()
        described = {}
        for name in self.servers:
            listing = self.known.get(name)
            problem = self.lists.problems.get(name)
            described[name] = {
                "state": status[name]["state"],
                "last_error": status[name]["last_error"],
                "failures_in_a_row": status[name]["failures_in_a_row"],
                "restart_in_s": status[name]["restart_in_s"],
                "listed": listing is not None,
                "tools": sorted(self.mounted[name].tools),
                "resources": sorted(self.mounted[name].resources),
                "prompts": sorted(self.mounted[name].prompts),
                "instructions": listing.instructions if listing is not None else None,
                "problems": [*([problem] if problem else []), *self.problems[name]],
            }
        return described


def cut(text: str, limit: int) -> str:
    """`text`, or its first `limit` characters (ending at a space or line break when one is
    near) and a note of the cut."""
    if len(text) <= limit:
        return text
    head = text[:limit]
    space = max(head.rfind("\n"), head.rfind(" "))
    if space > limit * 0.8:
        head = head[:space]
    return f"{head.rstrip()} … [cut at {len(head.rstrip())} of {len(text)} characters: proxy://servers has it all]"


def _first_line(exc: Exception) -> str:
    lines = str(exc).splitlines()
    return " ".join(lines[:3]) if lines else type(exc).__name__


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
            self.proxy = Proxy(hub)
            await self.proxy.start()

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
                "Each proxied server: state, restarts, last error, tools, resources and prompts served, "
                "its instructions, naming problems.",
            )
        )
