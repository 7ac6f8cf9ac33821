"""`hub worker` processes for the tests: on this machine, or in a network namespace of their own
with a host name of their own (`ip netns exec NS unshare --uts`), reaching PostgreSQL over TCP
across a veth pair as another machine would (`pgserver.netns_host`)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

__all__ = ["WorkerProcess"]


class WorkerProcess:
    """``WorkerProcess(cwd, env, "--slots", "2", netns="ns", hostname="box2")``; `kill9()`, `stop()`."""

    def __init__(
        self,
        cwd: Path,
        env: dict[str, str],
        *args: str,
        netns: str | None = None,
        hostname: str | None = None,
    ) -> None:
        cwd.mkdir(parents=True, exist_ok=True)
        self.stderr_path = cwd / "worker.stderr.log"
        self._stderr = self.stderr_path.open("w")
        argv = [sys.executable, "-m", "hub", "worker", *args]
        if netns is not None:
            # `ip netns exec` and `unshare` exec what follows: the Popen pid is the worker's own.
            name = hostname or netns
            argv = [
                "ip",
                "netns",
                "exec",
                netns,
                "unshare",
                "--uts",
                "sh",
                "-c",
                f'hostname {name} && exec "$@"',
                "sh",
                *argv,
            ]
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self._stderr, env=env, cwd=cwd
        )
        self.hostname = hostname

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stderr(self) -> str:
        if not self._stderr.closed:
            self._stderr.flush()
        return self.stderr_path.read_text()

    def kill9(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=10)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=30)
        finally:
            self._stderr.close()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if not self._stderr.closed:
            self._stderr.close()


def kill_leftovers(pids: list[int]) -> None:
    """Kill what a test's fake CLIs left (a worker killed with -9 leaves its task's group)."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
