"""Bridges (`hub serve` over stdio, sharing on) driven by raw JSON-RPC lines, with every line
they write kept: for tests that count replies (each request answered exactly once) through
faults of the shared process behind them."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psutil

VENV_BIN = str(Path(sys.executable).parent)
INIT = {
    "protocolVersion": "2025-11-25",
    "capabilities": {},
    "clientInfo": {"name": "test", "version": "0"},
}


class Bridge:
    """`hub serve` (a bridge) with a thread reading its stdout: `messages` holds every message
    it wrote, in order; `wait_reply(id)` waits for an answer without reading past others."""

    def __init__(self, env: dict[str, str], cwd: Path, *args: str, sockets: bool = False) -> None:
        """`sockets`: stdin and stdout are Unix sockets, as Node (Claude Code) gives them, not pipes."""
        self.stderr_path = cwd / f"bridge-{time.monotonic_ns()}.log"
        ends: list[socket.socket] = []
        stdio: dict[str, Any] = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE}
        if sockets:
            ours_in, theirs_in = socket.socketpair()
            ours_out, theirs_out = socket.socketpair()
            ends = [theirs_in, theirs_out]
            stdio = {"stdin": theirs_in.fileno(), "stdout": theirs_out.fileno()}
        self.proc = subprocess.Popen(
            [os.path.join(VENV_BIN, "hub"), "serve", *args],
            stderr=self.stderr_path.open("w"),
            env=env,
            cwd=cwd,
            **stdio,
        )
        for end in ends:
            end.close()
        if sockets:
            self.proc.stdin = ours_in.makefile("wb")
            self.proc.stdout = ours_out.makefile("rb")
            self._sockets = (ours_in, ours_out)
        self.messages: list[dict[str, Any]] = []
        self.garbage: list[bytes] = []  # lines that were not JSON
        self.ended = False
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                message = json.loads(line)
            except ValueError:
                message = None
            with self._changed:
                if isinstance(message, dict):
                    self.messages.append(message)
                else:
                    self.garbage.append(line)
                self._changed.notify_all()
        with self._changed:
            self.ended = True
            self._changed.notify_all()

    def write(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def send(self, message: dict[str, Any]) -> None:
        self.write(json.dumps(message).encode() + b"\n")

    def replies(self, request_id: Any) -> list[dict[str, Any]]:
        with self._changed:
            return [m for m in self.messages if m.get("id") == request_id and "method" not in m]

    def wait_replies(self, ids: list[Any], timeout: float = 60.0) -> None:
        """Wait until each of `ids` has at least one answer (a bound for a hung test)."""
        wanted = set(ids)
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                answered = {m.get("id") for m in self.messages if "method" not in m}
                if wanted <= answered:
                    return
                left = deadline - time.monotonic()
                if left <= 0 or self.ended:
                    missing = sorted(wanted - answered, key=str)
                    raise AssertionError(
                        f"no answer to {missing}; stderr: {self.stderr_path.read_text()[-3000:]}"
                    )
                self._changed.wait(left)

    def request(self, request_id: Any, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        self.send({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params or {}})
        self.wait_replies([request_id])
        return self.replies(request_id)[0]

    def initialize(self) -> dict[str, Any]:
        reply = self.request("init", "initialize", INIT)
        self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        return reply

    def answer_counts(self) -> Counter[Any]:
        with self._changed:
            return Counter(m.get("id") for m in self.messages if "method" not in m)

    def finish(self, timeout: float = 60.0) -> int:
        """Close stdin (the session answers what it read, then ends) and read to the end."""
        if self.proc.stdin and not self.proc.stdin.closed:
            self.proc.stdin.close()
        if hasattr(self, "_sockets"):
            self._sockets[0].shutdown(socket.SHUT_WR)  # the file object alone leaves it open
        try:
            code = self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
        self._reader.join(timeout)
        return code


def shared_pids(cwd: Path) -> list[int]:
    """The shared hub processes started in `cwd` (found by command line, not by asking them)."""
    found = []
    for proc in psutil.process_iter(["cmdline", "cwd"]):
        try:
            cmdline = " ".join(proc.info["cmdline"] or [])
            if "-m hub shared " in cmdline and proc.info["cwd"] == str(cwd) and proc.status() != "zombie":
                found.append(proc.pid)
        except psutil.Error:
            continue
    return found
