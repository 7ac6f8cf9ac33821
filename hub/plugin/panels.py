"""Dashboard panels: what a plugin shows on `hub dashboard` (registered with the
`hub_dashboard_panels` hook), and `Panels`, the hub's table of them.

A `Panel` has a title, an async `render()` returning a `PanelView` (key figures, tables, a note)
and named `actions` its tables' buttons run (a pool task's cancel). The view is plain data: the
dashboard renders it to HTML itself (escaped), so a plugin writes no markup and cannot break the
page. A table cell is text or a number, a `PanelLink` (a file on this machine the dashboard
serves, such as a batch job's results), or a `PanelAction` (a button). A column named ``status``
or ``state`` is shown as a coloured badge.

`render` is called about once a second while a dashboard is open (never otherwise), so it should
read what the plugin holds in memory or a few rows of the store; each gets `RENDER_TIMEOUT_S`.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
import structlog

from hub.errors import ToolError
from hub.plugin.items import RegistrationError

__all__ = [
    "RENDER_TIMEOUT_S",
    "Panel",
    "PanelAction",
    "PanelLink",
    "PanelTable",
    "PanelView",
    "Panels",
    "RegisterPanel",
]

log = structlog.get_logger("hub.dashboard")
RENDER_TIMEOUT_S = 2.0
PANEL_NAME = re.compile(r"^[a-z0-9_-]{1,40}$")


@dataclass(frozen=True)
class PanelLink:
    """A link to a file on this machine (`path`, absolute), served by the dashboard while a
    panel shows it; `text` is what the page shows."""

    text: str
    path: str

    def to_json(self) -> dict[str, Any]:
        return {"link": self.text, "path": self.path}


@dataclass(frozen=True)
class PanelAction:
    """A button that runs the panel's action `action` with `args` (JSON-ready); `confirm` is asked
    first when set ("Cancel task_ab12?")."""

    label: str
    action: str
    args: Mapping[str, Any] = field(default_factory=dict)
    confirm: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"button": self.label, "action": self.action, "args": dict(self.args), "confirm": self.confirm}


Cell = str | int | float | bool | None | PanelLink | PanelAction | list[PanelLink | PanelAction]


@dataclass
class PanelTable:
    """A table: `columns` (their names) and `rows` (one cell per column); `empty` is shown when
    there is no row."""

    columns: Sequence[str]
    rows: Sequence[Sequence[Cell | Any]]  # cells: see `Cell`
    title: str | None = None
    empty: str = "none"

    def to_json(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "columns": list(self.columns),
            "rows": [[_cell(value) for value in row] for row in self.rows],
            "empty": self.empty,
        }


@dataclass
class PanelView:
    """What a panel shows now: key figures (`facts`: label -> value), `tables`, and a `note`."""

    facts: dict[str, Any] = field(default_factory=dict)
    tables: list[PanelTable] = field(default_factory=list)
    note: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "facts": {str(k): _cell(v) for k, v in self.facts.items()},
            "tables": [table.to_json() for table in self.tables],
            "note": self.note,
        }


#: An action's handler: ``await handler(args)`` returns a message for the page (or None).
ActionHandler = Callable[[dict[str, Any]], Awaitable[str | None]]


@dataclass
class Panel:
    """One panel of `hub dashboard`.

    `name` is unique within the plugin (lowercase letters, digits, ``_`` and ``-``); `render()`
    returns the `PanelView` shown now; `actions` maps an action's name to its handler, which a
    `PanelAction` button runs (raise `hub.ToolError` to tell the user why it cannot); `order`
    places it among the plugins' panels (smaller first), which the page shows before the core's
    own (budget, downstream servers, sessions)."""

    name: str
    title: str
    render: Callable[[], Awaitable[PanelView]]
    actions: dict[str, ActionHandler] = field(default_factory=dict)
    order: int = 100
    plugin: str = ""  # set when registered


#: The ``register`` argument of `hub_dashboard_panels`.
RegisterPanel = Callable[[Panel], None]


def _cell(value: Any) -> Any:
    if isinstance(value, PanelLink | PanelAction):
        return value.to_json()
    if isinstance(value, list):
        return [_cell(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


class Panels:
    """The panels plugins registered, by (plugin, name)."""

    def __init__(self) -> None:
        self.panels: dict[tuple[str, str], Panel] = {}

    def add(self, panel: Panel, plugin: str) -> None:
        if not PANEL_NAME.match(panel.name):
            raise RegistrationError(
                f"panel name {panel.name!r} of plugin {plugin!r} must be 1-40 lowercase letters, "
                "digits, '_' or '-'"
            )
        if (plugin, panel.name) in self.panels:
            raise RegistrationError(f"plugin {plugin!r} registered panel {panel.name!r} twice")
        panel.plugin = plugin
        self.panels[(plugin, panel.name)] = panel

    def remove_plugin(self, plugin: str) -> None:
        for key in [key for key in self.panels if key[0] == plugin]:
            del self.panels[key]

    async def snapshot(self) -> list[dict[str, Any]]:
        """Every panel rendered now, in order: plugin, name, title, view (or the error that
        stopped it, in one line: one broken panel never hides the others)."""
        out = []
        for panel in sorted(self.panels.values(), key=lambda p: (p.order, p.plugin, p.name)):
            entry: dict[str, Any] = {"plugin": panel.plugin, "name": panel.name, "title": panel.title}
            try:
                with anyio.fail_after(RENDER_TIMEOUT_S):
                    entry["view"] = (await panel.render()).to_json()
            except TimeoutError:
                entry["error"] = f"the panel took longer than {RENDER_TIMEOUT_S:g} s to render"
            except Exception as exc:
                log.exception("a dashboard panel failed to render", plugin=panel.plugin, panel=panel.name)
                entry["error"] = f"{type(exc).__name__}: {exc}"
            out.append(entry)
        return out

    async def act(self, plugin: str, name: str, action: str, args: dict[str, Any]) -> str:
        """Run a panel's action; its message. `ToolError` when there is no such action, or the
        handler refuses (its words)."""
        panel = self.panels.get((plugin, name))
        handler = panel.actions.get(action) if panel is not None else None
        if handler is None:
            raise ToolError(f"no action {action!r} on panel {plugin}/{name}")
        message = await handler(dict(args))
        return message or "done"
