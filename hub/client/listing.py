"""What each downstream server lists, kept in the store under a digest of its configuration.

A server's tools, resources, resource templates and prompts are kept exactly as it sent them
(wire JSON: every field, known to the SDK or not), with its `instructions`, capabilities and
`serverInfo` (`ServerListing`). They are kept under `config_digest`: the server's effective
configuration (transport, command, args, env, working directory, url, headers, after ``${VAR}``
expansion) plus what the hub declares to it, hashed in one digest, so no value is stored in
clear, and never under its bare name. So a server changed under the same name is not listed
from another's answers, and a server configured in another project (whose working directory
differs) never lends its tools.

`Listings` (what plugins get as ``hub.listings``) reads and writes them: `cached(name)` for the
current configuration of `[servers.NAME]`, `refresh(name)` to ask the server (starting it if
need be) and keep its answers. Every hub process and `hub servers check / refresh / import`
share them through the store. `not_relayed(listing)` names what a server offers that the hub
does not pass on to its clients yet.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import mcp.types as types
from pydantic import TypeAdapter

if TYPE_CHECKING:
    from mcp import ClientSession

    from hub.config.settings import ServerConfig

__all__ = [
    "MIGRATIONS",
    "NOT_RELAYED",
    "Listings",
    "ServerListing",
    "config_digest",
    "fetch_listing",
    "not_relayed",
]

#: The `listings` component's schema (`Store.migrate`): one row per configuration digest.
MIGRATIONS = [
    """
    CREATE TABLE server_listings (
        config_key TEXT PRIMARY KEY,
        server TEXT NOT NULL,
        listing_json TEXT NOT NULL,
        listed_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
    );
    """,
]
#: Rows not written for this long are dropped (a server configured again is listed again).
KEEP_DAYS = 90
#: Bumped when what goes into `config_digest` changes, so old keys are never taken for new ones.
KEY_FORMAT = 1
MAX_PAGES = 1000  # a server that keeps handing out cursors is not followed forever

#: What a downstream server may offer that the hub does not pass on to its clients, by
#: capability (a dotted path in its `capabilities`). README.md "What passes through the proxy"
#: has the same rows; `hub servers check` names each one a server offers.
NOT_RELAYED: dict[str, str] = {
    "tasks": "tasks (task-augmented tools/call, tasks/*)",
}

_AS_DICT: TypeAdapter[dict[str, Any]] = TypeAdapter(dict[str, Any])
_LISTS = (
    ("tools", types.ListToolsRequest, "tools"),
    ("resources", types.ListResourcesRequest, "resources"),
    ("templates", types.ListResourceTemplatesRequest, "resourceTemplates"),
    ("prompts", types.ListPromptsRequest, "prompts"),
)


@dataclass
class ServerListing:
    """What one downstream server offers, as it sent it: each item as wire JSON (camelCase keys,
    every field kept), its `instructions`, its `capabilities` and `server_info` (wire JSON)."""

    tools: list[dict[str, Any]] = field(default_factory=list)
    resources: list[dict[str, Any]] = field(default_factory=list)
    templates: list[dict[str, Any]] = field(default_factory=list)
    prompts: list[dict[str, Any]] = field(default_factory=list)
    instructions: str | None = None
    capabilities: dict[str, Any] = field(default_factory=dict)
    server_info: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> ServerListing:
        data = json.loads(text)
        known = {name: data[name] for name in cls.__dataclass_fields__ if name in data}
        return cls(**known)


async def _all_pages(session: ClientSession, request: Any, key: str) -> list[dict[str, Any]]:
    """Every item of a paginated list request, as the server sent it."""
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(MAX_PAGES):
        params = types.PaginatedRequestParams(cursor=cursor) if cursor else None
        # A TypeAdapter of dict gives the result as sent (after the SDK's check of its shape).
        page = await session.send_request(request(params=params), _AS_DICT)  # type: ignore[type-var]
        items.extend(item for item in page.get(key) or [] if isinstance(item, dict))
        cursor = page.get("nextCursor")
        if not isinstance(cursor, str) or not cursor:
            break
    return items


async def fetch_listing(session: ClientSession) -> ServerListing:
    """Ask an initialized session for everything its server lists: its tools (unless it declares
    none), resources and templates (if it declares resources), prompts (if it declares prompts)."""
    capabilities = session.server_capabilities
    listing = ServerListing(instructions=session.instructions)
    if capabilities is not None:
        listing.capabilities = capabilities.model_dump(mode="json", by_alias=True, exclude_none=True)
    if session.server_info is not None:
        listing.server_info = session.server_info.model_dump(mode="json", by_alias=True, exclude_none=True)
    offers = {
        "tools": capabilities is None or capabilities.tools is not None,
        "resources": capabilities is not None and capabilities.resources is not None,
        "templates": capabilities is not None and capabilities.resources is not None,
        "prompts": capabilities is not None and capabilities.prompts is not None,
    }
    for attribute, request, key in _LISTS:
        if offers[attribute]:
            setattr(listing, attribute, await _all_pages(session, request, key))
    return listing


def config_digest(
    config: ServerConfig,
    expand: Callable[[str, str], str],
    *,
    cwd: Path | None = None,
    client: Mapping[str, Any] | None = None,
) -> str:
    """The key of a server's listing: a digest of its effective configuration.

    `expand(text, key)` expands ``${VAR}`` in the value of `key` (``"command"``, ``"env.TOKEN"``)
    as the connection cache does (it raises `ConfigError` for an unset variable). A stdio server without `cwd` runs in the hub's working
    directory (`cwd`, default the process's), which is part of the key: a relative path in its
    command or arguments means another server in another project. `client` is what the hub
    declares to the server (capabilities), which can change what it lists.
    """
    identity: dict[str, Any] = {"format": KEY_FORMAT, "transport": config.transport, "client": client or {}}
    if config.transport == "stdio":
        assert config.command is not None
        directory = Path(expand(config.cwd, "cwd")).expanduser() if config.cwd else None
        base = cwd or Path(os.getcwd())
        identity.update(
            command=expand(config.command, "command"),
            args=[expand(a, "args") for a in config.args],
            env=sorted((k, expand(v, f"env.{k}")) for k, v in config.env.items()),
            cwd=str((base / directory) if directory else base),
        )
    else:
        assert config.url is not None
        identity.update(
            url=expand(config.url, "url"),
            headers=sorted((k.lower(), expand(v, f"headers.{k}")) for k, v in config.headers.items()),
        )
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def _offered(capabilities: Mapping[str, Any], path: str) -> bool:
    value: Any = capabilities
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return False
        value = value[part]
    return value is not None and value is not False


def not_relayed(listing: ServerListing) -> list[str]:
    """What the server offers that the hub does not pass on to its clients (`NOT_RELAYED`, any
    experimental capability or extension, and tools that run only as tasks), one phrase each."""
    found = [what for path, what in NOT_RELAYED.items() if _offered(listing.capabilities, path)]
    for group in ("experimental", "extensions"):
        extra = listing.capabilities.get(group)
        if isinstance(extra, Mapping):
            found.extend(f"{group} capability {name!r}" for name in sorted(extra))
    for tool in listing.tools:
        execution = tool.get("execution")
        if isinstance(execution, Mapping) and execution.get("taskSupport") == "required":
            found.append(f"tool {tool.get('name')!r}, which runs only as a task")
    return found


class _Store(Protocol):
    """What `Listings` needs of the hub's store (`hub.services.store.Store`)."""

    async def migrate(self, component: str, migrations: Sequence[str]) -> int: ...

    async def execute(self, sql: str, params: Sequence[Any] = ...) -> int: ...

    async def fetchone(self, sql: str, params: Sequence[Any] = ...) -> Any: ...


class _Connections(Protocol):
    """What `Listings` needs of the connection cache (`hub.client.cache.ConnectionCache`)."""

    def config_key(self, name: str) -> str: ...

    def session(self, name: str) -> AbstractAsyncContextManager[ClientSession]: ...


class Listings:
    """The listings of the servers of one connection cache, kept in the store (see the module
    docstring). Plugins get it as ``hub.listings``."""

    def __init__(self, store: _Store, connections: _Connections) -> None:
        self.store = store
        self.connections = connections

    async def setup(self) -> None:
        """Create (or upgrade) the table; drop rows not written for `KEEP_DAYS`."""
        await self.store.migrate("listings", MIGRATIONS)
        cutoff = datetime.now(UTC) - timedelta(days=KEEP_DAYS)
        await self.store.execute(
            "DELETE FROM server_listings WHERE listed_at < ?",
            (cutoff.strftime("%Y-%m-%dT%H:%M:%S.") + f"{cutoff.microsecond // 1000:03d}Z",),
        )

    async def cached(self, name: str) -> ServerListing | None:
        """What `[servers.NAME]`, as it is configured now, listed when last asked (by any hub
        process on this state directory, or `hub servers check`), or None: never seen."""
        row = await self.store.fetchone(
            "SELECT listing_json FROM server_listings WHERE config_key = ?",
            (self.connections.config_key(name),),
        )
        if row is None:
            return None
        try:
            return ServerListing.from_json(row[0])
        except (ValueError, TypeError):
            return None  # a row that cannot be read is as good as none: the server is asked again

    async def refresh(self, name: str) -> ServerListing:
        """Ask server `name` for everything it lists (starting it if it is not running), keep
        the answers, and return them. Raises `ServerUnavailable` and `MCPError` as
        ``connections.session`` does."""
        key = self.connections.config_key(name)  # before the answers: a config that cannot start raises here
        async with self.connections.session(name) as session:
            listing = await fetch_listing(session)
        await self.save(name, listing, key=key)
        return listing

    async def save(self, name: str, listing: ServerListing, *, key: str | None = None) -> None:
        """Keep `listing` as what `[servers.NAME]`, as configured now, lists."""
        await self.store.execute(
            "INSERT INTO server_listings (config_key, server, listing_json) VALUES (?, ?, ?) "
            "ON CONFLICT (config_key) DO UPDATE SET server = excluded.server, "
            "listing_json = excluded.listing_json, listed_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')",
            (key or self.connections.config_key(name), name, listing.to_json()),
        )
