"""The pool's panel on `hub dashboard`: slots and what each runs (the prompt's head, elapsed time,
tokens so far and what is reserved for it: the CLI reports a task's cost only when it ends), the
queue, and the latest tasks with their status and cost; running and queued tasks have a cancel
button (the same cancel as `pool_cancel`: the process is killed)."""

from __future__ import annotations

import time
from datetime import datetime
from typing import TYPE_CHECKING, Any

from hub import Panel, PanelAction, PanelTable, PanelView

if TYPE_CHECKING:
    from .pool import Pool

__all__ = ["RECENT", "pool_panel"]

RECENT = 10  # latest tasks shown
HEAD = 80  # characters of a prompt shown


def _head(prompt: str) -> str:
    line = " ".join(prompt.split())
    return line if len(line) <= HEAD else line[: HEAD - 1] + "…"


def _elapsed(since: float) -> str:
    seconds = max(0.0, time.time() - since)
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _usd(value: float | None) -> str:
    return "" if value is None else f"${value:.4f}"


def _local_time(stamp: str | None) -> str:
    """A store timestamp (UTC) as local time of day."""
    if not stamp:
        return ""
    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).astimezone().strftime("%H:%M:%S")
    except ValueError:
        return stamp


def _cancel(task_id: str) -> PanelAction:
    return PanelAction(
        "cancel", "cancel", {"task_id": task_id}, confirm=f"Cancel {task_id}? Its process is killed."
    )


def pool_panel(pool: Pool) -> Panel:
    """The panel, reading `pool` in memory and its latest tasks in the store."""

    async def render() -> PanelView:
        facts = {
            "slots": len(pool.slots),
            "busy": sum(1 for s in pool.slots if s.task_id),
            "queued": len(pool.queue),
            "accepting": "yes" if pool.accepting else "no (draining)",
        }
        return PanelView(
            facts=facts,
            tables=[
                PanelTable(
                    ["slot", "status", "task", "prompt", "elapsed", "spend so far", ""], _slots(pool), "Slots"
                ),
                PanelTable(
                    ["#", "task", "prompt", "waiting", ""], _queue(pool), "Queue", empty="the queue is empty"
                ),
                PanelTable(
                    ["task", "status", "prompt", "slot", "cost", "duration", "ended", ""],
                    await _recent(pool),
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
    """Each slot, and what it runs: prompt head, elapsed, tokens so far and what is reserved."""
    rows: list[list[Any]] = []
    for slot in pool.slots:
        live = pool.live.get(slot.task_id) if slot.task_id else None
        if live is None or slot.task_id is None:
            rows.append([slot.id, slot.state, "", "", "", "", ""])
            continue
        so_far = f"{live.seen.input_tokens} in / {live.seen.output_tokens} out tokens"
        rows.append(
            [
                slot.id,
                slot.state,
                slot.task_id,
                _head(live.spec.prompt),
                _elapsed(slot.since),
                f"{so_far}, up to {_usd(live.reservation.reserved_usd)}",
                _cancel(slot.task_id),
            ]
        )
    return rows


def _queue(pool: Pool) -> list[list[Any]]:
    rows: list[list[Any]] = []
    for position, task_id in enumerate(list(pool.queue), 1):
        live = pool.live.get(task_id)
        if live is not None:
            rows.append(
                [position, task_id, _head(live.spec.prompt), _elapsed(live.submitted_at), _cancel(task_id)]
            )
    return rows


async def _recent(pool: Pool) -> list[list[Any]]:
    rows = await pool.hub.store.fetchall(
        "SELECT id, status, prompt, slot, spend_usd, reserved_usd, duration_ms, ended_at, error "
        "FROM pool_tasks ORDER BY created_at DESC LIMIT ?",
        (RECENT,),
    )
    out: list[list[Any]] = []
    for row in rows:
        open_task = row["status"] in ("queued", "running")
        cost = f"up to {_usd(row['reserved_usd'])}" if open_task else _usd(row["spend_usd"] or 0.0)
        duration = f"{row['duration_ms'] / 1000:.1f} s" if row["duration_ms"] else ""
        out.append(
            [
                row["id"],
                row["status"],
                _head(row["prompt"] or ""),
                row["slot"] or "",
                cost,
                duration,
                _local_time(row["ended_at"]),
                _cancel(row["id"]) if open_task else None,
            ]
        )
    return out
