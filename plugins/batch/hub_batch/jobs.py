"""Jobs, their API batches ("parts") and every request's outcome, in the hub's store.

A job is what `send_to_batch` returns; it holds one API batch, or several when its requests are
over the API's limits (100,000 requests or 256 MB per batch). States:

- open: `submitting` (being sent), `in_progress`, `canceling`;
- ended: `succeeded` (every request succeeded), `partial` (some did), `failed` (none did, some
  errored), `canceled` (none did, some were canceled), `expired` (all expired).
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Sequence
from typing import Any

from hub import Store

OPEN_STATES = ("submitting", "in_progress", "canceling")
ENDED_STATES = ("succeeded", "partial", "failed", "canceled", "expired")
COUNT_KEYS = ("processing", "succeeded", "errored", "canceled", "expired")

MIGRATIONS = [
    """
    CREATE TABLE batch_jobs (
        id TEXT PRIMARY KEY,
        label TEXT,
        backend TEXT NOT NULL,
        state TEXT NOT NULL,
        model TEXT NOT NULL,
        request_count INTEGER NOT NULL DEFAULT 0,
        counts_json TEXT NOT NULL DEFAULT '{}',
        result_path TEXT NOT NULL,
        raw_path TEXT NOT NULL,
        reservation_id INTEGER,
        reserved_usd REAL NOT NULL DEFAULT 0,
        cost_usd REAL NOT NULL DEFAULT 0,
        error TEXT,
        poll_error TEXT,
        poll_attempts INTEGER NOT NULL DEFAULT 0,
        next_poll_at REAL NOT NULL DEFAULT 0,
        created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
        updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
        ended_at TEXT,
        fetched_at TEXT
    );
    CREATE INDEX batch_jobs_state ON batch_jobs (state);
    CREATE TABLE batch_parts (
        job_id TEXT NOT NULL REFERENCES batch_jobs (id) ON DELETE CASCADE,
        part INTEGER NOT NULL,
        remote_id TEXT,
        processing_status TEXT NOT NULL DEFAULT 'unsent',
        request_count INTEGER NOT NULL,
        size_bytes INTEGER NOT NULL,
        counts_json TEXT NOT NULL DEFAULT '{}',
        created_at TEXT,
        ended_at TEXT,
        expires_at TEXT,
        PRIMARY KEY (job_id, part)
    );
    CREATE TABLE batch_requests (
        job_id TEXT NOT NULL REFERENCES batch_jobs (id) ON DELETE CASCADE,
        custom_id TEXT NOT NULL,
        part INTEGER NOT NULL,
        model TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT 'pending',
        input_tokens INTEGER,
        output_tokens INTEGER,
        cache_creation_input_tokens INTEGER,
        cache_read_input_tokens INTEGER,
        cost_usd REAL,
        error TEXT,
        PRIMARY KEY (job_id, custom_id)
    );
    """,
    # Several hubs share one store (hub.instances): the hub submitting a job owns it until it is
    # sent; one hub at a time polls and downloads it (the lease); a part records when its create
    # call began, so a hub recovering after a crash mid-call can find the batch it made.
    """
    ALTER TABLE batch_jobs ADD COLUMN owner TEXT;
    ALTER TABLE batch_jobs ADD COLUMN lease_owner TEXT;
    ALTER TABLE batch_jobs ADD COLUMN lease_until REAL;
    ALTER TABLE batch_parts ADD COLUMN create_started_at REAL;
    """,
]


def final_state(counts: dict[str, int], total: int) -> str:
    """The honest end state of a job of `total` requests from its result counts (a request with
    no result at all, say from a batch that was never sent, counts against success too)."""
    succeeded = counts.get("succeeded", 0)
    if total and succeeded >= total:
        return "succeeded"
    if succeeded:
        return "partial"
    if counts.get("errored", 0):
        return "failed"
    if counts.get("canceled", 0):
        return "canceled"
    return "expired" if counts.get("expired", 0) else "failed"


def add_counts(parts: Iterable[dict[str, int]]) -> dict[str, int]:
    total = dict.fromkeys(COUNT_KEYS, 0)
    for counts in parts:
        for key in COUNT_KEYS:
            total[key] += int(counts.get(key, 0))
    return total


class Jobs:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def setup(self) -> None:
        await self.store.migrate("batch", MIGRATIONS)

    async def create(
        self,
        job_id: str,
        *,
        label: str | None,
        backend: str,
        model: str,
        result_path: str,
        raw_path: str,
        owner: str,
    ) -> None:
        await self.store.execute(
            "INSERT INTO batch_jobs (id, label, backend, state, model, result_path, raw_path, owner) "
            "VALUES (?, ?, ?, 'submitting', ?, ?, ?, ?)",
            (job_id, label, backend, model, result_path, raw_path, owner),
        )

    async def take_lease(self, job_id: str, me: str, until: float, holder_alive: Any) -> bool:
        """Become the one hub polling `job_id` (or stay it). A lease held by another hub is taken
        only when that hub is dead, or stopped renewing it (`until` long past). Atomic."""
        row = await self.store.fetchone(
            "SELECT lease_owner, lease_until FROM batch_jobs WHERE id = ?", (job_id,)
        )
        if row is None:
            return False
        holder, held_until = row["lease_owner"], row["lease_until"]
        if holder and holder != me and (held_until or 0) > time.time() and await holder_alive(holder):
            return False
        # Only while the job is open: a poller that just ended it has let its lease go.
        changed = await self.store.execute(
            "UPDATE batch_jobs SET lease_owner = ?, lease_until = ? WHERE id = ? AND lease_owner IS ? "
            "AND lease_until IS ? AND state IN ('in_progress', 'canceling')",
            (me, until, job_id, holder, held_until),
        )
        return changed == 1

    async def release_leases(self, owner: str) -> int:
        return await self.store.execute(
            "UPDATE batch_jobs SET lease_owner = NULL, lease_until = NULL WHERE lease_owner = ?", (owner,)
        )

    async def remote_ids(self) -> set[str]:
        """Every API batch any job has recorded."""
        rows = await self.store.fetchall("SELECT remote_id FROM batch_parts WHERE remote_id IS NOT NULL")
        return {row["remote_id"] for row in rows}

    async def add_requests(self, job_id: str, rows: Sequence[tuple[str, int, str]]) -> None:
        """(custom_id, part, model) rows."""
        await self.store.run(
            lambda conn: conn.executemany(
                "INSERT INTO batch_requests (job_id, custom_id, part, model) VALUES (?, ?, ?, ?)",
                [(job_id, *row) for row in rows],
            )
        )

    async def add_part(self, job_id: str, part: int, count: int, size: int) -> None:
        await self.store.execute(
            "INSERT INTO batch_parts (job_id, part, request_count, size_bytes) VALUES (?, ?, ?, ?)",
            (job_id, part, count, size),
        )

    async def update(self, job_id: str, **values: Any) -> None:
        if "counts" in values:
            values["counts_json"] = json.dumps(values.pop("counts"))
        sets = ", ".join(f"{key} = ?" for key in values)
        await self.store.execute(
            f"UPDATE batch_jobs SET {sets}, updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE id = ?",
            (*values.values(), job_id),
        )

    async def update_part(self, job_id: str, part: int, **values: Any) -> None:
        if "counts" in values:
            values["counts_json"] = json.dumps(values.pop("counts"))
        sets = ", ".join(f"{key} = ?" for key in values)
        await self.store.execute(
            f"UPDATE batch_parts SET {sets} WHERE job_id = ? AND part = ?", (*values.values(), job_id, part)
        )

    async def record_outcomes(self, job_id: str, rows: Sequence[dict[str, Any]]) -> None:
        def write(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "UPDATE batch_requests SET status = :status, input_tokens = :input_tokens, "
                "output_tokens = :output_tokens, cache_creation_input_tokens = :cache_creation_input_tokens, "
                "cache_read_input_tokens = :cache_read_input_tokens, cost_usd = :cost_usd, error = :error "
                "WHERE job_id = :job_id AND custom_id = :custom_id",
                [{**row, "job_id": job_id} for row in rows],
            )

        await self.store.transaction(write)

    async def delete(self, job_id: str) -> None:
        await self.store.execute("DELETE FROM batch_jobs WHERE id = ?", (job_id,))

    async def get(self, job_id: str) -> dict[str, Any] | None:
        row = await self.store.fetchone("SELECT * FROM batch_jobs WHERE id = ?", (job_id,))
        return None if row is None else _job(row)

    async def find_by_reservation(self, reservation_id: int) -> dict[str, Any] | None:
        row = await self.store.fetchone(
            "SELECT * FROM batch_jobs WHERE reservation_id = ?", (reservation_id,)
        )
        return None if row is None else _job(row)

    async def parts(self, job_id: str) -> list[dict[str, Any]]:
        rows = await self.store.fetchall(
            "SELECT * FROM batch_parts WHERE job_id = ? ORDER BY part", (job_id,)
        )
        return [{**dict(row), "counts": json.loads(row["counts_json"])} for row in rows]

    async def find(
        self, states: Sequence[str] | None = None, limit: int | None = None, *, owner: str | None = None
    ) -> list[dict[str, Any]]:
        sql = "SELECT * FROM batch_jobs"
        params: list[Any] = []
        where = []
        if states:
            where.append(f"state IN ({', '.join('?' * len(states))})")
            params.extend(states)
        if owner is not None:
            where.append("owner = ?")
            params.append(owner)
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_at DESC, id DESC"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        return [_job(row) for row in await self.store.fetchall(sql, params)]

    async def request_summary(self, job_id: str) -> dict[str, Any]:
        row = await self.store.fetchone(
            "SELECT COUNT(*) AS n, SUM(COALESCE(input_tokens, 0)) AS input_tokens, "
            "SUM(COALESCE(output_tokens, 0)) AS output_tokens, SUM(COALESCE(cost_usd, 0)) AS cost_usd "
            "FROM batch_requests WHERE job_id = ?",
            (job_id,),
        )
        assert row is not None
        return {
            "requests": row["n"],
            "input_tokens": row["input_tokens"] or 0,
            "output_tokens": row["output_tokens"] or 0,
            "cost_usd": round(row["cost_usd"] or 0.0, 6),
        }

    async def requests(self, job_id: str, limit: int = 100) -> list[dict[str, Any]]:
        rows = await self.store.fetchall(
            "SELECT custom_id, part, model, status, input_tokens, output_tokens, cost_usd, error "
            "FROM batch_requests WHERE job_id = ? ORDER BY rowid LIMIT ?",
            (job_id, limit),
        )
        return [dict(row) for row in rows]

    async def tally(self) -> dict[str, int]:
        rows = await self.store.fetchall("SELECT state, COUNT(*) AS n FROM batch_jobs GROUP BY state")
        return {row["state"]: row["n"] for row in rows}


def _job(row: sqlite3.Row) -> dict[str, Any]:
    job = dict(row)
    job["counts"] = json.loads(job.pop("counts_json"))
    return job
