"""Child processes that must not outlive their hub, and cleaning up after a hub that died.

`dies_with_parent(argv)` wraps a command so that, on Linux, the kernel kills it when the hub
process dies, even by `kill -9` (a parent-death signal, `prctl(PR_SET_PDEATHSIG)`, set by a tiny
Python launcher that then `exec`s the command, because anyio's `open_process` takes no
`preexec_fn`). A child's own children are not covered by that signal: start the child in its own
process group (`start_new_session=True`) and record its pid and `process_start_token(pid)` in
the store, so the hub that recovers after a dead one can `kill_group_left_behind(...)`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Sequence

from hub.services.instances import process_alive, process_start_token

__all__ = ["dies_with_parent", "kill_group_left_behind"]

# exec'd by `python -S -c`: no site import, so it costs a few milliseconds. If the hub died
# before the signal was set, the launcher's parent is already init: it exits instead.
_LAUNCHER = (
    "import ctypes,os,sys\n"
    "ctypes.CDLL(None, use_errno=True).prctl(1, 9, 0, 0, 0)\n"  # PR_SET_PDEATHSIG, SIGKILL
    "os.getppid() == int(sys.argv[1]) or os._exit(137)\n"
    "os.execvp(sys.argv[2], sys.argv[2:])\n"
)


def dies_with_parent(argv: Sequence[str]) -> list[str]:
    """`argv` wrapped so the process is killed when this process dies (Linux; elsewhere as is)."""
    if not sys.platform.startswith("linux") or not argv:
        return list(argv)
    return [sys.executable, "-S", "-c", _LAUNCHER, str(os.getpid()), *argv]


def kill_group_left_behind(pgid: int, leader_start: str | None) -> bool:
    """SIGKILL what is left of process group `pgid`, started by a hub that is gone.

    If the group's leader still runs, it is killed only if it is the same process that was
    recorded (`leader_start`, from `process_start_token`); if the leader is gone, its group can
    only hold its own orphans (the kernel gives no new process a pid still used as a group id).
    Returns whether a signal was sent.
    """
    if pgid <= 1:
        return False
    leader_token = process_start_token(pgid)
    if leader_token is not None and leader_start is not None and leader_token != leader_start:
        return False  # the pid is another process's now
    if leader_token is None and process_alive(pgid, None):
        return False  # not Linux and the pid is in use: cannot tell, leave it
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
        return True
    return False
