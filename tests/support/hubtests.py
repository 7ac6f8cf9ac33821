"""Helpers shared by the core tests."""

from __future__ import annotations

import contextlib
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
ROOT = TESTS.parent
# The small downstream MCP server kept in the tests (echo, slow, failing, crashing tools).
DOWNSTREAM = TESTS / "peers" / "downstream.py"
NPM_BIN = ROOT / ".cache" / "npm" / "node_modules" / ".bin"


def npm_bin(name: str) -> str:
    """The path of an npm test package's command (installed by `python3 dev.py test`)."""
    path = NPM_BIN / name
    if not path.exists():
        raise FileNotFoundError(
            f"{path} is missing: run `python3 dev.py test`, which installs the npm test packages"
        )
    return str(path)


def readme_mcp_entry() -> dict:
    """The `.mcp.json` entry for the hub exactly as the docs show it (docs/claude-code.md)."""
    import json
    import re

    text = (ROOT / "docs" / "claude-code.md").read_text()
    blocks = re.findall(r"```json\n(.*?)```", text, re.S)
    config = next(json.loads(block) for block in blocks if "mcpServers" in block)
    return config["mcpServers"]["hub"]


def hub_env(tmp_path: Path, pythonpath: Path | None = None, **extra: str) -> dict[str, str]:
    """Environment for a hub subprocess: isolated state and config, optional extra site dir."""
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
    env["HUB_STATE_DIR"] = str(tmp_path / "state")
    # In-process serving (`--no-share`) unless a test asks for the shared process: tests of the
    # bridge (tests/test_shared.py) start and stop shared processes themselves.
    env["HUB_SHARE"] = "0"
    env["XDG_CONFIG_HOME"] = str(tmp_path / "xdg-config")
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    env.update(extra)
    return env


class StdioPeer:
    """A hub subprocess spoken to with raw JSON-RPC lines, for tests that need its pid, exit code
    and stderr (signals, shutdown). Use `start()`, `request()`, `notify()`, then `close()`."""

    def __init__(
        self, args: list[str], env: dict[str, str], cwd: Path, log_name: str = "hub.stderr.log"
    ) -> None:
        import subprocess
        import sys

        self.stderr_path = cwd / log_name
        self._stderr = self.stderr_path.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hub", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=env,
            cwd=cwd,
            text=True,
        )
        self._next_id = 0

    def send(self, message: dict) -> None:
        import json

        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(message) + "\n")
        self.proc.stdin.flush()

    def request(self, method: str, params: dict | None = None, wait: bool = True) -> dict | int:
        self._next_id += 1
        self.send({"jsonrpc": "2.0", "id": self._next_id, "method": method, "params": params or {}})
        if not wait:
            return self._next_id
        return self.read_reply(self._next_id)

    def read_reply(self, request_id: int | str) -> dict:
        """Read messages until the answer to `request_id` (others are dropped)."""
        import json

        assert self.proc.stdout is not None
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise EOFError(f"hub closed stdout; stderr:\n{self.stderr()}")
            message = json.loads(line)
            if message.get("id") == request_id:
                return message

    def wait_for(self, method: str) -> dict:
        """Read messages until a notification `method` arrives (others are dropped): wait on an
        event the hub sends rather than sleeping."""
        import json

        assert self.proc.stdout is not None
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise EOFError(f"hub closed stdout before {method}; stderr:\n{self.stderr()}")
            message = json.loads(line)
            if message.get("method") == method and "id" not in message:
                return message

    def initialize(self) -> dict:
        reply = self.request(
            "initialize",
            {
                "protocolVersion": "2025-11-25",
                "capabilities": {},
                "clientInfo": {"name": "test", "version": "0"},
            },
        )
        self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        assert isinstance(reply, dict)
        return reply

    def stderr(self) -> str:
        self._stderr.flush()
        return self.stderr_path.read_text()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._stderr.close()


class HubProcess(StdioPeer):
    """A real `hub` process on stdio, initialized, whose tools a test calls by name.

    ``hub = HubProcess(tmp_path, "a", env, "--set", "plugins.pool.slots=1")`` starts
    `python -m hub serve` in `tmp_path / "a"` (its own working directory and stderr log);
    ``hub.call("pool_result", task_id=...)`` returns the structured result or raises
    `AssertionError` with the error text; ``hub.call_error(...)`` returns an error's text.
    """

    def __init__(self, tmp_path: Path, name: str, env: dict[str, str], *args: str) -> None:
        cwd = tmp_path / name
        cwd.mkdir(parents=True, exist_ok=True)
        super().__init__(["serve", *args], env, cwd)
        self.name = name
        self.initialize()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _call(self, tool: str, arguments: dict) -> dict:
        reply = self.request("tools/call", {"name": tool, "arguments": arguments})
        assert isinstance(reply, dict)
        assert "result" in reply, f"{self.name}: {tool}: {reply}"
        return reply["result"]

    def call(self, tool: str, **arguments: object) -> dict:
        result = self._call(tool, arguments)
        text = " ".join(b.get("text", "") for b in result.get("content", []))
        assert not result.get("isError"), f"{self.name}: {tool}: {text}"
        return result.get("structuredContent") or {}

    def call_error(self, tool: str, **arguments: object) -> str:
        result = self._call(tool, arguments)
        text = " ".join(b.get("text", "") for b in result.get("content", []))
        assert result.get("isError"), f"{self.name}: {tool} succeeded: {result}"
        return text

    def resource(self, uri: str) -> object:
        """A JSON resource, read through MCP."""
        import json

        reply = self.request("resources/read", {"uri": uri})
        assert isinstance(reply, dict) and "result" in reply, reply
        return json.loads(reply["result"]["contents"][0]["text"])

    def kill9(self) -> None:
        """`kill -9`: no chance to clean up."""
        self.proc.kill()
        self.proc.wait(timeout=10)

    def stop(self) -> int:
        """Close stdin, as a client that goes away does; returns the exit code."""
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        return self.proc.wait(timeout=30)


def stop_shared_hubs(env: dict[str, str], cwd: Path) -> list[int]:
    """Stop the shared hub processes (`hub status`) of `env`'s state directory; their pids."""
    import json
    import os
    import subprocess
    import sys

    hub = os.path.join(os.path.dirname(sys.executable), "hub")
    out = subprocess.run(
        [hub, "status", "--json"], env=env, cwd=cwd, capture_output=True, text=True, check=True
    )
    pids = [entry["pid"] for entry in json.loads(out.stdout)]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 15)
    return pids


def wait_for(check, timeout: float = 30.0, what: str = "the condition"):  # type: ignore[no-untyped-def]
    """Poll `check()` until it returns something truthy, and return that; fail after `timeout`
    seconds (a bound for a hung test, never a timing assertion)."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def gone(pid: int) -> bool:
    """Whether process `pid` has ended (a zombie has)."""
    import psutil

    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True
