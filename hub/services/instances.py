"""Hub processes sharing one state directory: who is alive, who owns what, who cleans up after whom.

Several hubs on one `state_dir` is the normal case (one per Claude Code window, `hub statusline`,
nested hubs). Each hub registers itself here (`hub_instances`: an instance id, pid, the pid's
start time, host, heartbeat) and stamps every piece of live work it starts with its instance id.
Another hub cleans up only what belongs to an instance that is *provably* dead:

- on this host: its pid is gone (or a zombie), or the pid now belongs to another process (the
  start time recorded at registration differs: Linux `/proc/PID/stat` plus the boot id);
- on another host (a PostgreSQL store, or a shared network directory): its heartbeat is older
  than `[liveness] dead_after_s` (`STALE_S` by default). A hub that could not reach the store
  itself judges nobody by heartbeat until it has had the store again for that long, since nobody
  could write one meanwhile (`Instances.seen_store_since`);
- or it stopped and said so (`stopped_at`), having settled its own work (`clean`).

Recovery of a dead instance's work is split by component (each plugin, the budget) and claimed
in one transaction holding the store's `recovery` lock (`hub_recoveries`), so two hubs never both
recover the same work, and a hub that dies while recovering is itself recovered from later. A
hub taken for dead that comes back (its store was away longer than `dead_after_s`) forgets the
recoveries of it (`heartbeat`), so its later work is recovered again if it dies.

Each instance also says what it is (`role`: serve, shared, worker) and the work it can take and
has (`work`, by plugin: ``{"pool": {"capacity": 4, "busy": 1, "unit": "slots"}}``), written with
its heartbeat, for `hub status`.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hub.services.store import Connection, Store

__all__ = [
    "HEARTBEAT_S",
    "STALE_S",
    "Instance",
    "Instances",
    "process_alive",
    "process_start_token",
]

# How often a hub writes its heartbeat, and how old a heartbeat must be before a hub on another
# host is taken for dead. On this host, liveness is read from the process table instead.
HEARTBEAT_S = 2.0
STALE_S = 30.0
# Rows of instances that ended this long ago are removed at start.
KEEP_S = 7 * 24 * 3600.0

MIGRATIONS = [
    """
    CREATE TABLE hub_instances (
        id TEXT PRIMARY KEY,
        pid INTEGER NOT NULL,
        pid_start TEXT,
        host TEXT NOT NULL,
        cwd TEXT NOT NULL,
        version TEXT NOT NULL,
        started_at REAL NOT NULL,
        heartbeat_at REAL NOT NULL,
        stopped_at REAL,
        clean INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE hub_recoveries (
        instance_id TEXT NOT NULL,
        component TEXT NOT NULL,
        by_instance TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('claimed', 'done')),
        at REAL NOT NULL,
        PRIMARY KEY (instance_id, component)
    );
    """,
    # A shared hub process (`hub.launch.shared_process`) records the launch it serves, its socket and its sessions.
    """
    ALTER TABLE hub_instances ADD COLUMN share_key TEXT;
    ALTER TABLE hub_instances ADD COLUMN socket TEXT;
    ALTER TABLE hub_instances ADD COLUMN sessions INTEGER NOT NULL DEFAULT 0;
    """,
    # What each instance is (`hub serve`, a shared process, `hub worker`) and the work it can take.
    """
    ALTER TABLE hub_instances ADD COLUMN role TEXT NOT NULL DEFAULT 'serve';
    ALTER TABLE hub_instances ADD COLUMN work_json TEXT NOT NULL DEFAULT '{}';
    """,
]


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


_BOOT_ID = _boot_id()


def process_start_token(pid: int) -> str | None:
    """Something that tells this process from a later one given the same pid: on Linux, the boot
    id and the start time in clock ticks; None where that cannot be read (then liveness falls back
    to the pid and the heartbeat). A zombie has no token: it is dead."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()
    if not fields or fields[0] in ("Z", "X"):
        return None
    return f"{_BOOT_ID}:{fields[19]}"


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def process_alive(pid: int, start_token: str | None) -> bool:
    """Is the process that had `start_token` when it was recorded still running as `pid`?"""
    if pid <= 0:
        return False
    if Path("/proc/self/stat").exists():  # Linux: exact
        current = process_start_token(pid)
        if current is None:
            return False
        return start_token is None or current == start_token
    return _pid_exists(pid)


@dataclass(frozen=True)
class Instance:
    """One hub process as recorded in the store."""

    id: str
    pid: int
    pid_start: str | None
    host: str
    cwd: str
    version: str
    started_at: float
    heartbeat_at: float
    stopped_at: float | None
    clean: bool
    share_key: str | None = None
    socket: str | None = None
    sessions: int = 0
    role: str = "serve"
    work: dict[str, Any] | None = None
    # How old a heartbeat of another host may be, and since when it can be judged at all.
    dead_after_s: float = STALE_S
    judged_from: float = 0.0

    @classmethod
    def from_row(cls, row: Any, dead_after_s: float = STALE_S, judged_from: float = 0.0) -> Instance:
        keys = row.keys()
        return cls(
            id=row["id"],
            pid=row["pid"],
            pid_start=row["pid_start"],
            host=row["host"],
            cwd=row["cwd"],
            version=row["version"],
            started_at=row["started_at"],
            heartbeat_at=row["heartbeat_at"],
            stopped_at=row["stopped_at"],
            clean=bool(row["clean"]),
            share_key=row["share_key"],
            socket=row["socket"],
            sessions=row["sessions"],
            role=row["role"] if "role" in keys else "serve",
            work=json.loads(row["work_json"]) if "work_json" in keys and row["work_json"] else {},
            dead_after_s=dead_after_s,
            judged_from=judged_from,
        )

    def alive(self, now: float | None = None) -> bool:
        """Provably alive or not, by the rules in this module's docstring."""
        if self.stopped_at is not None:
            return False
        now = time.time() if now is None else now
        if self.host == socket.gethostname():
            if not process_alive(self.pid, self.pid_start):
                return False
            # A pid we cannot tell from a reused one (no start token) also needs a fresh heartbeat.
            return self.pid_start is not None or self._fresh(now)
        return self._fresh(now)

    def _fresh(self, now: float) -> bool:
        return now - max(self.heartbeat_at, self.judged_from) < self.dead_after_s

    def describe(self) -> dict[str, Any]:
        """What a tool result says about the hub that owns something."""
        return {"instance": self.id, "pid": self.pid, "host": self.host, "cwd": self.cwd, "role": self.role}


class Instances:
    """This hub's registration, its heartbeat, and what it knows of the others."""

    def __init__(
        self,
        store: Store,
        *,
        version: str,
        role: str = "serve",
        heartbeat_s: float = HEARTBEAT_S,
        dead_after_s: float = STALE_S,
    ) -> None:
        self.store = store
        self.id = secrets.token_hex(4)
        self.pid = os.getpid()
        self.version = version
        self.role = role
        self.heartbeat_s = heartbeat_s
        self.dead_after_s = dead_after_s
        # Since when this hub has had the store without a break (see the module doc).
        self.seen_store_since = time.time()
        self._away = False
        self.work: dict[str, dict[str, Any]] = {}

    def _instance(self, row: Any) -> Instance:
        return Instance.from_row(row, self.dead_after_s, self.seen_store_since)

    def store_away(self) -> None:
        """The store could not be reached: heartbeats of others say nothing until it is back."""
        self._away = True

    async def register(self) -> None:
        await self.store.migrate("instances", MIGRATIONS)
        now = time.time()
        await self.store.execute(
            "INSERT INTO hub_instances (id, pid, pid_start, host, cwd, version, started_at, heartbeat_at, "
            "role) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                self.id,
                self.pid,
                process_start_token(self.pid),
                socket.gethostname(),
                os.getcwd(),
                self.version,
                now,
                now,
                self.role,
            ),
        )
        await self.store.execute(
            "DELETE FROM hub_instances WHERE COALESCE(stopped_at, heartbeat_at) < ? AND id != ?",
            (now - KEEP_S, self.id),
        )

    async def heartbeat(self) -> None:
        """Write this hub's heartbeat and work; after the store was away, start judging others
        again from now, and forget that others took this hub for dead meanwhile."""
        changed = await self.store.execute(
            "UPDATE hub_instances SET heartbeat_at = ?, work_json = ? WHERE id = ?",
            (time.time(), json.dumps(self.work, sort_keys=True), self.id),
        )
        if self._away:
            self._away = False
            self.seen_store_since = time.time()
            await self.store.execute("DELETE FROM hub_recoveries WHERE instance_id = ?", (self.id,))
        if not changed:  # removed while away (or never written): be known again
            await self.register()

    def set_work(self, plugin: str, capacity: int, busy: int, unit: str) -> None:
        """What `plugin` can take at once here and has now; written with the next heartbeat."""
        self.work[plugin] = {"capacity": capacity, "busy": busy, "unit": unit}

    async def mark_shared(self, key: str, socket: str) -> None:
        """This hub is the shared process of launch `key` (`hub.launch.shared_process`), listening on `socket`."""
        await self.store.execute(
            "UPDATE hub_instances SET share_key = ?, socket = ? WHERE id = ?", (key, socket, self.id)
        )

    async def set_sessions(self, count: int) -> None:
        await self.store.execute("UPDATE hub_instances SET sessions = ? WHERE id = ?", (count, self.id))

    async def stop(self, *, clean: bool) -> None:
        """Record that this hub stopped; `clean`: it settled all of its own work first."""
        await self.store.execute(
            "UPDATE hub_instances SET stopped_at = ?, clean = ? WHERE id = ?",
            (time.time(), int(clean), self.id),
        )

    async def get(self, instance_id: str) -> Instance | None:
        row = await self.store.fetchone("SELECT * FROM hub_instances WHERE id = ?", (instance_id,))
        return None if row is None else self._instance(row)

    async def all(self) -> list[Instance]:
        rows = await self.store.fetchall("SELECT * FROM hub_instances ORDER BY started_at")
        return [self._instance(row) for row in rows]

    async def live(self) -> list[Instance]:
        """Every hub process alive now, this one included."""
        rows = await self.store.fetchall(
            "SELECT * FROM hub_instances WHERE stopped_at IS NULL ORDER BY started_at"
        )
        now = time.time()
        return [i for i in (self._instance(row) for row in rows) if i.alive(now)]

    async def is_alive(self, instance_id: str | None) -> bool:
        """Whether the owner `instance_id` is alive; an unknown or empty owner is not."""
        if not instance_id:
            return False
        if instance_id == self.id:
            return True
        instance = await self.get(instance_id)
        return instance is not None and instance.alive()

    async def needing_recovery(self, component: str) -> list[Instance]:
        """Dead instances whose `component` work nobody has recovered yet (nor is recovering,
        unless the hub doing it died too)."""
        rows = await self.store.fetchall(
            "SELECT i.*, r.state AS r_state, r.by_instance AS r_by FROM hub_instances i "
            "LEFT JOIN hub_recoveries r ON r.instance_id = i.id AND r.component = ? "
            "WHERE i.id != ? AND i.clean = 0 AND (r.state IS NULL OR r.state = 'claimed')",
            (component, self.id),
        )
        now = time.time()
        dead = []
        for row in rows:
            instance = self._instance(row)
            if instance.alive(now):
                continue
            if row["r_state"] == "claimed" and row["r_by"] != self.id and await self.is_alive(row["r_by"]):
                continue  # another live hub is on it
            dead.append(instance)
        return dead

    async def claim(self, instance_id: str, component: str) -> bool:
        """Take on recovering `component`'s work of dead `instance_id`; False if another live hub
        has it or it is done. Atomic across processes."""

        def claim(conn: Connection) -> tuple[str | None, str | None]:
            row = conn.execute(
                "SELECT state, by_instance FROM hub_recoveries WHERE instance_id = ? AND component = ?",
                (instance_id, component),
            ).fetchone()
            return (row["state"], row["by_instance"]) if row else (None, None)

        state, by = await self.store.run(claim)
        if state == "done" or (state == "claimed" and by != self.id and await self.is_alive(by)):
            return False

        def write(conn: Connection) -> bool:
            conn.lock("recovery")
            row = conn.execute(
                "SELECT state, by_instance FROM hub_recoveries WHERE instance_id = ? AND component = ?",
                (instance_id, component),
            ).fetchone()
            if row is not None and (row["state"], row["by_instance"]) != (state, by):
                return False  # someone else moved first
            conn.execute(
                "INSERT INTO hub_recoveries (instance_id, component, by_instance, state, at) "
                "VALUES (?, ?, ?, 'claimed', ?) ON CONFLICT (instance_id, component) DO UPDATE SET "
                "by_instance = excluded.by_instance, state = 'claimed', at = excluded.at",
                (instance_id, component, self.id, time.time()),
            )
            return True

        return await self.store.transaction(write)

    async def done(self, instance_id: str, component: str) -> None:
        await self.store.execute(
            "UPDATE hub_recoveries SET state = 'done', at = ? WHERE instance_id = ? AND component = ?",
            (time.time(), instance_id, component),
        )
