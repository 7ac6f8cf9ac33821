"""The batch plugin's panel on `hub dashboard`: the latest jobs with their state, request counts,
when they are polled next, their cost (or what is reserved while open), links to their result
files, and a cancel button for open jobs (the same cancel as `batch_cancel`)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hub import Panel, PanelAction, PanelLink, PanelTable, PanelView

from .jobs import OPEN_STATES

if TYPE_CHECKING:
    from .service import BatchService

__all__ = ["RECENT", "batch_panel"]

RECENT = 15  # latest jobs shown


def _counts(job: dict[str, Any]) -> str:
    counts = job["counts"] or {}
    shown = [
        f"{counts[k]} {k}"
        for k in ("processing", "succeeded", "errored", "canceled", "expired")
        if counts.get(k)
    ]
    return f"{job['request_count']} requests" + (f": {', '.join(shown)}" if shown else "")


def _next_poll(job: dict[str, Any]) -> str:
    if job["state"] not in ("in_progress", "canceling"):
        return ""
    wait = job["next_poll_at"] - time.time()
    return "now" if wait <= 0 else f"in {wait:.0f} s" if wait < 120 else f"in {wait / 60:.0f} min"


def _files(job: dict[str, Any]) -> list[PanelLink]:
    return [
        PanelLink(Path(path).suffix.lstrip(".") or "file", path)
        for path in (job["result_path"], job["raw_path"])
        if path and Path(path).is_file()
    ]


def batch_panel(service: BatchService) -> Panel:
    """The panel, reading the jobs in the store."""

    async def render() -> PanelView:
        jobs = await service.jobs.find(limit=RECENT)
        tally = await service.jobs.tally()
        rows = []
        for job in jobs:
            open_job = job["state"] in OPEN_STATES
            cost = f"up to ${job['reserved_usd']:.4f}" if open_job else f"${job['cost_usd']:.4f}"
            cancel = None
            if job["state"] in ("in_progress", "canceling"):
                cancel = PanelAction(
                    "cancel", "cancel", {"job_id": job["id"]}, confirm=f"Cancel {job['id']}?"
                )
            rows.append(
                [
                    job["id"],
                    job["label"] or "",
                    job["state"],
                    _counts(job),
                    _next_poll(job),
                    cost,
                    _files(job),
                    cancel,
                ]
            )
        facts = {
            "open": sum(n for state, n in tally.items() if state in OPEN_STATES),
            "ended": sum(n for state, n in tally.items() if state not in OPEN_STATES),
        }
        columns = ["job", "label", "state", "requests", "next poll", "cost", "results", ""]
        return PanelView(facts=facts, tables=[PanelTable(columns, rows, "Jobs", empty="no batch job yet")])

    async def cancel(args: dict[str, Any]) -> str:
        job_id = str(args.get("job_id") or "")
        job = await service.cancel(job_id)
        return f"{job_id}: {job['state']}"

    return Panel("batch", "Batch jobs", render, actions={"cancel": cancel}, order=20)
