"""The pool's panel on `hub dashboard`: this hub's slots and what each runs (the prompt's head,
elapsed time, tokens so far and what is reserved for it: the CLI reports a task's cost only when
it ends), the queue as the store holds it (the tasks waiting for a slot of any hub or `hub
worker` serving this pool's queue, and which hub queued each), the hubs and workers with pool
slots and what each runs, and the latest tasks with their status, cost and the worker that ran
them. Running and queued tasks have a cancel button (the same cancel as `pool_cancel`: the
process is killed, through its owner when another hub or worker runs it)."""

from __future__ import annotations

import time
from datetime import datetime
from typing import TYPE_CHECKING, Any

from hub import Instance, Panel, PanelAction, PanelTable, PanelView

from .queue import count_queued, queued_rows

if TYPE_CHECKING:
    from .pool import Pool

__all__ = ["QUEUE_SHOWN", "RECENT", "pool_panel"]

RECENT = 10  # latest tasks shown
QUEUE_SHOWN = 20  # queued tasks shown (the count says how many wait in all)
HEAD = 80  # characters of a prompt shown


def _head(prompt: str) -> str:
    line = " ".join(prompt.split())
    return line if len(line) <= HEAD else line[: HEAD - 1] + "…"


def _elapsed(since: float) -> str:
    seconds = max(0.0, time.time() - since)
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _epoch(stamp: str | None) -> float | None:
    """A store timestamp (UTC ISO text) in seconds since the epoch."""
    if not stamp:
        return None
    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _usd(value: float | None) -> str:
    return "" if value is None else f"${value:.4f}"


def _local_time(stamp: str | None) -> str:
    """A store timestamp (UTC) as local time of day."""
    moment = _epoch(stamp)
    if moment is None:
        return stamp or ""
    return datetime.fromtimestamp(moment).astimezone().strftime("%H:%M:%S")


def _cancel(task_id: str) -> PanelAction:
    return PanelAction(
        "cancel", "cancel", {"task_id": task_id}, confirm=f"Cancel {task_id}? Its process is killed."
    )


def _who(instance_id: str | None, known: dict[str, Instance], mine: str) -> str:
    """A hub or worker as the page names it: this hub, or its role, pid and machine."""
    if not instance_id:
        return ""
    if instance_id == mine:
        return "this hub"
    instance = known.get(instance_id)
    if instance is None:
        return f"{instance_id} (gone)"
    role = "worker" if instance.role == "worker" else "hub"
    return f"{role} pid {instance.pid} on {instance.host}"


def pool_panel(pool: Pool) -> Panel:
    """The panel, reading `pool` in memory (its slots) and the store (queue, workers, tasks)."""

    async def render() -> PanelView:
        known = {i.id: i for i in await pool.hub.instances.live()}
        queued = await count_queued(pool.hub.store, pool.queue_name)
        pool.queued_count = queued
        workers = await pool._workers()
        facts = {
            "slots": len(pool.slots),
            "busy": sum(1 for s in pool.slots if s.task_id),
            "queued": queued,
            "workers": sum(1 for w in workers if not w["this_hub"]),
            "accepting": "yes" if pool.accepting else "no (draining)",
        }
        return PanelView(
            facts=facts,
            tables=[
                PanelTable(
                    ["slot", "status", "task", "prompt", "elapsed", "spend so far", ""], _slots(pool), "Slots"
                ),
                PanelTable(
                    ["#", "task", "prompt", "waiting", "queued by", ""],
                    await _queue(pool, known),
                    f"Queue {pool.queue_name}",
                    empty="the queue is empty",
                ),
                PanelTable(
                    ["hub or worker", "slots", "busy", "running", "heartbeat"],
                    _workers(workers),
                    "Hubs and workers with slots",
                    empty="none",
                ),
                PanelTable(
                    ["task", "status", "prompt", "worker", "slot", "cost", "duration", "ended", ""],
                    await _recent(pool, known),
                    "Recent tasks",
                    empty="no task yet",
                ),
            ],
        )

    async def cancel(args: dict[str, Any]) -> str:
        task_id = str(args.get("task_id") or "")
        result = await pool.cancel(task_id, "cancelled from the dashboard")
        return f"{task_id}: {result.get('details') or result.get('status')}"

    return Panel("pool", "Pool", render, actions={"cancel": cancel}, order=10)


def _slots(pool: Pool) -> list[list[Any]]:
    """Each slot of this hub, and what it runs: prompt head, elapsed, tokens so far and what is
    reserved."""
    rows: list[list[Any]] = []
    for slot in pool.slots:
        live = pool.running.get(slot.task_id) if slot.task_id else None
        if live is None or slot.task_id is None:
            rows.append([slot.id, slot.state, slot.task_id or "", "", "", "", ""])
            continue
        so_far = f"{live.seen.input_tokens} in / {live.seen.output_tokens} out tokens"
        rows.append(
            [
                slot.id,
                slot.state,
                slot.task_id,
                _head(str(live.row.get("prompt") or "")),
                _elapsed(slot.since),
                f"{so_far}, up to {_usd(live.reserved_usd)}",
                _cancel(slot.task_id),
            ]
        )
    return rows


async def _queue(pool: Pool, known: dict[str, Instance]) -> list[list[Any]]:
    """The tasks waiting in this pool's queue (for a slot of any hub or worker), oldest first."""
    rows: list[list[Any]] = []
    mine = pool.hub.instance_id
    for position, row in enumerate(await queued_rows(pool.hub.store, pool.queue_name, QUEUE_SHOWN), 1):
        since = _epoch(row["created_at"])
        rows.append(
            [
                position,
                row["id"],
                _head(row["prompt"] or ""),
                _elapsed(since) if since is not None else "",
                _who(row["submitter"], known, mine),
                _cancel(row["id"]),
            ]
        )
    return rows


def _workers(workers: list[dict[str, Any]]) -> list[list[Any]]:
    """Every live hub and worker with pool slots: how many, how busy, which tasks it runs."""
    rows: list[list[Any]] = []
    for worker in workers:
        role = "worker" if worker.get("role") == "worker" else "hub"
        name = "this hub" if worker["this_hub"] else f"{role} pid {worker['pid']} on {worker['host']}"
        rows.append(
            [
                name,
                worker["slots"],
                worker["busy"],
                ", ".join(worker["running"]),
                f"{worker['heartbeat_age_s']:.0f} s ago",
            ]
        )
    return rows


async def _recent(pool: Pool, known: dict[str, Instance]) -> list[list[Any]]:
    rows = await pool.hub.store.fetchall(
        "SELECT id, status, prompt, slot, owner, worker_host, spend_usd, reserved_usd, duration_ms, "
        "ended_at, error FROM pool_tasks ORDER BY created_at DESC LIMIT ?",
        (RECENT,),
    )
    mine = pool.hub.instance_id
    out: list[list[Any]] = []
    for row in rows:
        open_task = row["status"] in ("queued", "running")
        cost = f"up to {_usd(row['reserved_usd'])}" if open_task else _usd(row["spend_usd"] or 0.0)
        duration = f"{row['duration_ms'] / 1000:.1f} s" if row["duration_ms"] else ""
        worker = _who(row["owner"], known, mine)
        if row["owner"] and row["owner"] not in known and row["owner"] != mine and row["worker_host"]:
            worker = f"{row['owner']} on {row['worker_host']} (gone)"
        out.append(
            [
                row["id"],
                row["status"],
                _head(row["prompt"] or ""),
                worker,
                row["slot"] or "",
                cost,
                duration,
                _local_time(row["ended_at"]),
                _cancel(row["id"]) if open_task else None,
            ]
        )
    return out
