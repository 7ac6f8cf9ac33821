"""The hub's store: every plugin's persistent state, behind one interface with two backends.

`Store` is the interface every service and plugin uses; `open_store(config)` gives the backend
the configuration names (`hub.services.backends.open_store`): SQLite under `state_dir` (the
default, `hub.services.sqlite_store`, needing nothing), or PostgreSQL when `state_url = "postgresql://..."` (or `HUB_STATE_URL`) is set
(`hub.services.postgres_store`, through psycopg 3), which hubs and pool workers on several
machines can share.

One SQL for both (a plugin is written once). Statements use `?` (or `:name`) parameters and the
SQL both databases accept; what differs is said once, here:

- `NOW_SQL`, SQLite's ``strftime('%Y-%m-%dT%H:%M:%fZ', 'now')``: the current UTC time as sortable
  ISO text (2026-11-23T22:41:50.123Z), in column defaults and statements alike; the PostgreSQL
  backend writes its own expression for it.
- `GREATEST(a, b)` and `LEAST(a, b)`: PostgreSQL's, and functions of the SQLite connection.
- Autoincrement ids: a column ``id INTEGER PRIMARY KEY`` in a migration; insert with
  ``conn.insert(sql, params)``, which returns the new id on both.
- Column types in migrations: `INTEGER` is 64-bit and `REAL` a double on both (PostgreSQL gets
  `BIGINT` and `DOUBLE PRECISION`); keep booleans as INTEGER 0/1 (a `bool` parameter is sent as
  0 or 1) and count them with ``SUM(CASE WHEN ... THEN 1 ELSE 0 END)``.
- Locks: a read-then-write that must be atomic against other processes runs in
  ``store.transaction(fn)`` and takes ``conn.lock(name)`` first (an exclusive lock held until the
  transaction ends: SQLite's `BEGIN IMMEDIATE` already serialises every writer, PostgreSQL takes
  an advisory lock); rows claimed by one of many takers use ``store.sql.skip_locked``
  (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, nothing on SQLite, where the transaction is alone).
- A migration that cannot be written once is a dict ``{"sqlite": ..., "postgresql": ...}``.

Notifications (`notify`, `listen`): PostgreSQL's `NOTIFY`/`LISTEN`; on SQLite, datagrams between
the processes of one machine (the only ones that can share its file). A listener is woken within
milliseconds; it still re-reads the truth from the tables, as a notification may be missed while
a connection is being made again.

Faults are said, never raised raw: `StoreError` (one sentence naming the store, the cause and
the fix); `StoreUnavailable`, a `StoreError`, when the store cannot be reached for now (a
PostgreSQL server down, the network cut, a failover): the hub keeps running and tries again
(`wait_available`). `StoreLost`: the SQLite file was deleted or replaced under the hub.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol, TypeAlias, TypeVar

import anyio
import anyio.to_thread

from hub.errors import StoreError, StoreLost, StoreUnavailable

__all__ = [
    "NOW_SQL",
    "Connection",
    "Cursor",
    "Dialect",
    "Migration",
    "Row",
    "Store",
    "StoreError",
    "StoreLost",
    "StoreUnavailable",
    "mask_url",
]

T = TypeVar("T")

NOW_SQL = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')"
#: A migration: SQL for both backends, or ``{"sqlite": ..., "postgresql": ...}``.
Migration: TypeAlias = str | Mapping[str, str]
Params: TypeAlias = Sequence[Any] | Mapping[str, Any]


class Row(Protocol):
    """A result row: by column name (``row["id"]``) or position (``row[0]``); ``dict(row)`` and
    unpacking work too (`sqlite3.Row` on SQLite, the same shape on PostgreSQL)."""

    def __getitem__(self, key: int | str) -> Any: ...

    def keys(self) -> list[str]: ...

    def __iter__(self) -> Iterator[Any]: ...

    def __len__(self) -> int: ...


class Cursor(Protocol):
    """What ``conn.execute`` returns."""

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class Connection(abc.ABC):
    """The connection a ``store.transaction(fn)`` or ``store.run(fn)`` function gets: the same
    calls on both backends (never the raw driver's connection)."""

    dialect: str

    @abc.abstractmethod
    def execute(self, sql: str, params: Params = ()) -> Cursor:
        """Run one statement; the cursor gives its rows and `rowcount`."""

    @abc.abstractmethod
    def executemany(self, sql: str, seq: Sequence[Params]) -> None:
        """Run one statement once per parameter set."""

    @abc.abstractmethod
    def insert(self, sql: str, params: Params = ()) -> int:
        """Run an INSERT into a table with an ``id INTEGER PRIMARY KEY``; the new row's id."""

    @abc.abstractmethod
    def lock(self, name: str) -> None:
        """Hold the exclusive lock `name` until the transaction ends (see the module doc)."""

    def fetchone(self, sql: str, params: Params = ()) -> Any:
        return self.execute(sql, params).fetchone()

    def fetchall(self, sql: str, params: Params = ()) -> list[Any]:
        return self.execute(sql, params).fetchall()


class Dialect:
    """SQL fragments that differ between the backends (``store.sql``)."""

    def __init__(self, name: str, now: str, skip_locked: str, for_update: str) -> None:
        self.name = name
        #: The current UTC time as ISO text (the same value `NOW_SQL` gives).
        self.now = now
        #: ``FOR UPDATE SKIP LOCKED`` where rows can be locked one by one, else "".
        self.skip_locked = skip_locked
        #: ``FOR UPDATE`` where rows can be locked one by one, else "".
        self.for_update = for_update


SQLITE = Dialect("sqlite", NOW_SQL, "", "")
POSTGRESQL = Dialect(
    "postgresql",
    "to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')",
    " FOR UPDATE SKIP LOCKED",
    " FOR UPDATE",
)


def mask_url(url: str) -> str:
    """`url` with its password (and any ``password=`` parameter) replaced by ``***``."""
    import re

    url = re.sub(r"(://[^:/@?#]*:)[^@/?#]*@", r"\1***@", url)
    return re.sub(r"((?:^|[?&\s])password=)[^&\s]*", r"\1***", url)


class Store(abc.ABC):
    """The interface (see the module doc). Every call is async; SQL runs in worker threads.

    ``await store.execute(sql, params)``, ``fetchall``, ``fetchone``, ``run(fn)`` (``fn(conn)``
    with autocommit) and ``transaction(fn)`` (``fn(conn)`` atomic: an exception rolls it back),
    ``migrate(component, migrations)``, ``notify(channel, payload)``, ``listen(channel)``.
    """

    #: "sqlite" or "postgresql".
    dialect: str = "sqlite"
    #: SQL fragments that differ between the backends (see `Dialect`).
    sql: Dialect = SQLITE
    #: Set once the SQLite file was deleted or replaced (`StoreLost`), for good.
    lost: StoreLost | None = None
    #: Why the store cannot be reached now (`StoreUnavailable`), None while it can.
    problem: str | None = None

    # -- what a backend provides --------------------------------------------------------------

    @property
    @abc.abstractmethod
    def where(self) -> str:
        """What messages name: the file, or the URL with its password masked."""

    @abc.abstractmethod
    def _call(self, fn: Callable[[Connection], T], *, transaction: bool) -> T:
        """Run `fn` with a connection (blocking; called in a worker thread)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Close every connection."""

    @abc.abstractmethod
    async def notify(self, channel: str, payload: str = "") -> None:
        """Wake the listeners of `channel` (in every process sharing this store) with `payload`
        (at most 4,000 bytes). A notification is best effort: listeners re-read the tables."""

    @abc.abstractmethod
    def listen(self, channel: str) -> AbstractAsyncContextManager[AsyncIterator[str]]:
        """``async with store.listen(channel) as payloads: async for payload in payloads: ...``;
        an empty payload (``""``) also comes after the listener had to connect again, when
        notifications may have been missed."""

    def describe(self) -> dict[str, Any]:
        """Which store this is, for `hub config` and `hub status` (no secret)."""
        return {"backend": self.dialect, "location": self.where}

    # -- the async API -----------------------------------------------------------------------

    def check(self) -> None:
        """Raise `StoreLost` if the store is gone for good (the SQLite file was replaced)."""
        if self.lost is not None:
            raise self.lost

    async def run(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn(conn)`` in a worker thread with a connection to itself (autocommit)."""
        return await anyio.to_thread.run_sync(lambda: self._call(fn, transaction=False))

    async def transaction(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn(conn)`` atomically; an exception rolls everything back."""
        return await anyio.to_thread.run_sync(lambda: self._call(fn, transaction=True))

    async def execute(self, sql: str, params: Params = ()) -> int:
        """Run one statement; returns the number of rows changed."""
        return await self.run(lambda conn: conn.execute(sql, params).rowcount)

    async def fetchall(self, sql: str, params: Params = ()) -> list[Any]:
        return await self.run(lambda conn: conn.execute(sql, params).fetchall())

    async def fetchone(self, sql: str, params: Params = ()) -> Any:
        return await self.run(lambda conn: conn.execute(sql, params).fetchone())

    async def wait_available(self, *, first_s: float = 0.2, most_s: float = 5.0) -> None:
        """Return once the store answers again (a `StoreUnavailable` problem cleared), trying at
        growing intervals; `StoreLost` is raised at once."""
        delay = first_s
        while True:
            self.check()
            try:
                await self.run(lambda conn: conn.execute("SELECT 1").fetchone())
                return
            except StoreUnavailable:
                await anyio.sleep(delay)
                delay = min(most_s, delay * 2)

    # -- migrations --------------------------------------------------------------------------

    async def migrate(self, component: str, migrations: Sequence[Migration]) -> int:
        """Apply `component`'s migrations not yet applied; returns the schema version now in place.

        Migration *i* (1-based) is applied once, in one transaction with its version row (hubs
        starting together apply each once). Never edit a shipped migration: append a new one.
        """
        return await anyio.to_thread.run_sync(self.migrate_sync, component, migrations)

    def migrate_sync(self, component: str, migrations: Sequence[Migration]) -> int:
        return self._call(lambda conn: self._migrate(conn, component, migrations), transaction=True)

    def _migrate(self, conn: Connection, component: str, migrations: Sequence[Migration]) -> int:
        conn.lock("schema_migrations")
        row = conn.execute(
            "SELECT COALESCE(MAX(version), 0) FROM schema_migrations WHERE component = ?", (component,)
        ).fetchone()
        current = int(row[0])
        if current > len(migrations):
            raise RuntimeError(
                f"{self.where}: {component} schema is at version {current}, newer than this hub "
                f"knows ({len(migrations)}); upgrade the hub or use another store"
            )
        for version, migration in enumerate(migrations[current:], start=current + 1):
            script = migration if isinstance(migration, str) else migration[self.dialect]
            try:
                self._script(conn, script)
            except StoreError:
                raise
            except Exception as exc:
                if not self._is_sql_fault(exc):
                    raise
                raise RuntimeError(f"{component} migration {version} failed: {exc}") from exc
            conn.execute(
                "INSERT INTO schema_migrations (component, version) VALUES (?, ?)", (component, version)
            )
        return len(migrations)

    @abc.abstractmethod
    def _script(self, conn: Connection, script: str) -> None:
        """Run a migration's statements in the open transaction."""

    @abc.abstractmethod
    def _is_sql_fault(self, exc: BaseException) -> bool:
        """Whether `exc` is the SQL's own fault (a bad statement), not the store's."""

    async def schema_versions(self) -> dict[str, int]:
        rows = await self.fetchall(
            "SELECT component, MAX(version) AS v FROM schema_migrations GROUP BY component"
        )
        return {row["component"]: row["v"] for row in rows}


BOOTSTRAP = f"""
CREATE TABLE IF NOT EXISTS schema_migrations (
    component TEXT NOT NULL,
    version INTEGER NOT NULL,
    applied_at TEXT NOT NULL DEFAULT ({NOW_SQL}),
    PRIMARY KEY (component, version)
);
"""
