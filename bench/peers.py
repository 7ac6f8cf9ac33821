"""The peers the benchmarks compare the hub with, installed from their registries on first use.

- FastMCP's proxy (PyPI `fastmcp`) in its own venv, `.cache/bench-peers/fastmcp`, so its `mcp`
  pin never touches the hub's: `fastmcp_proxy(config)` is the command line of a stdio proxy over
  an `mcpServers` config (`create_proxy`, run by `fastmcp_proxy.py` in that venv).
- `mcp-hub` (npm) in `.cache/bench-peers/mcp-hub`. It serves the legacy SSE transport only, so
  it is compared on SSE. It fetches a marketplace catalogue at start unless its cache is fresh:
  `mcp_hub_env(home)` points its XDG dirs at a fresh home with a catalogue cache stamped now, and
  there is no network here anyway, so it starts offline.

`python3 bench/peers.py` installs both (the benchmarks do it themselves when a peer is missing).
A peer that cannot be installed is reported as missing, and a benchmark then says so.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import anyio

ROOT = Path(__file__).resolve().parents[1]
PEERS = ROOT / ".cache" / "bench-peers"
FASTMCP_VENV = PEERS / "fastmcp"
MCP_HUB_DIR = PEERS / "mcp-hub"
FASTMCP_PROXY = Path(__file__).resolve().with_name("fastmcp_proxy.py")


def _python(venv: Path) -> Path:
    return venv / "bin" / "python"


def ensure_fastmcp() -> Path | None:
    """The FastMCP venv's python, installing `fastmcp` first if needed; None if it cannot."""
    python = _python(FASTMCP_VENV)
    if python.exists() and subprocess.call([python, "-c", "import fastmcp"], stderr=subprocess.DEVNULL) == 0:
        return python
    try:
        PEERS.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "venv", str(FASTMCP_VENV)], check=True)
        subprocess.run(
            [python, "-m", "pip", "install", "-q", "--disable-pip-version-check", "fastmcp"],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    except (OSError, subprocess.CalledProcessError) as exc:
        print(f"bench: could not install fastmcp: {exc}", file=sys.stderr)
        return None
    return python


def fastmcp_proxy(config: dict[str, object]) -> list[str] | None:
    """argv of FastMCP's proxy over `config` (an `mcpServers` dict), over stdio; None if missing."""
    python = ensure_fastmcp()
    if python is None:
        return None
    return [str(python), str(FASTMCP_PROXY), json.dumps({"mcpServers": config})]


def ensure_mcp_hub() -> Path | None:
    """The `mcp-hub` entry script, installing the npm package first if needed; None if it cannot."""
    script = MCP_HUB_DIR / "node_modules" / "mcp-hub" / "dist" / "cli.js"
    if script.exists():
        return script
    npm = shutil.which("npm")
    if npm is None:
        return None
    try:
        MCP_HUB_DIR.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [npm, "install", "--no-audit", "--no-fund", "--prefix", str(MCP_HUB_DIR), "mcp-hub"],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    except (OSError, subprocess.CalledProcessError) as exc:
        print(f"bench: could not install mcp-hub: {exc}", file=sys.stderr)
        return None
    if not script.exists():  # the entry moved: take the package's bin
        found = list((MCP_HUB_DIR / "node_modules" / ".bin").glob("mcp-hub"))
        return found[0].resolve() if found else None
    return script


def mcp_hub_env(home: Path) -> dict[str, str]:
    """An environment in which mcp-hub starts offline: its own HOME and XDG dirs, and a marketplace
    catalogue cache (`$XDG_DATA_HOME/mcp-hub/cache/registry.json`) fetched "now", with one
    placeholder entry (an empty catalogue counts as stale), so it does not go to the network."""
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    for kind in ("CONFIG", "DATA", "STATE"):
        path = home / kind.lower()
        path.mkdir(parents=True, exist_ok=True)
        env[f"XDG_{kind}_HOME"] = str(path)
    env["HOME"] = str(home)
    cache = home / "data" / "mcp-hub" / "cache" / "registry.json"
    cache.parent.mkdir(parents=True, exist_ok=True)
    entry = {"id": "placeholder", "name": "placeholder", "description": "offline bench"}
    cache.write_text(
        json.dumps(
            {
                "registry": {"servers": [entry]},
                "lastFetchedAt": int(time.time() * 1000),
                "serverDocumentation": {},
            }
        )
    )
    return env


@contextlib.asynccontextmanager
async def mcp_hub_server(servers: dict[str, dict[str, object]], home: Path) -> AsyncIterator[str | None]:
    """Run mcp-hub over `servers` (an `mcpServers` dict), offline, on a free loopback port; yield
    its SSE endpoint (`.../mcp`) once every server is connected, or None if it is not installed."""
    script = ensure_mcp_hub()
    node = shutil.which("node")
    if script is None or node is None:
        yield None
        return
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = home / "mcp-hub.json"
    home.mkdir(parents=True, exist_ok=True)
    config.write_text(json.dumps({"mcpServers": servers}))
    log = (home / "mcp-hub.log").open("w")
    process = subprocess.Popen(  # noqa: ASYNC220 (a server for the whole run)
        [node, str(script), "--port", str(port), "--config", str(config)],
        env=mcp_hub_env(home),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        import httpx2 as httpx

        async with httpx.AsyncClient() as http:
            with anyio.fail_after(120):
                while True:
                    if process.poll() is not None:
                        raise RuntimeError(f"mcp-hub exited: see {home / 'mcp-hub.log'}")
                    try:
                        health = (await http.get(f"http://127.0.0.1:{port}/api/health")).json()
                        states = [s.get("status") for s in health.get("servers", [])]
                        if len(states) == len(servers) and all(state == "connected" for state in states):
                            break
                    except (httpx.HTTPError, ValueError):
                        pass
                    await anyio.sleep(0.2)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


if __name__ == "__main__":
    print("fastmcp:", ensure_fastmcp())
    print("mcp-hub:", ensure_mcp_hub())
