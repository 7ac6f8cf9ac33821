"""`hub status`: the shared hub processes of this state directory: from the store, each one then
asked over its socket for its sessions, work in progress and idle timer (`hub.launch.control`)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from hub.cli.options import add_common, light_state_dir

__all__ = ["add_parser", "run", "shared_processes"]


def add_parser(commands: Any) -> None:
    status = commands.add_parser(
        "status",
        help="list the shared hub processes of this state directory",
        description="The shared hub processes (one per launch, behind `hub serve`) of this state "
        "directory: pid, sessions, work in progress, idle timer, memory, working directory, config.",
    )
    status.add_argument("--json", action="store_true", help="print JSON")
    add_common(status, suppress=True)


def shared_processes(state_dir: Path) -> list[dict[str, Any]]:
    """Each live shared process of `state_dir`, as the store and the process itself describe it."""
    import sqlite3

    from hub.launch.control import ControlError, ask
    from hub.launch.shared_process import describe
    from hub.services.instances import Instance

    database = state_dir / "hub.sqlite"
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
    found = []
    for instance in (Instance.from_row(row) for row in rows):
        if not instance.alive():
            continue
        entry = describe(instance)
        entry["pid_start"] = instance.pid_start
        try:
            entry.update(ask(instance.socket or "", "status", timeout_s=2))
            entry["answers"] = True
        except ControlError as exc:
            entry["answers"], entry["problem"] = False, str(exc)
        found.append(entry)
    return found


def run(args: argparse.Namespace) -> int:
    try:
        shared = shared_processes(light_state_dir(args))
    except ValueError as exc:
        print(f"hub status: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(shared, indent=2))
    elif not shared:
        print("no shared hub process is running for this state directory")
    else:
        for entry in shared:
            print(describe_line(entry))
    return 0


def describe_line(entry: dict[str, Any]) -> str:
    """One process in two lines: what it is doing, and which launch it serves."""
    if not entry.get("answers"):
        doing = f"not answering ({entry.get('problem')})"
    elif entry.get("idle_s") is not None:
        doing = f"idle {entry['idle_s']:.0f} s, exits in {entry['exits_in_s']:.0f} s"
    else:
        work = ", ".join(f"{plugin} {count}" for plugin, count in sorted(entry.get("work", {}).items()))
        doing = f"sessions {entry['sessions']}" + (f", work in progress: {work}" if work else "")
    files = ", ".join(entry.get("config_files") or []) or "no hub.toml"
    return (
        f"pid {entry['pid']}  {doing}  up {entry['uptime_s']:.0f} s  rss {entry['rss_mb']} MB\n"
        f"    launch {entry['key']}: cwd {entry['cwd']}, config {files}"
    )
