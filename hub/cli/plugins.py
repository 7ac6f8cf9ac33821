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
    configure_logging(config.log_format, config.log_level)
    anyio.run(show_plugins, config, args.json)
    return 0


async def show_plugins(config: HubConfig, as_json: bool) -> None:
    """Start every installed plugin against a throwaway state dir and report what it registers."""
    import tempfile

    from hub.host import Hub
    from hub.plugin.manager import check_plugin_names, discover

    check_plugin_names(config)  # a misspelt name in HUB_PLUGINS or hub.toml is an error here too
    selected = config.plugins.enabled
    everything = config.model_copy(deep=True)
    everything.plugins.enabled = None
    with tempfile.TemporaryDirectory(prefix="hub-plugins-") as tmp:
        everything.state_dir = Path(tmp)
        everything.context = {}
        async with Hub(everything) as hub:
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
        for kind in ("tools", "resources", "prompts"):
            if row.get(kind):
                print(f"  {kind}: {', '.join(row[kind])}")
