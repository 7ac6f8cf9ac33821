"""The hub's one SQLite database: every plugin's persistent state lives here.

SQLite calls block, so each runs in a worker thread; one lock serialises them because a
single connection is shared. WAL mode lets `hub statusline` and other readers work while the
hub writes. Each component owns a list of migrations (plain SQL scripts, applied in order once
each, recorded in `schema_migrations`), so a plugin's schema grows without touching anyone else's.

Faults are said, never raised raw (`hub.errors.StoreError`: one sentence naming the file, the
cause and the fix): a state directory that is full, read-only or not writable, a file that is
not a database or is damaged, a lock held too long. Opening leaves nothing behind on failure
(a database this call created is removed), and a failed transaction is rolled back, its COMMIT
included. The file is private (0600, in a 0700 directory; SQLite gives its -wal and -shm files
the database's mode).

The file's identity (device and inode, taken when it was opened) is checked before every
operation, one `stat`: a database deleted or replaced while the hub runs would otherwise take
this hub's writes into a file no other hub sees (a split brain: two ledgers, one cap), so from
then on every operation raises `StoreLost` and the hub stops using it (`hub.host.Hub` reports
it; a shared process exits so that the next bridge starts one on the new file).
"""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import anyio.to_thread

from hub.config.paths import open_private, private_dir
from hub.errors import StoreError, StoreLost

__all__ = ["Store", "store_error"]

T = TypeVar("T")

_BOOTSTRAP = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    component TEXT NOT NULL,
    version INTEGER NOT NULL,
    applied_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    PRIMARY KEY (component, version)
);
"""
BUSY_TIMEOUT_S = 30
ELSEWHERE = "or set another state directory (--state-dir, HUB_STATE_DIR or state_dir in hub.toml)"
# SQLite result codes that mean the file or its filesystem, not the SQL, is the problem.
_ENVIRONMENT = ("SQLITE_FULL", "SQLITE_READONLY", "SQLITE_IOERR", "SQLITE_CORRUPT", "SQLITE_NOTADB")
_ENVIRONMENT_TOO = ("SQLITE_CANTOPEN", "SQLITE_PERM", "SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_NOLFS")
_SIDE_FILES = ("-wal", "-shm", "-journal")


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_dev, info.st_ino


def _is_environmental(exc: BaseException) -> bool:
    if isinstance(exc, OSError):
        return True
    name = getattr(exc, "sqlite_errorname", None) or ""
    return name.startswith(_ENVIRONMENT + _ENVIRONMENT_TOO)


def _cause(path: Path, exc: BaseException) -> tuple[str, str]:
    """(what is wrong, the fix) for an OSError or a SQLite error that is not the SQL's fault."""
    directory = path.parent
    name = getattr(exc, "sqlite_errorname", None) or ""
    code = exc.errno if isinstance(exc, OSError) else None
    detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    if name.startswith(("SQLITE_NOTADB", "SQLITE_CORRUPT")):
        return (
            f"is not a SQLite database or is damaged ({detail})",
            f"move it aside (mv {path} {path}.broken) and start again, which starts an empty store "
            f"(restore the file from a backup to keep its ledger, tasks and context), {ELSEWHERE}",
        )
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
        return (
            f"stayed locked by another process for over {BUSY_TIMEOUT_S} s ({detail})",
            f"see `hub status` for the hubs on this state directory and stop one that hangs, {ELSEWHERE}",
        )
    try:
        fs = os.statvfs(directory if directory.exists() else _existing_parent(directory))
    except OSError:
        fs = None
    if code == errno.ENOSPC or name.startswith("SQLITE_FULL") or (fs is not None and fs.f_bavail == 0):
        return (
            f"cannot be written: the filesystem holding {directory} is full ({detail})",
            f"free space on it, {ELSEWHERE}",
        )
    if code == errno.EROFS or (fs is not None and fs.f_flag & os.ST_RDONLY):
        return (
            f"cannot be written: {directory} is on a read-only filesystem ({detail})",
            f"make it writable, {ELSEWHERE}",
        )
    if code in (errno.EACCES, errno.EPERM) or name.startswith(
        ("SQLITE_READONLY", "SQLITE_PERM", "SQLITE_CANTOPEN")
    ):
        return (
            f"cannot be written: permission denied in {directory} ({detail})",
            f"give this user ({_user()}) write access to it and to the files in it, {ELSEWHERE}",
        )
    if code in (errno.ENOTDIR, errno.EEXIST):
        return f"cannot be created: {directory} is not a directory ({detail})", ELSEWHERE.removeprefix("or ")
    return f"cannot be used ({detail})", f"check the file and its directory, {ELSEWHERE}"


def _existing_parent(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _user() -> str:
    try:
        import pwd

        return pwd.getpwuid(os.getuid()).pw_name
    except (ImportError, KeyError):
        return f"uid {os.getuid()}"


def store_error(path: Path, exc: BaseException) -> StoreError:
    """The `StoreError` for a fault of the file at `path` or its filesystem: one sentence."""
    what, fix = _cause(path, exc)
    return StoreError(f"the hub's store {path} {what}: {fix}.")


def _lost(path: Path) -> StoreLost:
    return StoreLost(
        f"the hub's store {path} was deleted or replaced by another file while this hub was "
        "running, so it stopped using it (its writes would go to a file no other hub sees): "
        "restart the hubs on this state directory (`hub stop --all`, or restart the client that "
        "started them), and they open the file now at that path."
    )


class Store:
    """A SQLite database usable from async code.

    ``await store.fetchall(sql, params)``, ``await store.execute(sql, params)`` and
    ``await store.transaction(fn)`` (``fn(conn)`` runs inside ``BEGIN IMMEDIATE``, so a
    read-then-write is atomic even against another process using the same file).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self.lost: StoreLost | None = None
        existed = os.path.lexists(path)
        conn: sqlite3.Connection | None = None
        try:
            private_dir(path.parent)
            os.close(open_private(path, os.O_RDWR | os.O_CREAT))  # 0600 before SQLite makes it
            for suffix in _SIDE_FILES:  # an older hub's, made under umask 022
                with contextlib.suppress(FileNotFoundError):
                    os.close(open_private(path.with_name(path.name + suffix), os.O_RDONLY))
            # isolation_level=None: we issue BEGIN ourselves, so transactions are explicit.
            conn = sqlite3.connect(
                path, check_same_thread=False, isolation_level=None, timeout=BUSY_TIMEOUT_S
            )
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.executescript(_BOOTSTRAP)
        except (sqlite3.Error, OSError) as exc:
            if conn is not None:
                conn.close()
            if not existed:  # nothing half-made is left for the next start to trip on
                for suffix in ("", *_SIDE_FILES):
                    with contextlib.suppress(OSError):
                        os.unlink(path.with_name(path.name + suffix))
            raise store_error(path, exc) from None
        self._conn = conn
        self._identity = _identity(path)

    @classmethod
    def in_state_dir(cls, state_dir: Path) -> Store:
        return cls(state_dir / "hub.sqlite")

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # -- sync core, run in a worker thread -------------------------------------------------

    def check(self) -> None:
        """Raise `StoreLost` if the file at `path` is no longer the one this store opened
        (deleted, or replaced by another), and from then on always. One `stat`."""
        if self.lost is None and _identity(self.path) != self._identity:
            self.lost = _lost(self.path)
        if self.lost is not None:
            raise self.lost

    def _guarded(self, fn: Callable[[sqlite3.Connection], T], *, transaction: bool) -> T:
        with self._lock:
            self.check()
            try:
                if not transaction:
                    return fn(self._conn)
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    result = fn(self._conn)
                    self._conn.execute("COMMIT")  # a full disk fails here: rolled back below
                except BaseException:
                    self._rollback()
                    raise
                return result
            except (sqlite3.Error, OSError) as exc:
                if not _is_environmental(exc):
                    raise  # the SQL's own fault (a constraint, a missing table): the caller's bug
                raise store_error(self.path, exc) from exc

    def _rollback(self) -> None:
        # SQLite may have rolled back already (on SQLITE_FULL, for one): never mask the cause.
        if self._conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("ROLLBACK")

    def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return self._guarded(fn, transaction=False)

    def _in_transaction(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return self._guarded(fn, transaction=True)

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
        # The version is read inside the write transaction: hubs starting together on one
        # store apply each migration once (the second one waits, then finds it applied).
        return self._in_transaction(lambda conn: self._migrate(conn, component, migrations))

    def _migrate(self, conn: sqlite3.Connection, component: str, migrations: Sequence[str]) -> int:
        row = conn.execute(
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
                    conn.execute(statement)
            except sqlite3.Error as exc:
                if _is_environmental(exc):
                    raise
                raise RuntimeError(f"{component} migration {version} failed: {exc}") from exc
            conn.execute(
                "INSERT INTO schema_migrations (component, version) VALUES (?, ?)",
                (component, version),
            )
        return len(migrations)

    async def schema_versions(self) -> dict[str, int]:
        rows = await self.fetchall(
            "SELECT component, MAX(version) AS v FROM schema_migrations GROUP BY component"
        )
        return {row["component"]: row["v"] for row in rows}


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
