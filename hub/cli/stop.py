"""`hub stop [--all] [--force]`: stop the shared hub process of this launch (or every one of this
state directory). A process with sessions connected or work in progress is named and left
running unless `--force`; a stopped process tells its bridges, which end their sessions."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import time
from typing import Any

from hub.cli.options import add_common, common_argv, light_state_dir, light_state_url

__all__ = ["add_parser", "run"]

EXIT_WAIT_S = 10.0


def add_parser(commands: Any) -> None:
    stop = commands.add_parser(
        "stop",
        help="stop the shared hub process of this launch (--all: every one of this state directory)",
        description="Stop the shared hub process that `hub serve` bridges to for this launch (the same "
        "options, environment and directory). One with sessions connected or work in progress (pool "
        "tasks running or queued) is listed and left running unless --force; its sessions then end. "
        "Batch jobs go on at the API and are polled by the next hub.",
    )
    stop.add_argument("--all", action="store_true", help="every shared process of this state directory")
    stop.add_argument("--force", action="store_true", help="stop even with sessions or work in progress")
    add_common(stop, suppress=True)


def run(args: argparse.Namespace) -> int:
    from hub.cli.status import describe_line, shared_processes

    try:
        state_dir = light_state_dir(args)
        processes = shared_processes(state_dir, light_state_url(args))
        key = None if args.all else launch_key(args, state_dir)
    except (OSError, ValueError) as exc:
        print(f"hub stop: {exc}", file=sys.stderr)
        return 2
    chosen = [p for p in processes if key is None or p["key"] == key]
    if not chosen:
        if args.all or not processes:
            print("no shared hub process is running for this state directory")
        else:
            print(
                f"no shared hub process is running for this launch; {len(processes)} other(s) run on this "
                "state directory (`hub status` lists them, `hub stop --all` stops them)"
            )
        return 0
    refused = 0
    for process in chosen:
        if not _stop(process, force=args.force):
            refused += 1
            print(f"left running: {describe_line(process)}", file=sys.stderr)
    if refused:
        print(
            f"hub stop: {refused} process(es) have sessions connected or work in progress; "
            "nothing was stopped there. --force stops them anyway (their sessions end).",
            file=sys.stderr,
        )
        return 1
    return 0


def launch_key(args: argparse.Namespace, state_dir: Any) -> str:
    """The key of the launch `hub serve` would bridge to with these options, here."""
    from hub.config.paths import config_files
    from hub.launch.bridge import Launch

    files = config_files(args.config, os.environ).paths
    return Launch(common_argv(args), os.environ, state_dir, files).key


def _stop(process: dict[str, Any], *, force: bool) -> bool:
    """Ask `process` to stop (or signal it, if it does not answer and `force`); whether it stopped."""
    from hub.launch.control import ControlError, ask
    from hub.services.instances import process_alive

    pid, start = process["pid"], process.get("pid_start")
    try:
        if not process.get("answers"):
            # Never asked again: its socket may now be another process's (`status._own_answer`).
            raise ControlError(process.get("problem") or "it did not answer")
        answer = ask(process["socket"], "stop", force=force)
        if not answer.get("stopped"):
            return False
    except ControlError as exc:
        if not force:
            print(f"pid {pid} does not answer ({exc}); --force signals it", file=sys.stderr)
            return False
        if process_alive(pid, start):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
                os.kill(pid, signal.SIGCONT)  # a stopped process ends as cleanly as a running one
    deadline = time.monotonic() + EXIT_WAIT_S
    while process_alive(pid, start) and time.monotonic() < deadline:
        time.sleep(0.05)
    if process_alive(pid, start):
        if not force:
            print(f"pid {pid} is still stopping after {EXIT_WAIT_S:g} s", file=sys.stderr)
            return True
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    print(f"stopped pid {pid} (launch {process['key']}, cwd {process['cwd']})")
    return True
