"""The dashboard's HTML, rendered on the server from a snapshot (`hub.dashboard.source`).

`page` is the whole page; `fragments` gives each live part (``overview``, ``panels``,
``budget``, ``spend``, ``servers``, ``sessions``) as the HTML its ``sse-swap`` element takes.
Everything from a snapshot is escaped here (`esc`): a plugin's panel is data (`hub.plugin.panels`),
never markup, and so is a downstream server's error text. No inline script or style: the page
runs under a content security policy that allows only its own static files.
"""

from __future__ import annotations

import html
import json
import time
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlencode

from hub.dashboard.spend import RANGES

__all__ = ["FRAGMENTS", "fragments", "page"]

FRAGMENTS = ("overview", "panels", "budget", "spend", "servers", "sessions")
HTMX_CONFIG = json.dumps(
    {"allowScriptTags": False, "allowEval": False, "includeIndicatorStyles": False, "selfRequestsOnly": True}
)


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def money(value: Any) -> str:
    if value is None:
        return "none"
    amount = float(value)
    return f"${amount:,.2f}" if amount >= 0.1 or amount == 0 else f"${amount:.4f}"


def ago(seconds: float | None) -> str:
    if seconds is None:
        return ""
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _table(columns: Iterable[str], rows: Iterable[Iterable[str]], empty: str = "none") -> str:
    """A table of already-escaped cells."""
    head = "".join(f"<th>{esc(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    if not body:
        return f'<p class="empty">{esc(empty)}</p>'
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _badge(value: Any) -> str:
    text = esc(value)
    return f'<span class="badge s-{esc(str(value).lower().replace(" ", "-"))}">{text}</span>'


def _facts(facts: dict[str, Any]) -> str:
    items = "".join(f"<div><dt>{esc(k)}</dt><dd>{_plain(v)}</dd></div>" for k, v in facts.items())
    return f'<dl class="facts">{items}</dl>' if items else ""


def _plain(value: Any) -> str:
    if isinstance(value, float):
        return esc(round(value, 6))
    if isinstance(value, dict | list):
        return esc(json.dumps(value))
    return esc(value)


# -- plugin panels ---------------------------------------------------------------------------


def _cell(value: Any, column: str, panel: dict[str, Any], hub: str | None) -> str:
    if isinstance(value, list):
        return " ".join(_cell(v, column, panel, hub) for v in value)
    if isinstance(value, dict) and "link" in value:
        query = urlencode({"path": value.get("path", ""), **({"hub": hub} if hub else {})})
        return f'<a href="/file?{esc(query)}" target="_blank" rel="noopener">{esc(value["link"])}</a>'
    if isinstance(value, dict) and "button" in value:
        vals = {
            "plugin": panel["plugin"],
            "panel": panel["name"],
            "action": value.get("action"),
            "args": json.dumps(value.get("args") or {}),
            **({"hub": hub} if hub else {}),
        }
        confirm = f' hx-confirm="{esc(value["confirm"])}"' if value.get("confirm") else ""
        return (
            f'<button class="action" hx-post="/action" hx-target="#flash" hx-swap="innerHTML" '
            f"hx-vals='{esc(json.dumps(vals))}'{confirm}>{esc(value['button'])}</button>"
        )
    if column.lower() in ("status", "state") and value not in (None, ""):
        return _badge(value)
    return _plain(value)


def _panel(panel: dict[str, Any], hub: str | None) -> str:
    title = esc(panel.get("title"))
    ident = esc(f"panel-{panel.get('plugin')}-{panel.get('name')}")
    if "error" in panel:
        return f'<section class="card" id="{ident}"><h2>{title}</h2><p class="error">{esc(panel["error"])}</p></section>'
    view = panel.get("view") or {}
    parts = [_facts(view.get("facts") or {})]
    for table in view.get("tables") or []:
        columns = table.get("columns") or []
        if table.get("title"):
            parts.append(f"<h3>{esc(table['title'])}</h3>")
        rows = [
            [_cell(v, columns[i] if i < len(columns) else "", panel, hub) for i, v in enumerate(row)]
            for row in table.get("rows") or []
        ]
        parts.append(_table(columns, rows, table.get("empty") or "none"))
    if view.get("note"):
        parts.append(f'<p class="note">{esc(view["note"])}</p>')
    return f'<section class="card" id="{ident}"><h2>{title}</h2>{"".join(parts)}</section>'


def render_panels(snapshot: dict[str, Any]) -> str:
    hub = _hub_id(snapshot)
    panels = snapshot.get("panels") or []
    if not panels:
        return '<p class="empty">no plugin shows a panel here</p>'
    return "".join(_panel(p, hub) for p in panels)


# -- the core's sections ---------------------------------------------------------------------


def _hub_id(snapshot: dict[str, Any]) -> str | None:
    target = snapshot.get("target")
    return target.get("instance") if isinstance(target, dict) else None


def render_overview(snapshot: dict[str, Any]) -> str:
    hub = snapshot.get("hub") or {}
    process = snapshot.get("process") or {}
    parts = ['<h1>hub <span class="dim">dashboard</span></h1>']
    if snapshot.get("target"):
        work = ", ".join(f"{k} {v}" for k, v in sorted((snapshot.get("work") or {}).items())) or "none"
        parts.append(
            f'<p class="who">shared process pid {esc(hub.get("pid"))} · instance {esc(hub.get("instance"))} · '
            f"up {esc(ago(hub.get('uptime_s')))} · sessions {esc(len(snapshot.get('sessions') or []))} · "
            f"work in progress: {esc(work)} · hub {esc(hub.get('version'))} · config {esc(hub.get('config'))}"
            + (f" · cwd {esc(process.get('cwd'))}" if process.get("cwd") else "")
            + "</p>"
        )
    others = [t for t in snapshot.get("targets") or [] if t.get("instance") != _hub_id(snapshot)]
    if others:
        links = " ".join(
            f'<a href="/?{esc(urlencode({"hub": t.get("instance")}))}">pid {esc(t.get("pid"))} ({esc(t.get("cwd"))})</a>'
            for t in others
        )
        parts.append(f'<p class="who">other shared processes: {links}</p>')
    if snapshot.get("problem"):
        parts.append(f'<p class="problem">{esc(snapshot["problem"])}</p>')
    if snapshot.get("store_problem"):
        parts.append(f'<p class="problem">the store: {esc(snapshot["store_problem"])}</p>')
    return "".join(parts)


def render_budget(snapshot: dict[str, Any]) -> str:
    budget = snapshot.get("budget")
    if not budget:
        return '<p class="empty">the budget cannot be read now</p>'
    limit = budget.get("limit_usd")
    spent, reserved = budget.get("spent_usd") or 0.0, budget.get("reserved_usd") or 0.0
    facts = {
        "limit": money(limit) if limit is not None else "no cap",
        "period": budget.get("period"),
        "spent": money(spent),
        "reserved": money(reserved),
        "remaining": money(budget.get("remaining_usd")) if limit is not None else "-",
        "all time": money(budget.get("spent_all_time_usd")),
    }
    meter = ""
    if limit:
        meter = (
            f'<meter min="0" max="{esc(limit)}" value="{esc(min(limit, spent + reserved))}" '
            f'high="{esc(limit * 0.8)}">{esc(money(spent))}</meter>'
        )
    rows = [
        [esc(plugin), esc(money(amount)), esc(money((budget.get("reserved_by_plugin") or {}).get(plugin, 0)))]
        for plugin, amount in sorted((budget.get("spent_by_plugin") or {}).items())
    ]
    table = _table(["plugin", "spent this period", "reserved"], rows, "nothing spent this period")
    return _facts(facts) + meter + table


def render_spend(chart: dict[str, Any] | None) -> str:
    """The chart's data (JSON for dashboard.js, which draws it with uPlot) and its totals as text."""
    if not chart:
        return '<p class="empty">the ledger cannot be read now</p>'
    data = json.dumps(chart, separators=(",", ":"))
    totals = " · ".join(
        f'<span data-range="{esc(name)}">{esc(_range_label(name))}: {esc(money(chart[name]["total"]))}</span>'
        for name in RANGES
    )
    # In an attribute, not a <script>: htmx drops script elements from what it swaps in.
    return f'<div id="spend-data" hidden data-chart="{esc(data)}"></div><p class="totals">{totals}</p>'


def _range_label(name: str) -> str:
    return {"day": "last 24 h", "week": "last 7 days", "month": "last 30 days"}[name]


def render_servers(snapshot: dict[str, Any]) -> str:
    servers = snapshot.get("servers") or {}
    if not servers:
        return '<p class="empty">no downstream server is configured</p>'
    rows, tools = [], []
    for name, info in sorted(servers.items()):
        restart = info.get("restart_in_s")
        rows.append(
            [
                esc(name),
                _badge(info.get("state")),
                esc(info.get("transport")),
                esc(max(0, int(info.get("starts") or 0) - 1)),  # the first start is no restart
                esc(info.get("failures_in_a_row")),
                esc(f"in {restart} s" if restart else ""),
                esc(info.get("in_use")),
                f'<span class="error">{esc(info.get("last_error"))}</span>' if info.get("last_error") else "",
            ]
        )
        for tool, m in sorted((info.get("tools") or {}).items()):
            tools.append(
                [
                    esc(name),
                    esc(tool),
                    esc(m.get("calls")),
                    esc(m.get("errors")),
                    *(esc(_ms(m.get(k))) for k in ("p50_ms", "p90_ms", "p99_ms")),
                    f'<span class="error">{esc(m.get("last_error"))}</span>' if m.get("last_error") else "",
                ]
            )
    columns = ["server", "state", "transport", "restarts", "failures", "next start", "in use", "last error"]
    return (
        _table(columns, rows)
        + "<h3>Calls per tool</h3>"
        + _table(
            ["server", "tool", "calls", "errors", "p50", "p90", "p99", "last error"],
            tools,
            "no tool was called through this process yet",
        )
    )


def _ms(value: Any) -> str:
    return "" if value is None else f"{value:g} ms"


def render_sessions(snapshot: dict[str, Any]) -> str:
    now = time.time()
    sessions = [
        [
            esc(s.get("session")),
            esc(f"claude {s['claude_session'][:8]}" if s.get("claude_session") else ""),
            esc(s.get("bridge_pid")),
            esc(s.get("cwd") or ""),
            esc(ago(now - s["connected_at"]) if s.get("connected_at") else ""),
        ]
        for s in snapshot.get("sessions") or []
    ]
    mine = _hub_id(snapshot)
    hubs = [
        [
            esc(i.get("instance")) + (" (this one)" if i.get("instance") == mine else ""),
            esc(i.get("pid")),
            esc(i.get("host")),
            esc(i.get("cwd")),
            esc(_serves(i)),
            esc(i.get("sessions") if i.get("shared") else ""),
            esc(_work(i.get("work"))),
            esc(ago(now - i["started_at"]) if i.get("started_at") else ""),
            esc(i.get("version")),
        ]
        for i in snapshot.get("instances") or []
    ]
    return (
        "<h3>Sessions connected to this process</h3>"
        + _table(["#", "client", "bridge pid", "cwd", "connected"], sessions, "no session is connected")
        + "<h3>Hubs and workers sharing this store</h3>"
        + _table(
            ["instance", "pid", "host", "cwd", "serves", "sessions", "work", "up", "version"], hubs, "none"
        )
    )


def _serves(instance: dict[str, Any]) -> str:
    """What a hub process is (`instance.role`): a shared process, `hub worker`, or a hub in its
    client's process."""
    if instance.get("role") == "worker":
        return "hub worker (no client)"
    return "shared process" if instance.get("shared") else "in its client's process"


def _work(work: Any) -> str:
    """What an instance said it can take and has (`set_capacity`): "pool 1/4 slots"."""
    if not isinstance(work, dict):
        return ""
    parts = []
    for plugin, said in sorted(work.items()):
        if isinstance(said, dict) and said.get("capacity") is not None:
            parts.append(
                f"{plugin} {said.get('busy', 0)}/{said['capacity']} {said.get('unit') or ''}".rstrip()
            )
    return ", ".join(parts)


def fragments(snapshot: dict[str, Any], chart: dict[str, Any] | None) -> dict[str, str]:
    """Each live part of the page, rendered now."""
    return {
        "overview": render_overview(snapshot),
        "panels": render_panels(snapshot),
        "budget": render_budget(snapshot),
        "spend": render_spend(chart),
        "servers": render_servers(snapshot),
        "sessions": render_sessions(snapshot),
    }


def page(parts: dict[str, str], events_url: str) -> str:
    """The whole page, its live parts filled in (the server-sent events replace them)."""
    buttons = "".join(
        f'<button type="button" data-range="{esc(name)}"{" class=on" if name == "day" else ""}>{esc(name)}</button>'
        for name in RANGES
    )
    group = (
        '<button type="button" data-group="plugin" class="on">by plugin</button>'
        '<button type="button" data-group="session">by session</button>'
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>hub dashboard</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="htmx-config" content='{esc(HTMX_CONFIG)}'>
<link rel="stylesheet" href="/static/uPlot.min.css"><link rel="stylesheet" href="/static/dashboard.css">
<script src="/static/htmx.min.js"></script><script src="/static/sse.min.js"></script>
<script src="/static/uPlot.iife.min.js"></script><script src="/static/dashboard.js" defer></script>
</head><body hx-ext="sse" sse-connect="{esc(events_url)}">
<header id="overview" sse-swap="overview">{parts["overview"]}</header>
<p id="live" class="live">connecting...</p>
<div id="flash" role="status"></div>
<main>
<div id="panels" sse-swap="panels">{parts["panels"]}</div>
<section class="card"><h2>Budget</h2><div id="budget" sse-swap="budget">{parts["budget"]}</div>
<h3>Spend over time</h3><div class="chart-controls">{buttons}<span class="sep"></span>{group}</div>
<div id="chart"></div><div id="spend" sse-swap="spend">{parts["spend"]}</div></section>
<section class="card"><h2>Downstream servers</h2><div id="servers" sse-swap="servers">{parts["servers"]}</div></section>
<section class="card"><h2>Sessions and hubs</h2><div id="sessions" sse-swap="sessions">{parts["sessions"]}</div></section>
</main></body></html>"""
