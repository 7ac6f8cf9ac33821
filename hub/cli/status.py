"""`hub status`: the shared hub processes of this state directory: from the store, each one then
asked over its socket for its sessions, work in progress and idle timer (`hub.launch.control`);
and the workers of the store (every live hub or `hub worker`, on any machine, that can take work:
host, slots, busy, heartbeat). A store that cannot be read is said in one line (exit 2)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from hub.cli.options import add_common, light_state_dir, light_state_url

__all__ = ["add_parser", "run", "shared_processes", "workers"]


def add_parser(commands: Any) -> None:
    status = commands.add_parser(
        "status",
        help="list the shared hub processes of this state directory, and the store's workers",
        description="The shared hub processes (one per launch, behind `hub serve`) of this state "
        "directory: pid, sessions, work in progress, idle timer, memory, working directory, config; "
        "then every hub or `hub worker` of the store (on any machine) that can take work: host, "
        "slots, busy, heartbeat.",
    )
    status.add_argument("--json", action="store_true", help="print JSON (the shared processes)")
    status.add_argument("--workers", action="store_true", help="with --json: print the workers instead")
    add_common(status, suppress=True)


def shared_processes(state_dir: Path, url: str | None = None) -> list[dict[str, Any]]:
    """Each live shared process of `state_dir` on this machine, as the store and the process
    itself describe it."""
    import socket

    from hub.launch.control import ControlError, ask
    from hub.launch.shared_process import describe
    from hub.services.backends import read_only_rows
    from hub.services.instances import Instance

    rows = read_only_rows(
        state_dir, url, "SELECT * FROM hub_instances WHERE share_key IS NOT NULL AND stopped_at IS NULL"
    )
    found = []
    here = socket.gethostname()
    for instance in (Instance.from_row(row) for row in rows):
        if instance.host != here or not instance.alive():
            continue
        entry = describe(instance)
        entry["pid_start"] = instance.pid_start
        try:
            answer = ask(instance.socket or "", "status", timeout_s=2)
        except ControlError as exc:
            entry["answers"], entry["problem"] = False, str(exc)
        else:
            entry.update(_own_answer(instance.pid, answer))
        found.append(entry)
    return found


def _own_answer(pid: int, answer: dict[str, Any]) -> dict[str, Any]:
    """What a process's socket answered, if the process itself answered: the socket path of a
    process that stopped answering can be taken over by the launch's next process, and its answer
    (pid, sessions, `hub stop`) is that process's, not this row's."""
    if answer.get("pid", pid) != pid:
        return {
            "answers": False,
            "problem": f"its socket is answered by pid {answer['pid']}, a newer process of the same launch",
        }
    return {**answer, "answers": True}


def workers(state_dir: Path, url: str | None, dead_after_s: float | None = None) -> list[dict[str, Any]]:
    """Every live hub or `hub worker` of the store, on any machine, that can take work."""
    import time

    from hub.services.backends import read_only_rows
    from hub.services.instances import STALE_S, Instance

    rows = read_only_rows(state_dir, url, "SELECT * FROM hub_instances WHERE stopped_at IS NULL", quiet=False)
    found = []
    now = time.time()
    for instance in (Instance.from_row(row, dead_after_s or STALE_S) for row in rows):
        if not instance.work or not instance.alive(now):
            continue
        found.append(
            {
                "instance": instance.id,
                "host": instance.host,
                "pid": instance.pid,
                "role": instance.role,
                "heartbeat_age_s": round(max(0.0, now - instance.heartbeat_at), 1),
                "work": instance.work,
            }
        )
    return found


def run(args: argparse.Namespace) -> int:
    from hub.errors import StoreError

    try:
        state_dir, url = light_state_dir(args), light_state_url(args)
        shared = shared_processes(state_dir, url)
        taking = workers(state_dir, url)
    except ValueError as exc:
        print(f"hub status: {exc}", file=sys.stderr)
        return 2
    except StoreError as exc:
        print(f"hub status: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(taking if args.workers else shared, indent=2))
        return 0
    if not shared:
        print("no shared hub process is running for this state directory")
    for entry in shared:
        print(describe_line(entry))
    if taking:
        print("workers:")
    for entry in taking:
        print(worker_line(entry))
    return 0


def worker_line(entry: dict[str, Any]) -> str:
    """One worker: where it runs, what it can take and has, and how fresh its heartbeat is."""
    work = "; ".join(
        f"{plugin} {w['busy']}/{w['capacity']} {w.get('unit', 'slots')} busy"
        for plugin, w in sorted(entry["work"].items())
    )
    return (
        f"  {entry['host']} pid {entry['pid']} ({entry['role']}, instance {entry['instance']}): {work}, "
        f"heartbeat {entry['heartbeat_age_s']:.0f} s ago"
    )


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
