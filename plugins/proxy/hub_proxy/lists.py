"""Keeping each server's lists up to date: the proxy's side of ``hub.listings``.

What a server lists is kept by the hub under a digest of its configuration (``hub.listings``), so
a lazy server is listed without being started, and a server changed under the same name, or one
of another project, never lends its lists. `Refresher` asks a server again, at most one request
at a time per server (requests that come while one runs are served by one more), whenever it
(re)starts (``hub.connections.on_ready``) and when it says a list changed; a server the hub has
never listed holds the hub's first answers (``hub.hold_lists``) until it has been asked, or its
start failed.
"""

from __future__ import annotations

from collections.abc import Callable

from mcp.shared.exceptions import MCPError

from hub import ConfigError, HubError, ListHold, PluginContext, ServerListing

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
    # Lists kept by server name alone were shared by every project and outlived a change of the
    # server's command: they cannot be trusted. The hub keeps them now, by configuration
    # (`server_listings`); each server is asked again once.
    """
    DROP TABLE proxy_lists;
    """,
]


class Refresher:
    """Asks servers for their lists and hands what changed to `changed(server, listing)`."""

    def __init__(self, hub: PluginContext, changed: Callable[[str, ServerListing], None]) -> None:
        self.hub = hub
        self.changed = changed
        self.known: dict[str, ServerListing] = {}
        self.problems: dict[str, str] = {}  # server -> why it could not be listed last time
        self.holds: dict[str, ListHold] = {}
        self._wanted: dict[str, int] = {}
        self._done: dict[str, int] = {}
        self._running: set[str] = set()

    async def load(self, servers: list[str]) -> None:
        """What each server listed when last asked, for its configuration as it is now."""
        for name in servers:
            try:
                listing = await self.hub.listings.cached(name)
            except ConfigError as exc:  # a ${VAR} that is not set: the server cannot start either
                self.problems[name] = str(exc)
                continue
            if listing is not None:
                self.known[name] = listing

    def hold_first_lists(self, name: str, wait_s: float) -> None:
        """Make the hub's first answers wait (at most `wait_s`) until `name` has been listed."""
        if wait_s > 0:
            self.holds[name] = self.hub.hold_lists(
                f"server {name!r} has never been listed and is starting", wait_s=wait_s
            )

    def release(self, name: str) -> None:
        hold = self.holds.pop(name, None)
        if hold is not None:
            hold.release()

    async def start(self, name: str) -> None:
        """Start `name` (its listing follows, from `on_ready`); a failure releases its hold."""
        try:
            await self.hub.connections.get(name)
        except (HubError, ConfigError, MCPError) as exc:
            self.problems[name] = f"could not start: {exc}"
            self.hub.log.warning("a downstream server did not start", server=name, error=str(exc))
            self.release(name)
            return
        self.request(name)  # in case it was ready before anyone listened

    def request(self, name: str) -> None:
        """Ask `name` for its lists soon; requests made while one runs are served by one more."""
        self._wanted[name] = self._wanted.get(name, 0) + 1
        if name not in self._running:
            self._running.add(name)
            self.hub.start_soon(self._serve_requests, name, name=f"list {name}")

    async def _serve_requests(self, name: str) -> None:
        try:
            while self._done.get(name, 0) < self._wanted[name]:
                wanted = self._wanted[name]
                await self._list(name)
                self._done[name] = wanted
        finally:
            self._running.discard(name)

    async def _list(self, name: str) -> None:
        try:
            listing = await self.hub.listings.refresh(name)
        except Exception as exc:  # whatever it was (a dead server, a malformed answer), not listed
            self.problems[name] = f"could not list tools, resources and prompts: {exc}"
            self.hub.log.warning("could not list a downstream server", server=name, error=str(exc))
            self.release(name)
            return
        self.problems.pop(name, None)
        if self.known.get(name) != listing:
            self.known[name] = listing
            self.changed(name, listing)
        self.release(name)
