"""What a shared hub process tells `hub dashboard` over its control socket (`hub.launch.control`).

The dashboard is a process of its own (`hub.dashboard`): it asks, about once a second while a page
is open, and the shared process answers from what it holds: its sessions, its downstream servers
with each tool's calls and latency (`hub.client.metrics`), the budget, the other hubs and `hub worker`s
sharing its store, and every plugin's panels (`hub_dashboard_panels`). Nothing is computed when no
dashboard asks. Questions:

- ``dashboard``: the snapshot above (JSON);
- ``dashboard_spend`` (``since``: an ISO time): the ledger by hour, plugin and session, for the
  chart, asked only when the snapshot's ``ledger_mark`` moved;
- ``dashboard_action`` (``plugin``, ``panel``, ``action``, ``args``): run a panel's action (a pool
  task's cancel); the answer is ``{"ok": bool, "message": str}``.

The socket is the shared process's own (mode 0600, in a private directory), so only its user asks.
"""

from __future__ import annotations

import os
import time
from datetime import datetime
from typing import TYPE_CHECKING, Any

import structlog

from hub import __version__
from hub.errors import StoreError, ToolError

if TYPE_CHECKING:
    from hub.host import Hub

__all__ = ["QUESTIONS", "answer_dashboard", "hub_snapshot"]

log = structlog.get_logger("hub.dashboard")
QUESTIONS = ("dashboard", "dashboard_spend", "dashboard_action")


async def answer_dashboard(
    hub: Hub, ask: str, question: dict[str, Any], process: dict[str, Any]
) -> dict[str, Any]:
    """The answer to one of `QUESTIONS`; `process` is what `hub status` shows of the process."""
    if ask == "dashboard":
        return {**await hub_snapshot(hub), "process": process}
    if ask == "dashboard_spend":
        try:
            since = datetime.fromisoformat(str(question.get("since")))
        except ValueError:
            return {"error": "since must be an ISO date and time"}
        return {"rows": await hub.budget.spend_by_hour(since)}
    return await _act(hub, question)


async def hub_snapshot(hub: Hub) -> dict[str, Any]:
    """What one hub shows on the dashboard (see the module doc)."""
    servers = hub.connections.status()
    for name, tools in hub.connections.metrics.snapshot().items():
        if name in servers:
            servers[name]["tools"] = tools
    snapshot: dict[str, Any] = {
        "hub": {
            "version": __version__,
            "instance": hub.instances.id,
            "pid": os.getpid(),
            "uptime_s": round(time.time() - hub.started_at, 1),
            "config": hub.config.source,
            "state_dir": str(hub.config.state_dir),
        },
        "sessions": list(hub.sessions.values()),
        "work": {plugin: count for plugin, count in hub.work.items() if count},
        "servers": servers,
        "plugins": [
            {"name": name, "status": info.status, "error": info.error, "warnings": list(info.warnings)}
            for name, info in hub.plugins.items()
        ],
        "panels": await hub.panels.snapshot(),
    }
    try:
        snapshot["budget"] = await hub.budget.summary()
        snapshot["ledger_mark"] = await hub.budget.ledger_mark()
        snapshot["instances"] = [_instance(i) for i in await hub.instances.live()]
    except StoreError as exc:
        snapshot["store_problem"] = str(exc)
    return snapshot


def _instance(instance: Any) -> dict[str, Any]:
    return {
        **instance.describe(),
        "version": instance.version,
        "started_at": instance.started_at,
        "shared": instance.share_key is not None,
        "sessions": instance.sessions,
        "work": instance.work,
    }


async def _act(hub: Hub, question: dict[str, Any]) -> dict[str, Any]:
    args = question.get("args")
    try:
        message = await hub.panels.act(
            str(question.get("plugin")),
            str(question.get("panel")),
            str(question.get("action")),
            args if isinstance(args, dict) else {},
        )
    except ToolError as exc:
        return {"ok": False, "message": str(exc)}
    except Exception as exc:
        log.exception("a dashboard action failed", question=question)
        return {"ok": False, "message": f"the action failed: {type(exc).__name__}: {exc}"}
    log.info("dashboard action", plugin=question.get("plugin"), action=question.get("action"), args=args)
    return {"ok": True, "message": message}
