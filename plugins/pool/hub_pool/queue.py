"""The pool's queue: the `pool_tasks` table itself, shared by every hub and `hub worker` on a store.

A task is queued by any hub (`submit`: a row in `queued`, in a named queue, with the hub that
asked as its `submitter`); a free slot anywhere that serves the queue claims the oldest one
(`claim`: one transaction, ``SELECT ... FOR UPDATE SKIP LOCKED`` on PostgreSQL, so two workers
never take the same row and neither waits for the other; SQLite's transaction is alone anyway)
and becomes its `owner`. Everything about a task that its runner needs is in the row: the prompt,
the model, the system prompt with the shared context of the project that asked, its time limit
and its reservation (a durable one, so it outlives the submitting hub while a worker runs it).

The wake-up is the store's notifications (PostgreSQL `NOTIFY` / `LISTEN`, or datagrams between
the processes of one machine on SQLite), on one channel, `pool`: ``{"e": "queued", "q": queue}``
wakes free slots, ``{"e": "ended", "t": id}`` wakes whoever waits for a task, ``{"e": "cancel",
"t": id}`` reaches the owner running it. Notifications are only a wake-up: every decision is read
from the rows, and a slow sweep (`SWEEP_S`) catches what a lost notification would have said.

This is the technique of procrastinate (a PostgreSQL task queue: a jobs table, `FOR UPDATE SKIP
LOCKED`, `LISTEN/NOTIFY`), kept in the pool's own table rather than procrastinate's: the rows are
already the truth that `pool_result` reads from any hub, the same code runs on SQLite, and
cancelling means killing a process group on the machine that runs it (docs/several-machines.md).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hub import PluginContext, Store

CHANNEL = "pool"
OPEN = ("queued", "running")
# How often a pool looks again without being told (a notification lost while reconnecting).
SWEEP_S = 5.0


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def notify(store: Store, event: str, **fields: Any) -> None:
    await store.notify(CHANNEL, json.dumps({"e": event, **fields}))


def parse(payload: str) -> dict[str, Any]:
    """A notification's fields; {} for an empty payload (the listener connected again)."""
    try:
        value = json.loads(payload) if payload else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


async def claim(hub: PluginContext, queue: str, slots: list[str], host: str) -> list[dict[str, Any]]:
    """Take the oldest queued tasks of `queue`, one for each of `slots` (free slots of this hub),
    in one transaction; the rows taken, each with the `slot` it went to (fewer when fewer wait)."""
    store = hub.store
    skip_locked = store.sql.skip_locked
    me, started = hub.instance_id, now_iso()

    def take(conn: Any) -> list[dict[str, Any]]:
        rows = conn.execute(
            "SELECT * FROM pool_tasks WHERE status = 'queued' AND queue = ? "
            f"ORDER BY created_at, id LIMIT ?{skip_locked}",
            (queue, len(slots)),
        ).fetchall()
        taken = []
        for row, slot in zip(rows, slots, strict=False):
            conn.execute(
                "UPDATE pool_tasks SET status = 'running', owner = ?, slot = ?, worker_host = ?, "
                "started_at = ? WHERE id = ? AND status = 'queued'",
                (me, slot, host, started, row["id"]),
            )
            taken.append({**dict(row), "status": "running", "owner": me, "slot": slot, "worker_host": host})
        return taken

    return await store.transaction(take)


async def end_queued(
    hub: PluginContext, task_id: str, status: str, error: str, *, submitter: str | None = None
) -> bool:
    """End a task that is still queued (it never ran: $0, known) and release its reservation;
    False if a slot took it meanwhile (or it had ended). Only `submitter`'s, when given."""
    sql = (
        "UPDATE pool_tasks SET status = ?, error = ?, ended_at = ?, spend_usd = 0, spend_known = 1 "
        "WHERE id = ? AND status = 'queued'"
    )
    params: list[Any] = [status, error, now_iso(), task_id]
    if submitter is not None:
        sql += " AND submitter = ?"
        params.append(submitter)
    row = await hub.store.fetchone("SELECT reservation_id FROM pool_tasks WHERE id = ?", (task_id,))
    if not await hub.store.execute(sql, params):
        return False
    if row is not None and row["reservation_id"]:
        reservation = await hub.budget.reservation(row["reservation_id"])
        if reservation is not None:
            await reservation.release()
    await notify(hub.store, "ended", t=task_id)
    return True


async def queued_of(hub: PluginContext, submitter: str) -> list[str]:
    rows = await hub.store.fetchall(
        "SELECT id FROM pool_tasks WHERE status = 'queued' AND submitter = ? ORDER BY created_at, id",
        (submitter,),
    )
    return [row["id"] for row in rows]


async def count_queued(store: Store, queue: str) -> int:
    """How many tasks wait in `queue`, for a slot of any hub or worker serving it."""
    found = await store.fetchone(
        "SELECT COUNT(*) AS n FROM pool_tasks WHERE status = 'queued' AND queue = ?", (queue,)
    )
    return int(found["n"]) if found is not None else 0


async def queued_rows(store: Store, queue: str, limit: int) -> list[dict[str, Any]]:
    """The oldest tasks waiting in `queue`, in the order slots take them (the dashboard's queue)."""
    rows = await store.fetchall(
        "SELECT id, prompt, created_at, submitter, reserved_usd FROM pool_tasks "
        "WHERE status = 'queued' AND queue = ? ORDER BY created_at, id LIMIT ?",
        (queue, limit),
    )
    return [dict(row) for row in rows]


async def queue_position(store: Store, row: dict[str, Any]) -> int | None:
    """1 for the next task its queue gives a free slot, ...; None when it is not queued."""
    if row["status"] != "queued" or row.get("queue") is None:
        return None
    found = await store.fetchone(
        "SELECT COUNT(*) AS n FROM pool_tasks WHERE status = 'queued' AND queue = ? "
        "AND (created_at < ? OR (created_at = ? AND id <= ?))",
        (row["queue"], row["created_at"], row["created_at"], row["id"]),
    )
    return int(found["n"]) if found is not None else None
