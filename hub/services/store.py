"""The hub's one SQLite database: every plugin's persistent state lives here.

SQLite calls block, so each runs in a worker thread; one lock serialises them because a
single connection is shared. WAL mode lets `hub statusline` and other readers work while the
hub writes. Each component owns a list of migrations (plain SQL scripts, applied in order once
each, recorded in `schema_migrations`), so a plugin's schema grows without touching anyone else's.

The database holds secrets (remote servers' OAuth tokens, `hub.client.tokens`), so its directory
is made private (0700) and the database and its `-wal` and `-shm` files are created 0600 (an
existing file is narrowed to 0600 when opened).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import anyio.to_thread

__all__ = ["Store"]

T = TypeVar("T")

_BOOTSTRAP = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    component TEXT NOT NULL,
    version INTEGER NOT NULL,
    applied_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    PRIMARY KEY (component, version)
);
"""


class Store:
    """A SQLite database usable from async code.

    ``await store.fetchall(sql, params)``, ``await store.execute(sql, params)`` and
    ``await store.transaction(fn)`` (``fn(conn)`` runs inside ``BEGIN IMMEDIATE``, so a
    read-then-write is atomic even against another process using the same file).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        _make_private(path)
        self._lock = threading.Lock()
        # isolation_level=None: we issue BEGIN ourselves, so transactions are explicit. SQLite
        # creates the -wal and -shm files with the database file's mode.
        mask = os.umask(0o077)
        try:
            self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
        finally:
            os.umask(mask)
        self._conn.row_factory = sqlite3.Row
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute("PRAGMA foreign_keys=ON")
        self._conn.executescript(_BOOTSTRAP)

    @classmethod
    def in_state_dir(cls, state_dir: Path) -> Store:
        return cls(state_dir / "hub.sqlite")

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # -- sync core, run in a worker thread -------------------------------------------------

    def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        with self._lock:
            return fn(self._conn)

    def _in_transaction(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                result = fn(self._conn)
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")
            return result

    # -- async API ---------------------------------------------------------------------------

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(conn)`` in a worker thread with the connection to itself (autocommit)."""
        return await anyio.to_thread.run_sync(self._run, fn)

    async def transaction(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(conn)`` atomically; an exception rolls everything back."""
        return await anyio.to_thread.run_sync(self._in_transaction, fn)

    async def execute(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> int:
        """Run one statement; returns the number of rows changed."""
        return await self.run(lambda conn: conn.execute(sql, params).rowcount)

    async def fetchall(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[sqlite3.Row]:
        return await self.run(lambda conn: conn.execute(sql, params).fetchall())

    async def fetchone(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> sqlite3.Row | None:
        return await self.run(lambda conn: conn.execute(sql, params).fetchone())

    async def migrate(self, component: str, migrations: Sequence[str]) -> int:
        """Apply `component`'s migrations not yet applied; returns the schema version now in place.

        Migration *i* (1-based) is applied once, in its own transaction with its version row.
        Never edit a shipped migration: append a new one.
        """
        return await anyio.to_thread.run_sync(self.migrate_sync, component, migrations)

    def migrate_sync(self, component: str, migrations: Sequence[str]) -> int:
        with self._lock:
            # The version is read inside the write transaction: hubs starting together on one
            # store apply each migration once (the second one waits, then finds it applied).
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                row = self._conn.execute(
                    "SELECT COALESCE(MAX(version), 0) FROM schema_migrations WHERE component = ?",
                    (component,),
                ).fetchone()
                current = int(row[0])
                if current > len(migrations):
                    raise RuntimeError(
                        f"{self.path}: {component} schema is at version {current}, newer than this hub "
                        f"knows ({len(migrations)}); upgrade the hub or use another state_dir"
                    )
                for version, script in enumerate(migrations[current:], start=current + 1):
                    try:
                        for statement in _statements(script):
                            self._conn.execute(statement)
                    except sqlite3.Error as exc:
                        raise RuntimeError(f"{component} migration {version} failed: {exc}") from exc
                    self._conn.execute(
                        "INSERT INTO schema_migrations (component, version) VALUES (?, ?)",
                        (component, version),
                    )
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")
            return len(migrations)

    async def schema_versions(self) -> dict[str, int]:
        rows = await self.fetchall(
            "SELECT component, MAX(version) AS v FROM schema_migrations GROUP BY component"
        )
        return {row["component"]: row["v"] for row in rows}


def _make_private(path: Path) -> None:
    """The database's directory 0700 (created so), the database and its WAL files 0600 if they
    exist; a directory or file of another user is left as it is (a chmod it refuses)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with contextlib.suppress(PermissionError):
        os.chmod(path.parent, 0o700)
    for name in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        with contextlib.suppress(FileNotFoundError, PermissionError):
            os.chmod(name, 0o600)


def _statements(script: str) -> list[str]:
    """The statements of an SQL script, split where SQLite says a statement is complete (so a
    trigger's body stays whole), for running them one by one inside a transaction."""
    statements, current = [], ""
    for piece in script.split(";"):
        current += piece + ";"
        if sqlite3.complete_statement(current):
            if current.strip().strip(";").strip():
                statements.append(current)
            current = ""
    if current.strip().strip(";").strip():
        statements.append(current)
    return statements
