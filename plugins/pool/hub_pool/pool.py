"""The slot pool: slots, the shared queue, tasks that run the Claude Code CLI, chains, scaling, drain.

Tasks are queued in the store (`hub_pool.queue`): any hub can queue, and a free slot of any hub
or `hub worker` serving the same queue (by default the project: its git top level) takes the
oldest, on this machine or, with a PostgreSQL store, another. Every task and chain is written to
the store at each change, so `pool_result` and `pool_chain_result` read the truth from any hub
sharing the store, while work runs and after a restart. A queued task's `submitter` is the hub
that queued it; a running task's `owner` the hub or worker running it (its host is kept too), and
slot worktrees belong to their owner (by their path and branch): only the owner touches them while
it lives; `pool_cancel` from another hub asks the owner through the store (`cancel_request` and a
notification), and the owner kills the process group. When a hub or worker dies, one other hub
recovers its work (`recover`): process groups left running on this machine are killed, what it
was running and what it had queued is marked `interrupted` (never re-run behind the caller's
back), and a task that was running is charged its whole reservation, since what it spent can no
longer be known. A hub that loses the store takes no queued task, and keeps the results of the
tasks it runs until the store takes them (`unrecorded`): charged once, whoever tries again.

One rule for spend (`charge`), in a running hub and in recovery alike: a task is charged the cost
the CLI reported in its final result line; $0 if its process never started; and its whole
reservation (the --max-budget-usd the CLI enforces) if its process ran but ended without
reporting, which every result says with `spend_known` false and a `spend_note`. A CLI checks its
--max-budget-usd between turns, so its last turn can pass it: what it reported is charged all the
same (the ledger stays truthful and may pass the cap; the budget then grants nothing new), and
the result says so with `overshoot_usd` and a `spend_note`.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
from opentelemetry.metrics import Observation
from opentelemetry.trace import StatusCode

from hub import (
    BudgetExceeded,
    Instance,
    Reservation,
    StoreError,
    ToolError,
    kill_group_left_behind,
    process_start_token,
)

from .queue import (
    CHANNEL,
    OPEN,
    SWEEP_S,
    claim,
    count_queued,
    end_queued,
    notify,
    parse,
    queue_position,
    queued_of,
)
from .runner import DEPTH_ENV, Invocation, Outcome, Seen, run_claude
from .skills import Skill
from .worktrees import Worktrees, retire_left_behind

if TYPE_CHECKING:
    from hub import PluginContext

    from . import Settings

# How long pool_cancel from another hub waits for the owner to confirm.
CANCEL_WAIT_S = 15.0
_THIRD = """
    ALTER TABLE pool_tasks ADD COLUMN reserved_usd REAL;
    ALTER TABLE pool_tasks ADD COLUMN spend_known INTEGER;
    ALTER TABLE pool_tasks ADD COLUMN spend_note TEXT;
    ALTER TABLE pool_tasks ADD COLUMN seen_input_tokens INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE pool_tasks ADD COLUMN seen_output_tokens INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX pool_tasks_chain ON pool_tasks (chain_id);
    UPDATE pool_tasks SET spend_known = (subtype IS NOT NULL OR (pid IS NULL
        AND COALESCE(error, '') != 'the hub stopped while this task was running'))
        WHERE status NOT IN ('queued', 'running');
    """
MIGRATIONS: list[str | dict[str, str]] = [
    """
    CREATE TABLE pool_tasks (
        id TEXT PRIMARY KEY,
        chain_id TEXT,
        step_index INTEGER,
        attempt INTEGER NOT NULL DEFAULT 1,
        prompt TEXT NOT NULL,
        model TEXT,
        effort TEXT,
        resume_session TEXT,
        status TEXT NOT NULL,
        slot TEXT,
        output TEXT,
        error TEXT,
        subtype TEXT,
        spend_usd REAL NOT NULL DEFAULT 0,
        input_tokens INTEGER NOT NULL DEFAULT 0,
        output_tokens INTEGER NOT NULL DEFAULT 0,
        session_id TEXT,
        duration_ms INTEGER,
        created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
        started_at TEXT,
        ended_at TEXT
    );
    CREATE INDEX pool_tasks_status ON pool_tasks (status);
    CREATE TABLE pool_chains (
        id TEXT PRIMARY KEY,
        status TEXT NOT NULL,
        failure_policy TEXT NOT NULL,
        steps_json TEXT NOT NULL,
        results_json TEXT NOT NULL,
        final_output TEXT,
        total_spend REAL NOT NULL DEFAULT 0,
        created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
        ended_at TEXT
    );
    """,
    # Owners (hub.instances), so several hubs on one store only ever touch their own live work.
    # Open work of hubs from before owners existed is settled once, as those hubs did at start.
    """
    ALTER TABLE pool_tasks ADD COLUMN owner TEXT;
    ALTER TABLE pool_tasks ADD COLUMN reservation_id INTEGER;
    ALTER TABLE pool_tasks ADD COLUMN pid INTEGER;
    ALTER TABLE pool_tasks ADD COLUMN pid_start TEXT;
    ALTER TABLE pool_tasks ADD COLUMN cancel_request TEXT;
    ALTER TABLE pool_chains ADD COLUMN owner TEXT;
    CREATE INDEX pool_tasks_owner ON pool_tasks (owner, status);
    UPDATE pool_tasks SET status = 'interrupted', ended_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now'),
        error = CASE status WHEN 'running' THEN 'the hub stopped while this task was running'
        ELSE 'the hub stopped before this task ran' END
        WHERE status IN ('queued', 'running');
    UPDATE pool_chains SET status = 'interrupted', ended_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
        WHERE status = 'running';
    """,
    # Whether a task's spend is known (see `charge`), what was reserved for it, and the tokens
    # its assistant messages showed; chain steps read their spend from their tasks. Tasks that
    # ended before: known when the CLI printed a result (subtype) or no process was started for it
    # (no pid), unless its hub stopped while it ran.
    {"sqlite": _THIRD, "postgresql": _THIRD.split("    UPDATE pool_tasks SET spend_known")[0]},
    # The shared queue (`hub_pool.queue`): the queue a task waits in, the hub that queued it (the
    # owner is now the hub or worker running it), the machine running it, and what its runner
    # needs from the hub that asked (its system prompt with that project's context, its time limit).
    """
    ALTER TABLE pool_tasks ADD COLUMN queue TEXT;
    ALTER TABLE pool_tasks ADD COLUMN submitter TEXT;
    ALTER TABLE pool_tasks ADD COLUMN worker_host TEXT;
    ALTER TABLE pool_tasks ADD COLUMN system_prompt TEXT;
    ALTER TABLE pool_tasks ADD COLUMN timeout_s REAL;
    UPDATE pool_tasks SET submitter = owner;
    CREATE INDEX pool_tasks_queue ON pool_tasks (queue, status, created_at);
    CREATE INDEX pool_tasks_submitter ON pool_tasks (submitter, status);
    """,
]
# Whether the spend of a task that ended is known, for a row an older hub (still running on this
# store) ended without saying: the rule the last migration applied to the rows before it.
LEGACY_KNOWN_SQL = (
    "(subtype IS NOT NULL OR (pid IS NULL AND COALESCE(error, '') != "
    "'the hub stopped while this task was running'))"
)
# How often a running task's seen tokens are written to the store (for a hub that recovers it).
SEEN_SAVE_S = 1.0


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(6)}"


@dataclass
class TaskSpec:
    prompt: str
    model: str | None = None
    effort: str | None = None
    timeout_s: float | None = None
    max_budget_usd: float | None = None
    resume_session: str | None = None
    chain_id: str | None = None
    step_index: int | None = None
    attempt: int = 1


@dataclass
class Slot:
    id: str
    state: str = "idle"  # idle | busy | removing
    task_id: str | None = None
    cwd: Path | None = None
    completed_tasks: int = 0
    freed: anyio.Event = field(default_factory=anyio.Event)
    since: float = 0.0  # when its task started (time.time()), for the dashboard

    def describe(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "status": self.state,
            "task_id": self.task_id,
            "active_tasks": 1 if self.task_id else 0,
            "completed_tasks": self.completed_tasks,
            "worktree": str(self.cwd) if self.cwd else None,
        }


@dataclass
class Live:
    """A task running on a slot of this hub: its row, its reservation, and how to stop it."""

    row: dict[str, Any]
    reservation: Reservation | None
    done: anyio.Event = field(default_factory=anyio.Event)
    scope: anyio.CancelScope | None = None
    cancel_reason: str | None = None
    cancel_status: str = "cancelled"
    listeners: list[Callable[[dict[str, Any]], Awaitable[None]]] = field(default_factory=list)
    seen: Seen = field(default_factory=Seen)  # outlives a run that is cancelled
    seen_saved_at: float = float("-inf")

    @property
    def reserved_usd(self) -> float:
        return float(self.row.get("reserved_usd") or 0.0)


@dataclass
class Unrecorded:
    """A task's end that the store could not take (it was away): kept until it can."""

    live: Live
    spend: Spend
    values: dict[str, Any]


def queue_of(directory: Path) -> str:
    """The default queue of a pool working in `directory`: its project (the git top level, else
    the directory), so hubs of one project share slots and other projects' tasks never run here."""
    for folder in (directory, *directory.parents):
        if (folder / ".git").exists():
            return str(folder)
    return str(directory)


class Pool:
    def __init__(self, hub: PluginContext, settings: Settings, skills: dict[str, Skill]) -> None:
        self.hub = hub
        self.settings = settings
        self.skills = skills
        self.command = (
            settings.claude_command.split() if " " in settings.claude_command else [settings.claude_command]
        )
        self.cwd = Path(settings.cwd).expanduser().resolve() if settings.cwd else Path.cwd()
        self.queue_name = settings.queue or queue_of(self.cwd)
        self.host = socket.gethostname()
        self.depth = current_depth()
        self.worker_mcp_config = worker_mcp_config(settings.worker_mcp_config)
        self._cancelling: set[str] = set()
        self.slots: list[Slot] = []
        self.running: dict[str, Live] = {}  # tasks on this hub's slots
        self.submitted: set[str] = set()  # open tasks this hub queued
        # The trace context each task this hub queued was queued in (telemetry on): the span of
        # a task one of its own slots runs is its child; it cannot travel to another machine.
        self.traces: dict[str, Any] = {}
        # Tasks waiting in this pool's queue, as last read (the queue-length gauge reads memory).
        self.queued_count = 0
        self.listeners: dict[str, list[Callable[[dict[str, Any]], Awaitable[None]]]] = {}
        self.ended: dict[str, anyio.Event] = {}  # set when a task waited for ends
        self.unrecorded: dict[str, Unrecorded] = {}
        self._flushing = False
        self.accepting = True  # takes new tasks from callers
        self.claiming = True  # its slots take queued tasks
        self._stopping = False
        # How long `stop` lets running tasks finish (set for `hub worker`, see the plugin's hub_worker).
        self.stop_grace_s = 0.0
        self._scaling = anyio.Lock()
        self.worktrees: Worktrees | None = None
        self._slot_counter = 0
        self._wake = anyio.Event()

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        await self.hub.store.migrate("pool", MIGRATIONS)
        if self.settings.worktree:
            self.worktrees = await Worktrees.for_directory(
                self.cwd, self.hub.settings.state_dir, self.hub.instance_id
            )
            stale = await self.worktrees.clean_legacy()
            if stale:
                self.hub.log.info("removed worktrees left by a hub of an earlier version", slots=stale)
        self.queued_count = await count_queued(self.hub.store, self.queue_name)
        await self._add_slots(self.settings.slots)
        self.hub.start_soon(self._listen, name="notifications")
        self.hub.start_soon(self._dispatch, name="dispatch")
        self.hub.start_soon(self._sweep, name="sweep")
        self._gauges()

    def _gauges(self) -> None:
        """The pool's metrics (read only when telemetry exports them): the tasks waiting in this
        pool's queue (for any hub or worker serving it: `queued_count`, as last read) and this
        hub's busy slots. Their callbacks are synchronous, so they read only memory."""
        meter = self.hub.telemetry.meter
        meter.create_observable_gauge(
            "hub.pool.queue_length",
            [lambda options: [Observation(self.queued_count)]],
            "{task}",
            "Tasks waiting in the queue for a slot of any hub or worker.",
        )
        meter.create_observable_gauge(
            "hub.pool.slots_busy",
            [lambda options: [Observation(sum(1 for s in self.slots if s.task_id))]],
            "{slot}",
            "Slots of this hub running a task.",
        )

    async def stop(self) -> None:
        """Stop: queued tasks this hub queued end `interrupted` (they never ran); running tasks
        are given `stop_grace_s` to finish (a `hub worker`: busy_grace_s; a hub serving a
        client: none, its caller is gone), then stopped and charged by the rule of `charge`."""
        self.accepting = self.claiming = False
        self._stopping = True
        if self.running and self.stop_grace_s > 0:
            self.hub.log.info(
                "stopping: waiting for the running tasks to finish",
                tasks=sorted(self.running),
                grace_s=self.stop_grace_s,
            )
            with anyio.move_on_after(self.stop_grace_s):
                for live in list(self.running.values()):
                    await live.done.wait()
        with contextlib.suppress(StoreError):
            for task_id in await queued_of(self.hub, self.hub.instance_id):
                await end_queued(
                    self.hub,
                    task_id,
                    "interrupted",
                    "the hub stopped before this task ran",
                    submitter=self.hub.instance_id,
                )
        for live in list(self.running.values()):
            live.cancel_reason = live.cancel_reason or "the hub stopped while this task was running"
            live.cancel_status = "interrupted"
            if live.scope is not None:
                live.scope.cancel()
        with anyio.move_on_after(10, shield=True):
            for live in list(self.running.values()):
                await live.done.wait()
            await self._flush_once()
        if self.unrecorded:
            self.hub.log.error(
                "stopped with task results the store never took (it was away)", tasks=sorted(self.unrecorded)
            )
        if self.worktrees is not None:
            with anyio.CancelScope(shield=True):
                for slot in self.slots:
                    with contextlib.suppress(Exception):
                        await self.worktrees.remove(slot.id)

    def _report(self) -> None:
        """What this hub can take and has (`hub status`), and whether a shared process must stay."""
        busy = sum(1 for s in self.slots if s.task_id)
        self.hub.set_capacity(len(self.slots), busy, "slots")
        self.hub.set_busy(len(self.running) + len(self.submitted) + len(self.unrecorded))

    # -- slots ---------------------------------------------------------------------------------

    async def _add_slots(self, count: int) -> list[str]:
        added = []
        for _ in range(count):
            slot = Slot(f"slot-{self._slot_counter}")
            self._slot_counter += 1
            if self.worktrees is not None:
                slot.cwd = await self.worktrees.create(slot.id)
            self.slots.append(slot)
            added.append(slot.id)
        self._wake.set()
        self._report()
        return added

    async def _remove_slot(self, slot: Slot) -> None:
        self.slots.remove(slot)
        self._report()
        if self.worktrees is not None:
            await self.worktrees.remove(slot.id)

    async def scale_up(self, count: int) -> dict[str, Any]:
        async with self._scaling:
            return await self._scale_up(count)

    async def scale_down(self, count: int) -> dict[str, Any]:
        async with self._scaling:
            return await self._scale_down(count)

    async def _scale_up(self, count: int) -> dict[str, Any]:
        if count < 1:
            raise ToolError("count must be at least 1")
        if len(self.slots) + count > self.settings.max_slots:
            raise ToolError(
                f"cannot scale up by {count}: {len(self.slots)} slots now, at most {self.settings.max_slots} (max_slots)"
            )
        added = await self._add_slots(count)
        return {
            "success": True,
            "new_slot_count": len(self.slots),
            "details": f"Scaled up by {count} slots",
            "added": added,
        }

    async def _scale_down(self, count: int) -> dict[str, Any]:
        if count < 1:
            raise ToolError("count must be at least 1")
        if len(self.slots) - count < self.settings.min_slots:
            raise ToolError(
                f"cannot scale down by {count}: {len(self.slots)} slots now, at least {self.settings.min_slots} (min_slots)"
            )
        idle = [s for s in reversed(self.slots) if s.state == "idle"]
        busy = [s for s in reversed(self.slots) if s.state == "busy"]
        chosen = (idle + busy)[:count]
        removed: list[str] = []
        cancelled: list[str] = []
        for slot in chosen:
            slot.state = "removing" if slot.task_id else "idle"
            if not slot.task_id:
                await self._remove_slot(slot)
                removed.append(slot.id)
        async with anyio.create_task_group() as tg:
            for slot in chosen:
                if slot.state == "removing":
                    tg.start_soon(self._retire, slot, removed, cancelled)
        details = f"Scaled down by {count} slots"
        if cancelled:
            details += f"; {len(cancelled)} busy slot(s) did not finish within {self.settings.busy_grace_s:g} s and their tasks were cancelled"
        return {
            "success": True,
            "new_slot_count": len(self.slots),
            "details": details,
            "removed": removed,
            "cancelled_tasks": cancelled,
        }

    async def _retire(self, slot: Slot, removed: list[str], cancelled: list[str]) -> None:
        """Remove a busy slot once its task ends, or cancel the task after busy_grace_s."""
        try:
            with anyio.move_on_after(self.settings.busy_grace_s):
                await slot.freed.wait()
        except BaseException:  # the caller went away: the slot stays and takes work again
            if slot in self.slots:
                slot.state = "busy" if slot.task_id else "idle"
                self._wake.set()
            raise
        if slot.task_id:
            cancelled.append(slot.task_id)
            await self.cancel(
                slot.task_id,
                f"its slot {slot.id} was removed by scale-down after {self.settings.busy_grace_s:g} s",
            )
            with anyio.move_on_after(10):
                await slot.freed.wait()
        if slot in self.slots:
            await self._remove_slot(slot)
        removed.append(slot.id)

    async def set_target(self, target: int) -> dict[str, Any]:
        if not self.settings.min_slots <= target <= self.settings.max_slots:
            raise ToolError(
                f"target {target} is outside {self.settings.min_slots}..{self.settings.max_slots} (min_slots..max_slots)"
            )
        async with self._scaling:
            now = len(self.slots)
            if target > now:
                out = await self._scale_up(target - now)
            elif target < now:
                out = await self._scale_down(now - target)
            else:
                out = {"success": True, "new_slot_count": now, "details": "already at the target"}
        out["target"] = target
        return out

    # -- queueing --------------------------------------------------------------------------------

    async def submit(self, spec: TaskSpec) -> str:
        """Queue a task in this pool's queue, for a free slot of any hub or worker serving it."""
        if not self.accepting:
            raise ToolError("the pool is draining and takes no new work until the drain ends")
        if not spec.prompt.strip():
            raise ToolError("the prompt is empty")
        cap = (
            spec.max_budget_usd if spec.max_budget_usd is not None else self.settings.max_budget_per_task_usd
        )
        spec.max_budget_usd = cap
        task_id = new_id("task")
        try:
            reservation = await self.hub.budget.reserve(
                cap,
                f"pool task {task_id}",
                durable=True,  # kept open while a worker runs it, whatever becomes of this hub
                lower="lower max_budget_usd on the call or [plugins.pool] max_budget_per_task_usd",
            )
        except BudgetExceeded as exc:
            raise ToolError(f"task refused: {exc}") from None
        try:
            system = "\n\n".join(
                p for p in (self.settings.system_prompt, await self.hub.context.as_prompt()) if p
            )
            await self._insert(task_id, spec, reservation, system)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await reservation.release()
            raise
        trace = self.hub.telemetry.current()
        if trace is not None:  # kept in memory: a slot of this hub parents its span with it
            self.traces[task_id] = trace
        self.submitted.add(task_id)
        self.queued_count += 1
        self._report()
        await notify(self.hub.store, "queued", q=self.queue_name)
        self._wake.set()
        return task_id

    async def _insert(self, task_id: str, spec: TaskSpec, reservation: Reservation, system: str) -> None:
        await self.hub.store.execute(
            "INSERT INTO pool_tasks (id, chain_id, step_index, attempt, prompt, model, effort, resume_session, "
            "status, submitter, reservation_id, reserved_usd, queue, system_prompt, timeout_s) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'queued', ?, ?, ?, ?, ?, ?)",
            (
                task_id,
                spec.chain_id,
                spec.step_index,
                spec.attempt,
                spec.prompt,
                spec.model or self.settings.model,
                spec.effort or self.settings.effort,
                spec.resume_session,
                self.hub.instance_id,
                reservation.id,
                reservation.reserved_usd,
                self.queue_name,
                system,
                spec.timeout_s or self.settings.task_timeout_s,
            ),
        )

    # -- taking work -----------------------------------------------------------------------------

    async def _dispatch(self) -> None:
        """Give free slots queued tasks, whenever told something may have changed."""
        while True:
            self._wake = anyio.Event()
            await self._fill_slots()
            with anyio.move_on_after(SWEEP_S):
                await self._wake.wait()

    async def _fill_slots(self) -> None:
        """Give every idle slot a queued task, taken for all of them in one transaction."""
        while self.claiming:
            idle = [s for s in self.slots if s.state == "idle"]
            if not idle:
                return
            try:
                rows = await claim(self.hub, self.queue_name, [s.id for s in idle], self.host)
            except StoreError as exc:  # takes no new work until the store is back
                self.hub.log.warning("cannot take queued tasks: the store is away", problem=str(exc))
                await self.hub.store.wait_available()
                continue
            by_id = {s.id: s for s in idle}
            run = self._run_traced if self.hub.telemetry.on else self._run
            for row in rows:
                slot = by_id[row["slot"]]  # only this loop gives slots work: still idle
                slot.state, slot.task_id, slot.freed = "busy", row["id"], anyio.Event()
                slot.since = time.time()
                self.hub.start_soon(run, slot, row, name=f"task {row['id']}")
            self.queued_count = max(0, self.queued_count - len(rows)) if len(rows) == len(idle) else 0
            self._report()
            if len(rows) < len(idle):
                return

    async def _run(self, slot: Slot, row: dict[str, Any]) -> None:
        task_id = row["id"]
        outcome: Outcome | None = None
        live = Live(row, None, listeners=self.listeners.setdefault(task_id, []))
        self.running[task_id] = live
        try:
            live.reservation = (
                await self.hub.budget.reservation(row["reservation_id"]) if row["reservation_id"] else None
            )
            if row.get("cancel_request"):
                live.cancel_reason = row["cancel_request"]
            if live.reservation is None and live.cancel_reason is None:
                outcome = Outcome("failed", error="its budget reservation was settled before it could start")
            else:
                outcome = await self._execute(slot, task_id, live)
        except Exception as exc:
            self.hub.log.exception("a pool task raised", task=task_id)
            outcome = Outcome("failed", error=f"{type(exc).__name__}: {exc}")
        finally:
            with anyio.CancelScope(shield=True):
                await self._finish(slot, task_id, live, outcome)

    async def _execute(self, slot: Slot, task_id: str, live: Live) -> Outcome | None:
        """Run the CLI for a claimed task (None: cancelled before it started)."""
        row = live.row
        if self.worktrees is not None and slot.cwd is None:
            slot.cwd = await self.worktrees.create(slot.id)
        inv = Invocation(
            command=self.command,
            prompt=row["prompt"],
            model=row["model"],
            effort=row["effort"],
            permission_mode=self.settings.permission_mode,
            system_prompt=row.get("system_prompt") or "",
            max_budget_usd=live.reserved_usd,
            resume_session=row["resume_session"],
            cwd=slot.cwd or self.cwd,
            timeout_s=row.get("timeout_s") or self.settings.task_timeout_s,
            mcp_config=self.worker_mcp_config,
        )

        async def on_message(message: dict[str, Any]) -> None:
            for listener in list(live.listeners):
                with contextlib.suppress(Exception):
                    await listener(message)
            if message.get("type") == "assistant":
                await self._save_seen(task_id, live)

        with anyio.CancelScope() as scope:
            live.scope = scope
            if live.cancel_reason is None:
                return await run_claude(
                    inv,
                    on_start=lambda pid: self._update(task_id, pid=pid, pid_start=process_start_token(pid)),
                    on_message=on_message,
                    env={DEPTH_ENV: str(self.depth + 1)},
                    seen=live.seen,
                )
        return None

    async def _run_traced(self, slot: Slot, row: dict[str, Any]) -> None:
        """`_run` in a span ``pool task`` (telemetry on). A task this hub queued is a child of the
        call that queued it (its trace context is kept in memory, `traces`); one another hub
        queued has a span without a parent here, as a trace context does not travel through the
        store to another machine."""
        task_id = row["id"]
        attributes = {
            "pool.task_id": task_id,
            "pool.slot": slot.id,
            "pool.model": row.get("model") or "",
            "pool.queue": self.queue_name,
            "pool.queued_here": task_id in self.submitted,
        }
        parent = self.traces.pop(task_id, None)
        with self.hub.telemetry.span("pool task", attributes=attributes, parent=parent) as span:
            await self._run(slot, row)
            ended = await self._row(task_id)
            if ended is not None:
                span.set_attribute("pool.status", ended["status"])
                span.set_attribute("pool.spend_usd", ended["spend_usd"] or 0.0)
                if ended["status"] != "completed":
                    span.set_status(StatusCode.ERROR, ended["error"] or ended["status"])

    async def _save_seen(self, task_id: str, live: Live) -> None:
        """Write the tokens seen so far, at most every SEEN_SAVE_S: a hub that recovers this task
        after this one dies reports them."""
        now = anyio.current_time()
        if now - live.seen_saved_at < SEEN_SAVE_S:
            return
        live.seen_saved_at = now
        try:
            await self._update(
                task_id,
                seen_input_tokens=live.seen.input_tokens,
                seen_output_tokens=live.seen.output_tokens,
            )
        except Exception:  # a progress note: the task goes on, and its end is recorded in full
            self.hub.log.warning("could not record a task's tokens so far", task=task_id, exc_info=True)

    async def _finish(self, slot: Slot, task_id: str, live: Live, outcome: Outcome | None) -> None:
        error: str | None
        if live.cancel_reason is not None or outcome is None:
            status, error = live.cancel_status, live.cancel_reason or "cancelled"
        else:
            status, error = outcome.status, outcome.error
        spend = charge(UNKNOWN_BECAUSE.get(status, f"it ended {status}"), live.seen, live.reserved_usd)
        values: dict[str, Any] = {
            "status": status,
            "error": error,
            "ended_at": _now(),
            "spend_usd": spend.charged_usd,
            "spend_known": spend.known,
            "spend_note": spend.note,
            "seen_input_tokens": live.seen.input_tokens,
            "seen_output_tokens": live.seen.output_tokens,
        }
        if outcome is not None:
            values.update(
                output=outcome.output,
                subtype=outcome.subtype,
                input_tokens=outcome.input_tokens,
                output_tokens=outcome.output_tokens,
                session_id=outcome.session_id,
                duration_ms=outcome.duration_ms,
            )
        try:
            await self._record(task_id, live, spend, values)
        except StoreError as exc:  # kept, and recorded once the store is back: nothing lost
            self.unrecorded[task_id] = Unrecorded(live, spend, values)
            self.hub.log.warning(
                "a task ended while the store was away; its result is kept until it can be recorded",
                task=task_id,
                problem=str(exc),
            )
            if not self._flushing:
                self._flushing = True
                self.hub.start_soon(self._flush_unrecorded, name="record results kept")
        except Exception:
            self.hub.log.exception("recording a task's end failed", task=task_id)
        finally:  # whatever happened above, the slot is free and every waiter wakes
            slot.task_id = None
            slot.completed_tasks += 1
            if slot.state == "busy":
                slot.state = "idle"
            slot.freed.set()
            self.running.pop(task_id, None)
            self.listeners.pop(task_id, None)
            if task_id not in self.unrecorded:
                self._signal(task_id)
            self._report()
            live.done.set()
            self._wake.set()

    async def _record(self, task_id: str, live: Live, spend: Spend, values: dict[str, Any]) -> None:
        """Charge a task's spend (once, whoever tries again) and write its end; a task that another
        hub settled meanwhile (this one was away from the store and taken for dead) keeps the
        status and charge it was given, and gets the output this hub has."""
        if live.reservation is not None and not live.reservation.closed:
            await live.reservation.commit(spend.charged_usd)  # False if already settled: never twice
        sets = ", ".join(f"{k} = ?" for k in values)
        changed = await self.hub.store.execute(
            f"UPDATE pool_tasks SET {sets} WHERE id = ? AND owner = ? AND status = 'running'",
            (*values.values(), task_id, self.hub.instance_id),
        )
        if not changed:
            late = {k: values[k] for k in ("output", "subtype", "session_id", "duration_ms") if k in values}
            if late:
                sets = ", ".join(f"{k} = ?" for k in late)
                await self.hub.store.execute(
                    f"UPDATE pool_tasks SET {sets} WHERE id = ?", (*late.values(), task_id)
                )
        await notify(self.hub.store, "ended", t=task_id)

    async def _flush_unrecorded(self) -> None:
        try:
            while self.unrecorded:
                await self.hub.store.wait_available()
                await self._flush_once()
        finally:
            self._flushing = False

    async def _flush_once(self) -> None:
        for task_id, kept in list(self.unrecorded.items()):
            try:
                await self._record(task_id, kept.live, kept.spend, kept.values)
            except StoreError:
                return
            except Exception:
                self.hub.log.exception("recording a task's end failed", task=task_id)
            self.unrecorded.pop(task_id, None)
            self.hub.log.info("recorded the result of a task kept while the store was away", task=task_id)
            self._signal(task_id)
            self._report()

    async def _update(self, task_id: str, **values: Any) -> None:
        sets = ", ".join(f"{k} = ?" for k in values)
        await self.hub.store.execute(
            f"UPDATE pool_tasks SET {sets} WHERE id = ?", (*values.values(), task_id)
        )

    # -- notifications ----------------------------------------------------------------------------

    def _signal(self, task_id: Any) -> None:
        """Wake whoever waits for task `task_id` to end."""
        event = self.ended.pop(str(task_id), None)
        if event is not None:
            event.set()
        self.traces.pop(str(task_id), None)
        if task_id in self.submitted:
            self.submitted.discard(task_id)
            self._report()

    async def _listen(self) -> None:
        async with self.hub.store.listen(CHANNEL) as payloads:
            async for payload in payloads:
                note = parse(payload)
                event = note.get("e")
                if not note:  # connected again: anything may have happened meanwhile
                    self._wake.set()
                    for task_id in list(self.ended):
                        self._signal(task_id)
                    self.hub.start_soon(self._sweep_once, name="sweep")
                elif event == "queued" and note.get("q") == self.queue_name:
                    self._wake.set()
                elif event == "ended":
                    self._signal(note.get("t"))
                elif event == "cancel" and note.get("t") in self.running:
                    self._cancel_soon(str(note["t"]))

    def _cancel_soon(self, task_id: str) -> None:
        if task_id not in self._cancelling:
            self._cancelling.add(task_id)
            self.hub.start_soon(self._cancel_requested, task_id, name=f"cancel {task_id}")

    async def _cancel_requested(self, task_id: str) -> None:
        try:
            row = await self._row(task_id)
            reason = (row or {}).get("cancel_request") or "cancelled by pool_cancel from another hub"
            await self.cancel(task_id, reason, missing_ok=True)
        finally:
            self._cancelling.discard(task_id)

    async def _sweep(self) -> None:
        """What a lost notification would have said, every SWEEP_S (a safety net, not the wake-up)."""
        while True:
            await anyio.sleep(SWEEP_S)
            with contextlib.suppress(StoreError):  # said by the hub's heartbeat
                await self._sweep_once()

    async def _sweep_once(self) -> None:
        self.queued_count = await count_queued(self.hub.store, self.queue_name)
        rows = await self.hub.store.fetchall(
            "SELECT id FROM pool_tasks WHERE owner = ? AND cancel_request IS NOT NULL AND status = 'running'",
            (self.hub.instance_id,),
        )
        for row in rows:
            if row["id"] in self.running:
                self._cancel_soon(row["id"])
        if self.submitted:
            open_rows = await self.hub.store.fetchall(
                "SELECT id FROM pool_tasks WHERE submitter = ? AND status IN ('queued', 'running')",
                (self.hub.instance_id,),
            )
            still = {row["id"] for row in open_rows}
            for task_id in self.submitted - still:
                self._signal(task_id)
        self._wake.set()
        self._report()

    # -- waiting and cancelling -------------------------------------------------------------------

    async def wait(
        self, task_id: str, listener: Callable[[dict[str, Any]], Awaitable[None]] | None = None
    ) -> dict[str, Any]:
        """Wait for a task to end, wherever it runs; cancelling the wait cancels the task. The
        `listener` gets its CLI's messages while it runs on this hub."""
        if listener is not None:
            self.listeners.setdefault(task_id, []).append(listener)
        try:
            await self._until_ended(task_id)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self.cancel(task_id, "the caller cancelled the request", missing_ok=True)
            raise
        finally:
            if listener is not None and listener in self.listeners.get(task_id, []):
                self.listeners[task_id].remove(listener)
        return await self.result(task_id)

    async def _until_ended(self, task_id: str) -> None:
        while True:
            event = self.ended.setdefault(task_id, anyio.Event())
            live = self.running.get(task_id)
            if live is not None:
                await live.done.wait()
                continue
            if task_id in self.unrecorded:
                await event.wait()
                continue
            row = await self._row(task_id)
            if row is None or row["status"] not in OPEN:
                self.ended.pop(task_id, None)
                return
            with anyio.move_on_after(SWEEP_S):
                await event.wait()

    async def cancel(
        self, task_id: str, reason: str = "cancelled by pool_cancel", *, missing_ok: bool = False
    ) -> dict[str, Any]:
        live = self.running.get(task_id)
        if live is not None:
            live.cancel_reason = live.cancel_reason or reason
            if live.scope is not None:
                live.scope.cancel()  # kills the process group
            with anyio.move_on_after(15, shield=True):
                await live.done.wait()
            row = await self._row(task_id)
            status = row["status"] if row else "unknown"
            return {"task_id": task_id, "status": status, "cancelled": status == "cancelled"}
        if await end_queued(self.hub, task_id, "cancelled", reason):
            self._signal(task_id)
            return {"task_id": task_id, "status": "cancelled", "cancelled": True}
        row = await self._row(task_id)
        if row is None and not missing_ok:
            raise ToolError(f"no task {task_id!r}")
        if row is not None and row["status"] == "running":
            return await self._cancel_elsewhere(row, reason)
        return {
            "task_id": task_id,
            "status": row["status"] if row else "unknown",
            "cancelled": False,
            "details": f"the task had already ended ({row['status']})" if row else "unknown task",
        }

    async def _cancel_elsewhere(self, row: dict[str, Any], reason: str) -> dict[str, Any]:
        """Cancel a task another hub or worker runs: ask its owner through the store (a
        notification reaches it at once; it also looks every SWEEP_S) and wait for it to end
        the task; an owner that died is recovered by whichever hub notices first (`interrupted`)."""
        task_id = row["id"]
        owner = await self.hub.instances.get(row["owner"]) if row["owner"] else None
        where = (
            f"hub pid {owner.pid} on {owner.host} (instance {owner.id})" if owner else "a hub that is gone"
        )
        await self.hub.store.execute(
            "UPDATE pool_tasks SET cancel_request = ? WHERE id = ? AND status IN ('queued', 'running')",
            (f"{reason} (asked from hub pid {os.getpid()} on {self.host})", task_id),
        )
        await notify(self.hub.store, "cancel", t=task_id)
        with anyio.move_on_after(CANCEL_WAIT_S):
            await self._until_ended(task_id)
        after = await self._row(task_id) or row
        out = {
            "task_id": task_id,
            "status": after["status"],
            "cancelled": after["status"] in ("cancelled", "interrupted"),
            "hub": owner.describe() if owner else None,
            "worker": _worker(after, owner),
        }
        if after["status"] in OPEN:
            out["details"] = (
                f"the task runs on {where}; it was asked to cancel it and has not confirmed within "
                f"{CANCEL_WAIT_S:g} s (pool_result shows when it does)"
            )
        else:
            out["details"] = f"the task ran on {where}, which ended it: {after['status']}"
            if after["error"]:
                out["details"] += f" ({after['error']})"
        return out

    async def _row(self, task_id: str) -> dict[str, Any] | None:
        row = await self.hub.store.fetchone("SELECT * FROM pool_tasks WHERE id = ?", (task_id,))
        return None if row is None else dict(row)

    async def result(self, task_id: str) -> dict[str, Any]:
        row = await self._row(task_id)
        if row is None:
            recent = await self.hub.store.fetchall(
                "SELECT id FROM pool_tasks ORDER BY created_at DESC LIMIT 5"
            )
            raise ToolError(f"no task {task_id!r} (recent: {', '.join(r['id'] for r in recent) or 'none'})")
        view = task_view(row, queue_position=await queue_position(self.hub.store, row))
        responsible = row["owner"] if row["status"] == "running" else row.get("submitter")
        owner = await self.hub.instances.get(row["owner"]) if row["owner"] else None
        if row["status"] in OPEN and responsible and responsible != self.hub.instance_id:
            other = owner if responsible == row["owner"] else await self.hub.instances.get(responsible)
            view["hub"] = other.describe() if other else {"instance": responsible}
        if row["owner"]:
            view["worker"] = _worker(row, owner)
        return view

    async def run(
        self, spec: TaskSpec, listener: Callable[[dict[str, Any]], Awaitable[None]] | None = None
    ) -> dict[str, Any]:
        return await self.wait(await self.submit(spec), listener)

    # -- drain -----------------------------------------------------------------------------------

    async def drain(self, timeout_s: float) -> dict[str, Any]:
        self.accepting = self.claiming = False
        try:
            queued = await queued_of(self.hub, self.hub.instance_id)
            for task_id in queued:
                if await end_queued(
                    self.hub, task_id, "cancelled", "the pool was drained before this task ran"
                ):
                    self._signal(task_id)
            running = list(self.running)
            finished_in_time, cancelled_running = [], []
            with anyio.move_on_after(timeout_s):
                for task_id in running:
                    live = self.running.get(task_id)
                    if live is not None:
                        await live.done.wait()
            for task_id in running:
                if task_id in self.running:
                    cancelled_running.append(task_id)
                    await self.cancel(task_id, f"still running when the drain's {timeout_s:g} s were up")
                else:
                    finished_in_time.append(task_id)
            if self.worktrees is not None:
                for slot in self.slots:
                    await self.worktrees.remove(slot.id)
                    slot.cwd = None  # made again when the slot next works
            return {
                **await self._totals(),
                "cancelled_queued": len(queued),
                "finished_during_drain": len(finished_in_time),
                "cancelled_running": cancelled_running,
                **await self._spend_totals(),
            }
        finally:
            self.accepting = self.claiming = not self._stopping
            self._wake.set()

    async def _totals(self) -> dict[str, Any]:
        totals = await self.hub.store.fetchone(
            "SELECT COUNT(*) AS total, SUM(CASE WHEN status = 'completed' THEN 1 ELSE 0 END) AS completed, "
            "SUM(CASE WHEN status IN ('failed', 'timeout') THEN 1 ELSE 0 END) AS errors, "
            "SUM(CASE WHEN status = 'cancelled' THEN 1 ELSE 0 END) AS cancelled, "
            "COALESCE(SUM(spend_usd), 0) AS spend FROM pool_tasks"
        )
        assert totals is not None
        return {
            "total_tasks": totals["total"],
            "completed": totals["completed"] or 0,
            "errors": totals["errors"] or 0,
            "cancelled": totals["cancelled"] or 0,
            "total_spend": round(totals["spend"], 6),
        }

    # -- reading -----------------------------------------------------------------------------------

    async def status(self) -> dict[str, Any]:
        spend = await self._spend_totals()
        budget = await self.hub.budget.summary()
        running = [s.task_id for s in self.slots if s.task_id]
        queued = await self.hub.store.fetchall(
            "SELECT id FROM pool_tasks WHERE status = 'queued' AND queue = ? ORDER BY created_at, id LIMIT 500",
            (self.queue_name,),
        )
        return {
            "slots": [s.describe() for s in self.slots],
            "slot_count": len(self.slots),
            "idle": sum(1 for s in self.slots if s.state == "idle"),
            "busy": sum(1 for s in self.slots if s.task_id),
            "queue": self.queue_name,
            "queued": [row["id"] for row in queued],
            "running": running,
            "active_tasks": len(running),
            "pending_tasks": len(queued),
            "accepting": self.accepting,
            "unrecorded_results": len(self.unrecorded),
            "spend_usd": spend["charged_usd"],
            **spend,
            "budget_usd": budget["limit_usd"],
            "budget_remaining": budget["remaining_usd"],
            "min_slots": self.settings.min_slots,
            "max_slots": self.settings.max_slots,
            "worktree": self.worktrees is not None,
            "workers": await self._workers(),
            "other_hubs": await self._elsewhere(),
        }

    async def _workers(self) -> list[dict[str, Any]]:
        """Every live hub or `hub worker` of the store with pool slots: where, how many, how busy,
        and which tasks it runs now (`running`)."""
        running: dict[str, list[str]] = {}
        for row in await self.hub.store.fetchall(
            "SELECT id, owner FROM pool_tasks WHERE status = 'running' ORDER BY started_at, id LIMIT 1000"
        ):
            running.setdefault(row["owner"], []).append(row["id"])
        found = []
        for instance in await self.hub.instances.live():
            work = (instance.work or {}).get(self.hub.name)
            if instance.id == self.hub.instance_id:
                work = {"capacity": len(self.slots), "busy": sum(1 for s in self.slots if s.task_id)}
            if not work or not work.get("capacity"):
                continue
            found.append(
                {
                    **instance.describe(),
                    "slots": work["capacity"],
                    "busy": work.get("busy", 0),
                    "heartbeat_age_s": round(max(0.0, time.time() - instance.heartbeat_at), 1),
                    "this_hub": instance.id == self.hub.instance_id,
                    "running": running.get(instance.id, []),
                }
            )
        return found

    async def _spend_totals(self) -> dict[str, Any]:
        """What every pool task on this store was charged, and whether all of it is known."""
        unknown = (
            f"CASE WHEN spend_known = 0 OR (spend_known IS NULL AND NOT {LEGACY_KNOWN_SQL}) THEN 1 ELSE 0 END"
        )
        row = await self.hub.store.fetchone(
            "SELECT COALESCE(SUM(spend_usd), 0) AS charged, COUNT(*) AS ended, "
            f"COALESCE(SUM({unknown}), 0) AS unknown, "
            f"COALESCE(SUM(CASE WHEN {unknown} = 1 THEN spend_usd ELSE 0 END), 0) AS unknown_usd, "
            "COALESCE(SUM(seen_input_tokens), 0) AS seen_in, "
            "COALESCE(SUM(seen_output_tokens), 0) AS seen_out FROM pool_tasks "
            "WHERE status NOT IN ('queued', 'running')"
        )
        assert row is not None
        out: dict[str, Any] = {
            "charged_usd": round(row["charged"], 6),
            "spend_known": not row["unknown"],
            "seen_input_tokens": row["seen_in"],
            "seen_output_tokens": row["seen_out"],
        }
        if row["unknown"]:
            out["spend_note"] = (
                f"{row['unknown']} of {row['ended']} tasks ended without the CLI reporting what they spent "
                f"(cancelled or stopped while running, timed out, crashed, or their hub died), so each was "
                f"charged its whole reservation: {_usd(row['unknown_usd'])} in all"
            )
        return out

    async def _elsewhere(self) -> list[dict[str, Any]]:
        """Open tasks of the other hubs on this store, by hub: running ones by the hub running
        them, queued ones by the hub that queued them."""
        rows = await self.hub.store.fetchall(
            "SELECT id, status, owner, submitter FROM pool_tasks WHERE status IN ('queued', 'running') "
            "ORDER BY created_at LIMIT 500"
        )
        hubs: dict[str, dict[str, Any]] = {}
        for row in rows:
            who = row["owner"] if row["status"] == "running" else row["submitter"]
            if not who or who == self.hub.instance_id:
                continue
            entry = hubs.get(who)
            if entry is None:
                owner = await self.hub.instances.get(who)
                entry = hubs[who] = {
                    **(owner.describe() if owner else {"instance": who}),
                    "alive": bool(owner and owner.alive()),
                    "running": [],
                    "queued": [],
                }
            entry[row["status"]].append(row["id"])
        return list(hubs.values())

    def slot(self, slot_id: str) -> dict[str, Any]:
        for slot in self.slots:
            if slot.id == slot_id:
                return slot.describe()
        raise ToolError(f"no slot {slot_id!r} (slots: {', '.join(s.id for s in self.slots)})")

    # -- chains ------------------------------------------------------------------------------------

    async def create_chain(self, steps: list[dict[str, Any]], failure_policy: str) -> str:
        if not self.accepting:
            raise ToolError("the pool is draining and takes no new work until the drain ends")
        chain_id = new_id("chain")
        results: list[dict[str, Any]] = [
            {
                "index": i,
                "name": s.get("name") or _step_name(s),
                "status": "pending",
                "attempts": 0,
                "task_ids": [],
                "output": None,
                "error": None,
                "spend_usd": 0.0,
            }
            for i, s in enumerate(steps)
        ]
        await self.hub.store.execute(
            "INSERT INTO pool_chains (id, status, failure_policy, steps_json, results_json, owner) "
            "VALUES (?, 'running', ?, ?, ?, ?)",
            (chain_id, failure_policy, json.dumps(steps), json.dumps(results), self.hub.instance_id),
        )
        return chain_id

    async def run_chain(
        self, chain_id: str, listener: Callable[[dict[str, Any]], Awaitable[None]] | None = None
    ) -> dict[str, Any]:
        """Run a chain made by `create_chain` to its end, saving its progress at each change;
        cancelling this call cancels the chain. Returns `chain_result`."""
        row = await self.hub.store.fetchone("SELECT * FROM pool_chains WHERE id = ?", (chain_id,))
        assert row is not None
        run = ChainRun(
            self,
            chain_id,
            json.loads(row["steps_json"]),
            json.loads(row["results_json"]),
            row["failure_policy"],
            listener,
        )
        try:
            await run.run()
        except BaseException:
            with anyio.CancelScope(shield=True):
                await run.cancelled()
            raise
        return await self.chain_result(chain_id)

    def _step_prompt(self, step: dict[str, Any], previous: str) -> str:
        if step.get("skill"):
            skill = self.skills.get(step["skill"])
            if skill is None:
                raise ToolError(f"unknown skill {step['skill']!r} (skills: {', '.join(sorted(self.skills))})")
            arguments = {
                k: str(v).replace("{previous_output}", previous)
                for k, v in (step.get("arguments") or {}).items()
            }
            return skill.render(arguments)
        return str(step.get("prompt", "")).replace("{previous_output}", previous)

    def check_steps(self, steps: list[dict[str, Any]]) -> None:
        """Refuse a bad chain before any step runs."""
        if not steps:
            raise ToolError("a chain needs at least one step")
        for i, step in enumerate(steps):
            if bool(step.get("prompt")) == bool(step.get("skill")):
                raise ToolError(f"steps[{i}]: give exactly one of prompt or skill")
            if step.get("skill"):
                skill = self.skills.get(step["skill"])
                if skill is None:
                    raise ToolError(
                        f"steps[{i}]: unknown skill {step['skill']!r} (skills: {', '.join(sorted(self.skills))})"
                    )
                probe = {k: "x" for k in (step.get("arguments") or {})}
                try:
                    skill.render(probe)
                except ToolError as exc:
                    raise ToolError(f"steps[{i}]: {exc}") from None

    async def chain_result(self, chain_id: str) -> dict[str, Any]:
        row = await self.hub.store.fetchone("SELECT * FROM pool_chains WHERE id = ?", (chain_id,))
        if row is None:
            raise ToolError(f"no chain {chain_id!r}")
        steps = json.loads(row["results_json"])
        await self._add_step_spend(chain_id, steps)
        current = next((s for s in steps if s["status"] == "running"), None)
        return {
            "chain_id": chain_id,
            "status": row["status"],
            "failure_policy": row["failure_policy"],
            "completed_steps": sum(1 for s in steps if s["status"] in ("completed", "skipped")),
            "total_steps": len(steps),
            "current_step": {"index": current["index"], "name": current["name"], "status": "running"}
            if current
            else None,
            "steps": steps,
            "final_output": row["final_output"],
            "total_spend": round(sum(s["spend_usd"] for s in steps), 6),
            **combine_spend(steps, "steps"),
            "created_at": row["created_at"],
            "ended_at": row["ended_at"],
        }

    async def _add_step_spend(self, chain_id: str, steps: list[dict[str, Any]]) -> None:
        """Each step's spend from its tasks' rows, which hold the truth (a task of a chain whose
        hub died was charged by the hub that recovered it, which the chain's results cannot say)."""
        rows = await self.hub.store.fetchall("SELECT * FROM pool_tasks WHERE chain_id = ?", (chain_id,))
        tasks = {row["id"]: task_spend(dict(row)) for row in rows}
        for step in steps:
            attempts = [tasks[t] for t in step["task_ids"] if t in tasks]
            step.update(combine_spend(attempts, "attempts"))
            step["spend_usd"] = step["charged_usd"]


@dataclass
class ChainRun:
    """One run of a chain: its steps in order, their results so far (saved to the store at each
    change), and the output the next step gets as {previous_output}."""

    pool: Pool
    chain_id: str
    steps: list[dict[str, Any]]
    results: list[dict[str, Any]]
    policy_default: str
    listener: Callable[[dict[str, Any]], Awaitable[None]] | None = None
    previous: str = ""
    status: str = "completed"

    async def run(self) -> None:
        for i, step in enumerate(self.steps):
            if not await self._step(i, step):
                break
        await self.save(self.status, self.previous if self.status in ("completed", "partial") else None)

    async def cancelled(self) -> None:
        """The run was cancelled: what had not ended is marked so."""
        for r in self.results:
            if r["status"] in ("pending", "running"):
                r["status"] = "cancelled"
        await self.save("cancelled")

    async def save(self, status: str = "running", final: str | None = None) -> None:
        spend = round(sum(r["spend_usd"] for r in self.results), 6)
        await self.pool.hub.store.execute(
            "UPDATE pool_chains SET status = ?, results_json = ?, total_spend = ?, final_output = ?, ended_at = ? WHERE id = ?",
            (
                status,
                json.dumps(self.results),
                spend,
                final,
                _now() if status != "running" else None,
                self.chain_id,
            ),
        )

    async def _step(self, i: int, step: dict[str, Any]) -> bool:
        """Run step `i` with its attempts and settle it by its failure policy; False: the chain ends."""
        result = self.results[i]
        policy = step.get("failure_policy") or self.policy_default
        attempts_allowed = 1 + (int(step.get("retries", 2)) if policy == "retry" else 0)
        result["status"] = "running"
        try:
            prompt = self.pool._step_prompt(step, self.previous)
        except ToolError as exc:  # e.g. a skill argument left empty by {previous_output}
            result["error"], attempts_allowed, prompt = str(exc), 0, ""
        await self.save()
        ended_by = await self._attempts(i, step, prompt, attempts_allowed)
        if result["status"] == "completed":
            await self.save()
            return True
        if ended_by is not None:
            result["status"] = ended_by
            self._not_run_after(i)
            self.status = ended_by
            return False
        if policy == "skip":
            result["status"] = "skipped"
            self.status = "partial"
            await self.save()
            return True
        result["status"] = "failed"
        self.status = "failed"
        self._not_run_after(i)
        return False

    async def _attempts(self, i: int, step: dict[str, Any], prompt: str, allowed: int) -> str | None:
        """Run step `i` until it completes or its attempts are used up; returns the status of a
        task cancelled or interrupted, which ends the chain, else None."""
        result = self.results[i]
        while result["attempts"] < allowed:
            result["attempts"] += 1
            spec = TaskSpec(
                prompt,
                model=step.get("model"),
                effort=step.get("effort"),
                timeout_s=step.get("timeout_s"),
                max_budget_usd=step.get("max_budget_usd"),
                chain_id=self.chain_id,
                step_index=i,
                attempt=result["attempts"],
            )
            try:
                task_id = await self.pool.submit(spec)
            except ToolError as exc:  # refused (budget, drain): trying again would not help
                result["error"] = str(exc)
                return None
            result["task_ids"].append(task_id)
            await self.save()
            task = await self.pool.wait(task_id, self.listener)
            result["spend_usd"] = round(result["spend_usd"] + (task.get("spend_usd") or 0.0), 6)
            if task["status"] == "completed":
                result.update(status="completed", output=task["output"], error=None)
                self.previous = str(task["output"])
                return None
            result["error"] = task.get("error") or task["status"]
            if task["status"] in ("cancelled", "interrupted"):
                return str(task["status"])
        return None

    def _not_run_after(self, i: int) -> None:
        for later in self.results[i + 1 :]:
            later["status"] = "not_run"


def current_depth() -> int:
    """How deep this hub runs inside pool workers: 0 at the top, 1 inside a worker, ..."""
    try:
        return max(0, int(os.environ.get(DEPTH_ENV, "0")))
    except ValueError:
        return 0


def worker_mcp_config(value: str | dict[str, Any] | None) -> str | None:
    """`[plugins.pool] worker_mcp_config` as the CLI's --mcp-config takes it: a file's path, or
    a JSON text of ``{"mcpServers": {...}}``; None: workers get no MCP server at all."""
    if value is None:
        return None
    if isinstance(value, str):
        return str(Path(value).expanduser().resolve())
    servers = value.get("mcpServers", value)
    return json.dumps({"mcpServers": servers})


async def recover(hub: PluginContext, instance: Instance) -> dict[str, int]:
    """Settle the pool work of dead hub or worker `instance`: kill its process groups left on
    this machine, mark the tasks it ran and the tasks it queued `interrupted` (charging a task
    that was running its whole reservation: its spend cannot be known, the rule of `charge`;
    releasing a queued one's), mark its chains `interrupted`, release what it reserved for tasks
    it never queued, and retire its slot worktrees (their uncommitted work committed to their
    branch first; no branch is deleted)."""
    await hub.store.migrate("pool", MIGRATIONS)
    rows = await hub.store.fetchall(
        "SELECT id, status, pid, pid_start, reservation_id, worker_host FROM pool_tasks "
        "WHERE (owner = ? AND status = 'running') OR (submitter = ? AND status = 'queued')",
        (instance.id, instance.id),
    )
    killed = 0
    here = socket.gethostname()
    for row in rows:
        if row["status"] == "running" and row["pid"] and (row["worker_host"] or instance.host) == here:
            killed += kill_group_left_behind(row["pid"], row["pid_start"])
    for row in rows:
        await _interrupt_task(hub, instance, row)
    chains = await _interrupt_chains(hub, instance)
    orphans = await _release_orphans(hub, instance.id)
    retired = await retire_left_behind(hub.settings.state_dir, instance.id)
    if rows or chains or retired or orphans:
        hub.log.warning(
            "settled the pool work of a hub or worker that died",
            dead_instance=instance.id,
            dead_pid=instance.pid,
            dead_host=instance.host,
            tasks=len(rows),
            process_groups_killed=killed,
            chains=len(chains),
            worktrees=retired,
            reservations_released=orphans,
        )
    return {"tasks": len(rows), "killed": killed, "chains": len(chains), "worktrees": len(retired)}


async def _release_orphans(hub: PluginContext, owner: str) -> int:
    """Release the durable reservations `owner` made for tasks it never queued (it died between)."""
    released = 0
    for reservation in await hub.budget.durable_reservations():
        if reservation.owner != owner:
            continue
        task = await hub.store.fetchone(
            "SELECT status, spend_usd FROM pool_tasks WHERE reservation_id = ?", (reservation.id,)
        )
        if task is None:
            await reservation.release()
            released += 1
        elif task["status"] not in OPEN:  # ended, its charge never made: what the row says
            await reservation.commit(float(task["spend_usd"] or 0.0))
    return released


async def _interrupt_task(hub: PluginContext, instance: Instance, row: Any) -> None:
    """Mark one open task of dead `instance` `interrupted` and settle its reservation."""
    reservation = await hub.budget.reservation(row["reservation_id"]) if row["reservation_id"] else None
    where = "" if instance.host == socket.gethostname() else f" on {instance.host}"
    who = f"{'worker' if instance.role == 'worker' else 'hub'} (pid {instance.pid}{where})"
    if row["status"] == "running":
        # Taken as started: its pid is written only just after its process is, so no pid proves nothing.
        spend = charge(
            UNKNOWN_BECAUSE["recovered"],
            Seen(spawned=True),
            reservation.reserved_usd if reservation is not None else 0.0,
        )
        error = (
            f"its {who} died while this task was running; the task's processes "
            f"were stopped. What it spent cannot be known, so its whole reservation "
            f"(${spend.charged_usd:.4f}) was charged"
        )
        changed = await hub.store.execute(
            "UPDATE pool_tasks SET status = 'interrupted', error = ?, ended_at = ?, spend_usd = ?, "
            "spend_known = ?, spend_note = ? WHERE id = ? AND status = 'running' AND owner = ?",
            (error, _now(), spend.charged_usd, spend.known, spend.note, row["id"], instance.id),
        )
        if changed and reservation is not None:
            await reservation.commit(spend.charged_usd)
    elif not await end_queued(
        hub, row["id"], "interrupted", f"its {who} died before this task ran", submitter=instance.id
    ):
        return
    await notify(hub.store, "ended", t=row["id"])


async def _interrupt_chains(hub: PluginContext, instance: Instance) -> list[Any]:
    """Mark the running chains of dead hub `instance` `interrupted`, and their steps that had not
    ended; returns them. (Their steps' spend is read from their tasks, settled above.)"""
    chains = await hub.store.fetchall(
        "SELECT id, results_json FROM pool_chains WHERE owner = ? AND status = 'running'", (instance.id,)
    )
    for chain in chains:
        results = json.loads(chain["results_json"])
        for step in results:
            if step["status"] == "running":
                step["status"] = "interrupted"
            elif step["status"] == "pending":
                step["status"] = "not_run"
        await hub.store.execute(
            "UPDATE pool_chains SET status = 'interrupted', results_json = ?, ended_at = ? "
            "WHERE id = ? AND status = 'running'",
            (json.dumps(results), _now(), chain["id"]),
        )
    return list(chains)


# -- spend -----------------------------------------------------------------------------------------

# Why a task's spend cannot be known, by how it ended (see `charge`).
UNKNOWN_BECAUSE = {
    "cancelled": "cancelled while running: the CLI reports its spend only when it finishes",
    "interrupted": "the hub stopped while the task was running: the CLI reports its spend only when it finishes",
    "timeout": "timed out: the CLI was killed before it reported its spend",
    "failed": "the CLI ended without reporting its spend (it crashed or was killed)",
    "completed": "the CLI's result did not say what the task cost",
    "recovered": "its hub died while the task was running, before the CLI could report its spend",
}


@dataclass
class Spend:
    """What a task is charged, whether that is what it spent, and if not, why (`note`)."""

    charged_usd: float
    known: bool
    note: str | None = None


def charge(why: str, seen: Seen, reserved_usd: float) -> Spend:
    """The one rule for what a task is charged, in a running hub and in recovery alike. The cost
    the CLI reported in its final result line (an error result too) is known, and charged. A task
    whose process never started spent nothing: $0, known. A process that started but ended without
    reporting (cancelled, timed out, crashed, killed, its hub died) spent an unknown amount, at
    most the --max-budget-usd the CLI enforces, which is the task's reservation: that ceiling is
    charged, and the note (starting with `why`) says so."""
    if seen.cost_usd is not None:
        return Spend(seen.cost_usd, known=True)
    if not seen.spawned:
        return Spend(0.0, known=True)
    note = f"{why}, so the task's whole reservation ({_usd(reserved_usd)}) was charged"
    return Spend(reserved_usd, known=False, note=note)


def _usd(amount: float) -> str:
    """$0.50, or four decimals for an amount finer than cents ($0.1234)."""
    return f"${amount:.2f}" if abs(amount * 100 - round(amount * 100)) < 1e-6 else f"${amount:.4f}"


def _legacy_known(row: dict[str, Any]) -> bool:
    """Whether the spend of a task an older hub ended without saying is known (`LEGACY_KNOWN_SQL`)."""
    return row["subtype"] is not None or (
        row["pid"] is None and (row["error"] or "") != "the hub stopped while this task was running"
    )


def task_spend(row: dict[str, Any]) -> dict[str, Any]:
    """A task's spend fields: `charged_usd` (what the budget was charged, as `spend_usd` says),
    `spend_known`, `spend_note` (why not, when not) and the tokens its assistant messages showed
    (`seen_input_tokens`, `seen_output_tokens`: a floor of its work, known even when its cost is not)."""
    charged = round(row["spend_usd"] or 0.0, 6)
    out: dict[str, Any] = {
        "charged_usd": charged,
        "spend_known": True,
        "seen_input_tokens": row["seen_input_tokens"] or 0,
        "seen_output_tokens": row["seen_output_tokens"] or 0,
    }
    if row["status"] in OPEN:
        reserved = row["reserved_usd"]
        out["spend_known"] = False
        out["spend_note"] = f"the task is {row['status']}: what it spends is known when it ends" + (
            f"; until then {_usd(reserved)} is reserved for it" if reserved is not None else ""
        )
    elif not (bool(row["spend_known"]) if row["spend_known"] is not None else _legacy_known(row)):
        out["spend_known"] = False
        out["spend_note"] = row["spend_note"] or (
            "the task ended without the CLI reporting its spend, so what it spent cannot be known; "
            f"{_usd(charged)} was charged"
        )
    elif row["reserved_usd"] is not None and charged - row["reserved_usd"] > 5e-7:
        out.update(_overshoot(charged, row["reserved_usd"]))
    return out


def _overshoot(charged: float, reserved: float) -> dict[str, Any]:
    """A task that spent more than it reserved: the CLI checks --max-budget-usd between turns."""
    over = round(charged - reserved, 6)
    return {
        "overshoot_usd": over,
        "spend_note": f"the CLI reported {_usd(charged)}, {_usd(over)} more than the {_usd(reserved)} "
        "reserved for the task (its --max-budget-usd, which the CLI checks only between turns); all of "
        "it was charged, so the budget may pass its cap, and no new work starts while it is there",
    }


def combine_spend(parts: list[dict[str, Any]], what: str) -> dict[str, Any]:
    """The spend fields of several tasks together (a fan-out's `what`="tasks", a chain step's
    "attempts", a chain's "steps"), each part having the fields of `task_spend`."""
    unknown = [p for p in parts if not p["spend_known"]]
    out: dict[str, Any] = {
        "charged_usd": round(sum(p["charged_usd"] for p in parts), 6),
        "spend_known": not unknown,
        "seen_input_tokens": sum(p["seen_input_tokens"] for p in parts),
        "seen_output_tokens": sum(p["seen_output_tokens"] for p in parts),
    }
    if len(parts) == 1 and unknown:
        out["spend_note"] = unknown[0]["spend_note"]
    elif unknown:
        notes = "; ".join(str(p["spend_note"]) for p in unknown[:3]) + ("; ..." if len(unknown) > 3 else "")
        out["spend_note"] = f"the spend of {len(unknown)} of {len(parts)} {what} is not known: {notes}"
    over = [p for p in parts if p.get("overshoot_usd")]
    if over:
        out["overshoot_usd"] = round(sum(p["overshoot_usd"] for p in over), 6)
        note = (
            over[0]["spend_note"]
            if len(parts) == 1
            else f"{len(over)} of {len(parts)} {what} spent more than they reserved (the CLI checks "
            "--max-budget-usd only between turns); all of it was charged"
        )
        out["spend_note"] = f"{out['spend_note']}; {note}" if "spend_note" in out else note
    return out


def refused_view(error: str) -> dict[str, Any]:
    """The result of a task the pool refused (budget, drain): it never ran, so it spent nothing."""
    return {
        "task_id": None,
        "status": "refused",
        "error": error,
        "output": "",
        "spend_usd": 0.0,
        "tokens_used": {"input": 0, "output": 0},
        "charged_usd": 0.0,
        "spend_known": True,
        "seen_input_tokens": 0,
        "seen_output_tokens": 0,
    }


def _step_name(step: dict[str, Any]) -> str:
    if step.get("skill"):
        return f"skill {step['skill']}"
    text = str(step.get("prompt", "")).strip().splitlines()[0] if step.get("prompt") else ""
    return text[:60]


def _worker(row: dict[str, Any], owner: Instance | None) -> dict[str, Any]:
    """Which hub or worker runs (or ran) a task: its instance, machine, slot, pid and role."""
    out: dict[str, Any] = {
        "instance": row["owner"],
        "host": row.get("worker_host") or (owner.host if owner else None),
        "slot": row["slot"],
    }
    if owner is not None:
        out.update(pid=owner.pid, role=owner.role)
    return out


def task_view(row: dict[str, Any], queue_position: int | None = None) -> dict[str, Any]:
    view = {
        "task_id": row["id"],
        "status": row["status"],
        "output": row["output"] or "",
        "spend_usd": round(row["spend_usd"] or 0.0, 6),
        **task_spend(row),
        "tokens_used": {"input": row["input_tokens"] or 0, "output": row["output_tokens"] or 0},
        "duration_ms": row["duration_ms"],
        "model": row["model"],
        "slot": row["slot"],
        "session_id": row["session_id"],
        "created_at": row["created_at"],
        "ended_at": row["ended_at"],
    }
    if row["error"]:
        view["error"] = row["error"]
    if row["subtype"] and row["subtype"] != "success":
        view["subtype"] = row["subtype"]
    if row["chain_id"]:
        view["chain_id"], view["step_index"], view["attempt"] = (
            row["chain_id"],
            row["step_index"],
            row["attempt"],
        )
    if queue_position is not None:
        view["queue_position"] = queue_position
    return view
