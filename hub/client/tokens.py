"""Remote servers' OAuth tokens in the hub's store, owned once across every hub process.

Four tables (component ``oauth`` of the store's migrations), one row per `[servers.NAME]`:

- ``oauth_tokens``: the tokens (the SDK's `OAuthToken` as JSON), their absolute expiry (the SDK
  keeps only `expires_in`), a generation counted up on every write (a reader sees that another
  process refreshed), a state (``ok`` or ``needs_login``), the last problem said to the user and
  the scope a server asked for more of (step-up);
- ``oauth_clients``: the client registration (dynamic, CIMD or configured);
- ``oauth_discovery``: the protected-resource and authorization-server metadata, so a refresh
  after a restart goes to the real token endpoint;
- ``oauth_refresh_lease``: who refreshes now. A rotating refresh token may be used once: one
  process at a time refreshes (`ServerTokens.lease_or_adopt`), the others wait and adopt what it
  stored. A lease of a dead process on this host is taken over at once; any other lapses after
  `LEASE_TTL_S`.

Every row carries the server's URL: tokens issued for one URL are never sent to a changed
`[servers.NAME] url`. `TokenStore` takes the store as a `Database` (the services' `Store` is
one): the client room reaches the store only through what is passed in.
"""

from __future__ import annotations

import hashlib
import os
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeVar

from mcp.shared.auth import OAuthClientInformationFull, OAuthMetadata, OAuthToken, ProtectedResourceMetadata

__all__ = [
    "LEASE_TTL_S",
    "Database",
    "ServerTokens",
    "TokenRow",
    "TokenStore",
    "fingerprint",
    "read_rows",
    "refresh_margin",
]

T = TypeVar("T")

LEASE_TTL_S = 60.0  # a refresher that died holds the others up at most this long
LEASE_WAIT_S = 45.0  # how long a process waits for another's refresh before giving up

MIGRATIONS = [
    """
    CREATE TABLE oauth_tokens (
        server TEXT PRIMARY KEY,
        url TEXT NOT NULL,
        tokens TEXT,
        expires_at REAL,
        generation INTEGER NOT NULL DEFAULT 0,
        state TEXT NOT NULL DEFAULT 'ok',
        problem TEXT,
        scope_needed TEXT,
        updated_at REAL
    );
    CREATE TABLE oauth_clients (server TEXT PRIMARY KEY, url TEXT NOT NULL, client_info TEXT NOT NULL);
    CREATE TABLE oauth_discovery (
        server TEXT PRIMARY KEY, url TEXT NOT NULL, prm TEXT, asm TEXT, auth_server_url TEXT
    );
    CREATE TABLE oauth_refresh_lease (server TEXT PRIMARY KEY, owner TEXT NOT NULL, expires_at REAL NOT NULL);
    """,
]


class Connection(Protocol):
    """What the tokens use of a store's connection (`hub.services.store.Connection`)."""

    def execute(self, sql: str, params: Any = ...) -> Any: ...

    def lock(self, name: str) -> None: ...


class Database(Protocol):
    """What the tokens need of the hub's store (`hub.services.store.Store` is one): transactions
    on a connection whose rows are read by column name, and migrations."""

    async def transaction(self, fn: Callable[[Connection], T]) -> T: ...

    async def migrate(self, component: str, migrations: Sequence[str]) -> int: ...


def fingerprint(token: str | None) -> str | None:
    """A short hash of a token, for tests and diagnostics: never the token itself."""
    return None if token is None else hashlib.sha256(token.encode()).hexdigest()[:10]


def refresh_margin(tokens: OAuthToken | None) -> float:
    """Refresh this long before expiry: a fifth of the token's lifetime, at most a minute."""
    if tokens is None or not tokens.expires_in:
        return 0.0
    return min(60.0, 0.2 * float(tokens.expires_in))


def _span(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    if seconds < 172800:
        return f"{seconds // 3600} h {seconds % 3600 // 60} min"
    return f"{seconds // 86400} days"


@dataclass
class TokenRow:
    """One server's row of ``oauth_tokens`` (all empty when there is none)."""

    tokens: OAuthToken | None = None
    expires_at: float | None = None
    generation: int = 0
    state: str = "ok"
    problem: str | None = None
    scope_needed: str | None = None
    exists: bool = False

    @classmethod
    def read(cls, row: Any, url: str | None) -> TokenRow:
        """From a database row (by column name); tokens issued for another URL count as none."""
        if row is None:
            return cls()
        if url is not None and row["url"] != url:
            return cls(generation=row["generation"], state="needs_login", exists=True)
        tokens = OAuthToken.model_validate_json(row["tokens"]) if row["tokens"] else None
        return cls(
            tokens,
            row["expires_at"],
            row["generation"],
            row["state"],
            row["problem"],
            row["scope_needed"],
            exists=True,
        )

    def fresh(self) -> bool:
        """Whether its access token may be sent as it is (not within the refresh margin of expiry)."""
        return bool(
            self.tokens
            and self.state == "ok"
            and (self.expires_at is None or time.time() < self.expires_at - refresh_margin(self.tokens))
        )

    @property
    def can_refresh(self) -> bool:
        return bool(self.state == "ok" and self.tokens is not None and self.tokens.refresh_token)

    def describe(self, server: str) -> str | None:
        """What `hub servers list` / `check` say of the sign-in: None when there was none ever."""
        if not self.exists:
            return None
        login = f"run `hub servers login {server}`"
        if self.state != "ok" or self.tokens is None:
            if self.problem and self.problem.startswith("token refresh failed"):
                return self.problem
            return f"needs login: {login}"
        if self.expires_at is None:
            said = "signed in"
        elif self.expires_at > time.time():
            said = f"signed in (expires in {_span(self.expires_at - time.time())})"
        elif self.can_refresh:
            said = "signed in (the access token expired; it is refreshed on the next use)"
        else:
            said = f"signed in, but the access token expired and there is no refresh token: {login}"
        if self.scope_needed:
            said += f"; needs more scope ({self.scope_needed}): {login}"
        return said


def read_rows(rows: Sequence[Mapping[str, Any]]) -> dict[str, tuple[str, TokenRow]]:
    """Every server's (url, row), from the rows of ``oauth_tokens`` read on their own (`hub
    servers list` reads the store read-only)."""
    return {row["server"]: (row["url"], TokenRow.read(row, None)) for row in rows}


def lease_owner(holder: object) -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{id(holder):x}"


def _owner_dead(owner: str) -> bool:
    """Whether a lease belongs to a process on this host that no longer exists."""
    host, _, rest = owner.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


Decision = Literal["adopt", "dead", "wait", "leased"]


class TokenStore:
    """The OAuth tables of one store, for every server."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self._migrated = False

    async def ready(self) -> TokenStore:
        if not self._migrated:
            await self.database.migrate("oauth", MIGRATIONS)
            self._migrated = True
        return self

    def server(self, name: str, url: str) -> ServerTokens:
        """The tokens of `[servers.NAME]` at `url` (call `ready()` first)."""
        return ServerTokens(self.database, name, url)


class ServerTokens:
    """The SDK's `TokenStorage` for one server, plus what the SDK lacks: absolute expiry, the
    generation, a clear state, the discovered metadata and the refresh lease."""

    def __init__(self, database: Database, server: str, url: str) -> None:
        self.database, self.server, self.url = database, server, url
        self.generation = 0  # of the tokens this process last read or wrote

    # -- the SDK's TokenStorage -------------------------------------------------------------

    async def get_tokens(self) -> OAuthToken | None:
        row = await self.load()
        return row.tokens if row.state == "ok" else None

    async def set_tokens(self, tokens: OAuthToken) -> None:
        """Store new tokens (a sign-in or a refresh): state ok, problems and step-up forgotten."""
        now = time.time()
        expires_at = now + tokens.expires_in if tokens.expires_in else None

        def write(conn: Connection) -> int:
            conn.execute(
                "INSERT INTO oauth_tokens (server, url, tokens, expires_at, generation, state, updated_at)"
                " VALUES (?, ?, ?, ?, 1, 'ok', ?) ON CONFLICT (server) DO UPDATE SET url = excluded.url,"
                " tokens = excluded.tokens, expires_at = excluded.expires_at, state = 'ok', problem = NULL,"
                " scope_needed = NULL, generation = oauth_tokens.generation + 1, updated_at = excluded.updated_at",
                (self.server, self.url, tokens.model_dump_json(exclude_none=True), expires_at, now),
            )
            row = conn.execute(
                "SELECT generation FROM oauth_tokens WHERE server = ?", (self.server,)
            ).fetchone()
            return int(row[0])

        self.generation = await self.database.transaction(write)

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        row = await self._one("SELECT url, client_info FROM oauth_clients WHERE server = ?")
        if row is None or row["url"] != self.url:
            return None
        return OAuthClientInformationFull.model_validate_json(row["client_info"])

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        body = client_info.model_dump_json(exclude_none=True)
        await self._write(
            "INSERT INTO oauth_clients (server, url, client_info) VALUES (?, ?, ?) ON CONFLICT (server)"
            " DO UPDATE SET url = excluded.url, client_info = excluded.client_info",
            (self.server, self.url, body),
        )

    # -- state -------------------------------------------------------------------------------

    async def load(self) -> TokenRow:
        return await self.database.transaction(self._read)

    def _read(self, conn: Connection) -> TokenRow:
        row = conn.execute("SELECT * FROM oauth_tokens WHERE server = ?", (self.server,)).fetchone()
        return TokenRow.read(row, self.url)

    async def needs_login(self, problem: str, *, generation: int) -> None:
        """The tokens cannot be refreshed (revoked, expired grant): drop them for every process,
        unless someone stored newer ones since `generation` was read."""
        await self._write(
            "UPDATE oauth_tokens SET state = 'needs_login', problem = ?, tokens = NULL, expires_at = NULL,"
            " generation = generation + 1, updated_at = ? WHERE server = ? AND generation = ?",
            (problem, time.time(), self.server, generation),
        )

    async def note(self, problem: str | None, *, scope_needed: str | None = None) -> None:
        """Record a problem that leaves the tokens usable (a tool needs more scope), or clear it."""
        await self._write(
            "UPDATE oauth_tokens SET problem = ?, scope_needed = COALESCE(?, scope_needed) WHERE server = ?",
            (problem, scope_needed, self.server),
        )

    async def forget(self) -> None:
        """Sign out: the tokens, the client registration, the metadata and any lease."""

        def drop(conn: Connection) -> None:
            for table in ("oauth_tokens", "oauth_clients", "oauth_discovery", "oauth_refresh_lease"):
                conn.execute(f"DELETE FROM {table} WHERE server = ?", (self.server,))

        await self.database.transaction(drop)

    async def forget_client(self) -> None:
        """Drop the client registration only (it was made for another redirect URI)."""
        await self._write("DELETE FROM oauth_clients WHERE server = ?", (self.server,))

    # -- discovery ---------------------------------------------------------------------------

    async def save_discovery(
        self, prm: ProtectedResourceMetadata | None, asm: OAuthMetadata | None, auth_server_url: str | None
    ) -> None:
        await self._write(
            "INSERT INTO oauth_discovery (server, url, prm, asm, auth_server_url) VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT (server) DO UPDATE SET url = excluded.url, prm = excluded.prm, asm = excluded.asm,"
            " auth_server_url = excluded.auth_server_url",
            (
                self.server,
                self.url,
                prm.model_dump_json(exclude_none=True) if prm else None,
                asm.model_dump_json(exclude_none=True) if asm else None,
                auth_server_url,
            ),
        )

    async def load_discovery(
        self,
    ) -> tuple[ProtectedResourceMetadata | None, OAuthMetadata | None, str | None]:
        row = await self._one("SELECT * FROM oauth_discovery WHERE server = ?")
        if row is None or row["url"] != self.url:
            return None, None, None
        prm = ProtectedResourceMetadata.model_validate_json(row["prm"]) if row["prm"] else None
        asm = OAuthMetadata.model_validate_json(row["asm"]) if row["asm"] else None
        return prm, asm, row["auth_server_url"]

    # -- the refresh lease -----------------------------------------------------------------

    async def lease_or_adopt(self, owner: str, *, force: bool) -> tuple[Decision, TokenRow]:
        """What `owner` does about tokens it cannot send, decided in one transaction:

        - ``adopt``: another process refreshed since this one read the tokens (or they are fresh
          and `force` is off): use the row's tokens;
        - ``dead``: nothing to refresh (no refresh token, or signed out / needing login);
        - ``wait``: another live process holds the lease: ask again shortly;
        - ``leased``: `owner` holds the lease now and refreshes with this row's refresh token,
          the newest there is; it calls `release` when done.

        `force` (the server refused an access token this process thought valid): refresh even
        if the row looks fresh, unless its generation moved on.
        """

        def decide(conn: Connection) -> tuple[Decision, TokenRow]:
            conn.lock(f"oauth:{self.server}")  # one decider at a time, on PostgreSQL too
            row = self._read(conn)
            if not row.can_refresh:
                return "dead", row
            if row.fresh() and (row.generation != self.generation or not force):
                return "adopt", row
            now = time.time()
            lease = conn.execute(
                "SELECT owner, expires_at FROM oauth_refresh_lease WHERE server = ?", (self.server,)
            ).fetchone()
            if lease is not None and lease[0] != owner and lease[1] > now and not _owner_dead(lease[0]):
                return "wait", row
            conn.execute(
                "INSERT INTO oauth_refresh_lease (server, owner, expires_at) VALUES (?, ?, ?)"
                " ON CONFLICT (server) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at",
                (self.server, owner, now + LEASE_TTL_S),
            )
            return "leased", row

        return await self.database.transaction(decide)

    async def release(self, owner: str) -> None:
        await self._write(
            "DELETE FROM oauth_refresh_lease WHERE server = ? AND owner = ?", (self.server, owner)
        )

    # -- helpers -----------------------------------------------------------------------------

    async def _one(self, sql: str) -> Any:
        return await self.database.transaction(lambda conn: conn.execute(sql, (self.server,)).fetchone())

    async def _write(self, sql: str, params: Sequence[Any]) -> None:
        await self.database.transaction(lambda conn: conn.execute(sql, params))
