"""`hub status`: the shared hub processes of this state directory, read from the store."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from hub.cli.options import add_common, light_state_dir

__all__ = ["add_parser", "run"]


def add_parser(commands: Any) -> None:
    status = commands.add_parser(
        "status",
        help="list the shared hub processes of this state directory",
        description="The shared hub processes (one per launch, behind `hub serve`) of this state "
        "directory: pid, key, sessions, uptime, memory, working directory.",
    )
    status.add_argument("--json", action="store_true", help="print JSON")
    add_common(status, suppress=True)


def run(args: argparse.Namespace) -> int:
    """`hub status`: the shared processes of this state directory, from the store."""
    import sqlite3

    from hub.launch.shared_process import describe
    from hub.services.instances import Instance

    try:
        database = light_state_dir(args) / "hub.sqlite"
    except ValueError as exc:
        print(f"hub status: {exc}", file=sys.stderr)
        return 2
    rows: list[Any] = []
    if database.exists():
        try:
            conn = sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=2)
            conn.row_factory = sqlite3.Row
            try:
                rows = conn.execute(
                    "SELECT * FROM hub_instances WHERE share_key IS NOT NULL AND stopped_at IS NULL"
                ).fetchall()
            finally:
                conn.close()
        except sqlite3.Error:
            rows = []
    shared = [describe(i) for i in (Instance.from_row(r) for r in rows) if i.alive()]
    if args.json:
        print(json.dumps(shared, indent=2))
    elif not shared:
        print("no shared hub process is running for this state directory")
    else:
        for entry in shared:
            print(
                f"pid {entry['pid']}  key {entry['key']}  sessions {entry['sessions']}  "
                f"up {entry['uptime_s']:.0f} s  rss {entry['rss_mb']} MB  cwd {entry['cwd']}"
            )
    return 0
