"""`hub plugins`: the installed plugins, their versions, where they come from and what they
register."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hub.cli.options import add_common, config_from

if TYPE_CHECKING:
    from hub.config.settings import HubConfig

__all__ = ["add_parser", "run"]

HELP = "list installed plugins: version, distribution, what each registers"


def add_parser(commands: Any) -> None:
    parser = commands.add_parser("plugins", help=HELP, description=HELP[0].upper() + HELP[1:] + ".")
    parser.add_argument("--json", action="store_true", help="print JSON")
    add_common(parser, suppress=True)


def run(args: argparse.Namespace) -> int:
    import anyio

    from hub.log import configure_logging

    config = config_from(args)
    configure_logging(config.log_format, "error")  # what matters is printed below, warnings included
    anyio.run(show_plugins, config, args.json)
    return 0


async def show_plugins(config: HubConfig, as_json: bool) -> None:
    """Start every installed plugin in an inspecting hub (no background work, no downstream server
    started) on a copy of the store, and report what each registers: the proxy's tools come from
    the lists it last saw of each server."""
    import tempfile

    from hub.host import Hub
    from hub.plugin.manager import check_plugin_names, discover

    check_plugin_names(config)  # a misspelt name in HUB_PLUGINS or hub.toml is an error here too
    selected = config.plugins.enabled
    everything = config.model_copy(deep=True)
    everything.plugins.enabled = None
    with tempfile.TemporaryDirectory(prefix="hub-plugins-") as tmp:
        _copy_store(config.state_dir / "hub.sqlite", Path(tmp) / "hub.sqlite")
        everything.state_dir = Path(tmp)
        everything.state_url = None  # a PostgreSQL store is never touched: an empty copy inspects
        everything.context = {}
        async with Hub(everything, inspect=True) as hub:
            rows = []
            for name, info in hub.plugins.items():
                row: dict[str, Any] = info.describe()
                row["selected"] = selected is None or name in selected or name == "core"
                row.update(hub.registry.contributions(name))
                rows.append(row)
    if not discover():
        print("hub: no plugins installed besides the core (entry-point group hub.plugins)", file=sys.stderr)
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    for row in rows:
        head = f"{row['name']} {row.get('version') or ''}".strip()
        origin = row.get("distribution") or "built in"
        flags = [] if row.get("selected", True) else ["not selected"]
        if row.get("status") == "failed":
            flags.append(f"FAILED: {row['error']}")
        print(f"{head}  ({origin}){'  [' + '; '.join(flags) + ']' if flags else ''}")
        groups = row.get("tool_groups") or {}
        grouped = {name for names in groups.values() for name in names}
        loose = [name for name in row.get("tools", []) if name not in grouped]
        if loose:
            print(f"  tools: {', '.join(loose)}")
        for group, names in sorted(groups.items()):
            print(f"  tools ({group}): {', '.join(names)}")
        for kind in ("resources", "prompts"):
            if row.get(kind):
                print(f"  {kind}: {', '.join(row[kind])}")
        for warning in row.get("warnings") or []:
            print(f"  warning: {warning}")


def _copy_store(database: Path, copy: Path) -> None:
    """A consistent copy of the store (SQLite's backup), so nothing a plugin does at start while
    being inspected touches the real one; none when there is no store yet or it cannot be read."""
    import sqlite3

    if not database.exists():
        return
    try:
        source = sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=2)
        try:
            target = sqlite3.connect(copy)
            with target:
                source.backup(target)
            target.close()
        finally:
            source.close()
    except sqlite3.Error:
        copy.unlink(missing_ok=True)
