"""`hub statusline`: one line for Claude Code's status line, from the store, without loading
the MCP SDK, pydantic or any plugin (Claude Code runs it on every refresh)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from hub.cli.options import add_common, light_state_dir, light_state_url

__all__ = ["IDLE", "add_parser", "run"]

IDLE = "hub: idle"  # no plugin has anything to say (no batch job, no pool task)


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "statusline",
        help="print the plugins' status line (for Claude Code's statusLine setting)",
        description="Print each plugin's status text, joined by ' | ', from the store; 'hub: idle' "
        "when there is none. Reads --state-dir, HUB_STATE_DIR or hub.toml's state_dir (or the "
        "PostgreSQL store of state_url / HUB_STATE_URL).",
    )
    add_common(parser, suppress=True)


def run(args: argparse.Namespace) -> int:
    """The status line, without loading the SDK, pydantic or any plugin (one read of the store)."""
    from hub.services.statusline import read_lines, read_lines_url

    try:
        path = light_state_dir(args)
        url = light_state_url(args)
    except ValueError as exc:
        print(f"hub statusline: {exc}", file=sys.stderr)
        return 2
    lines = read_lines_url(url) if url else read_lines(path / "hub.sqlite")
    print(" | ".join(lines) if lines else IDLE)  # an empty status line looks broken
    return 0
