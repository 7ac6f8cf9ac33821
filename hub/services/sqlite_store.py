"""The SQLite backend of the store (`hub.services.store`): one file under `state_dir`, the default.

SQLite calls block, so each runs in a worker thread; one lock serialises them because a single
connection is shared. WAL mode lets `hub statusline` and other readers work while the hub
writes. Transactions are `BEGIN IMMEDIATE`: a read-then-write is atomic even against another
process using the same file, so `conn.lock(name)` has nothing more to do.

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

Notifications go between the processes of this machine as datagrams on Unix sockets (Linux's
abstract namespace, else a private temporary directory): each listener leaves a file naming its
socket in `<state_dir>/notify/`, and `notify` sends to every one there (a file whose socket is
gone is removed).
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import socket
import sqlite3
import sys
import tempfile
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import anyio

from hub.config.paths import open_private, private_dir
from hub.errors import StoreError, StoreLost
from hub.services.store import BOOTSTRAP, SQLITE, Connection, Cursor, Params, Store

__all__ = ["SQLiteStore", "store_error"]

T = TypeVar("T")

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


class SQLiteConnection(Connection):
    """`Connection` over a `sqlite3.Connection` (rows are `sqlite3.Row`)."""

    dialect = "sqlite"

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.raw = conn

    def execute(self, sql: str, params: Params = ()) -> Cursor:
        return self.raw.execute(sql, _plain(params))

    def executemany(self, sql: str, seq: Sequence[Params]) -> None:
        self.raw.executemany(sql, [_plain(p) for p in seq])

    def insert(self, sql: str, params: Params = ()) -> int:
        cursor = self.raw.execute(sql, _plain(params))
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def lock(self, name: str) -> None:
        """Nothing to do: `BEGIN IMMEDIATE` holds the database's write lock already."""


def _plain(params: Params) -> Any:
    return params


def _greatest(*values: Any) -> Any:
    present = [v for v in values if v is not None]
    return max(present) if len(present) == len(values) else None


def _least(*values: Any) -> Any:
    present = [v for v in values if v is not None]
    return min(present) if len(present) == len(values) else None


class SQLiteStore(Store):
    """The store in one SQLite file (see the module doc)."""

    dialect = "sqlite"
    sql = SQLITE

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self.lost = None
        self.problem = None
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
            conn.create_function("greatest", -1, _greatest, deterministic=True)
            conn.create_function("least", -1, _least, deterministic=True)
            conn.executescript(BOOTSTRAP)
        except (sqlite3.Error, OSError) as exc:
            if conn is not None:
                conn.close()
            if not existed:  # nothing half-made is left for the next start to trip on
                for suffix in ("", *_SIDE_FILES):
                    with contextlib.suppress(OSError):
                        os.unlink(path.with_name(path.name + suffix))
            raise store_error(path, exc) from None
        self._conn = conn
        self._wrapped = SQLiteConnection(conn)
        self._identity = _identity(path)
        self._notify_dir = path.parent / "notify"

    @classmethod
    def in_state_dir(cls, state_dir: Path) -> SQLiteStore:
        return cls(state_dir / "hub.sqlite")

    @property
    def where(self) -> str:
        return str(self.path)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def check(self) -> None:
        """Raise `StoreLost` if the file at `path` is no longer the one this store opened
        (deleted, or replaced by another), and from then on always. One `stat`."""
        if self.lost is None and _identity(self.path) != self._identity:
            self.lost = _lost(self.path)
        if self.lost is not None:
            raise self.lost

    def _call(self, fn: Callable[[Connection], T], *, transaction: bool) -> T:
        with self._lock:
            self.check()
            try:
                if not transaction:
                    return fn(self._wrapped)
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    result = fn(self._wrapped)
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

    def _script(self, conn: Connection, script: str) -> None:
        for statement in _statements(script):
            conn.execute(statement)

    def _is_sql_fault(self, exc: BaseException) -> bool:
        return isinstance(exc, sqlite3.Error) and not _is_environmental(exc)

    # -- notifications between the processes of this machine ------------------------------

    async def notify(self, channel: str, payload: str = "") -> None:
        message = f"{channel}\n{payload}".encode()
        try:
            names = os.listdir(self._notify_dir)
        except OSError:
            return
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender:
            sender.setblocking(False)
            for name in names:
                marker = self._notify_dir / name
                try:
                    address = marker.read_text()
                    sender.sendto(message, _address(address))
                except (ConnectionRefusedError, FileNotFoundError):
                    with contextlib.suppress(OSError):
                        marker.unlink()  # its listener is gone
                except OSError:
                    pass  # a full queue, a marker being written: best effort

    @contextlib.asynccontextmanager
    async def listen(self, channel: str) -> AsyncIterator[AsyncIterator[str]]:
        private_dir(self._notify_dir)
        token = secrets.token_hex(8)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        address, path = _bind_address(token)
        marker = self._notify_dir / token
        try:
            sock.bind(_address(address))
            sock.setblocking(False)
            marker.write_text(address)
            yield _datagrams(sock, channel)
        finally:
            sock.close()
            for leftover in (marker, path):
                if leftover is not None:
                    with contextlib.suppress(OSError):
                        leftover.unlink()


def _bind_address(token: str) -> tuple[str, Path | None]:
    """(address as written in the marker, a socket file to remove afterwards)."""
    if sys.platform.startswith("linux"):
        return f"@hub-notify-{token}", None
    folder = private_dir(Path(tempfile.gettempdir()) / f"hub-notify-{os.getuid()}")
    path = folder / token
    return str(path), path


def _address(text: str) -> str | bytes:
    return b"\0" + text[1:].encode() if text.startswith("@") else text


async def _datagrams(sock: socket.socket, channel: str) -> AsyncIterator[str]:
    while True:
        await anyio.wait_readable(sock)
        try:
            data = sock.recv(65536)
        except BlockingIOError:
            continue
        name, _, payload = data.decode(errors="replace").partition("\n")
        if name == channel:
            yield payload


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
