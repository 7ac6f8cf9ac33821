"""One hub for every session (issue 14): the shared hub process behind `hub serve`'s stdio bridge,
against the same hub in-process (`--no-share`, as before), in interleaved rounds.

- `start`: spawn of `hub serve` to the answer of `tools/list` (initialize first), the shared
  process already running (warm), median of 9, against `--no-share`. Target: warm <= 100 ms.
- `memory`: 4 concurrent sessions against 1, each with every built-in plugin and one downstream
  stdio server used once: the total RSS of every process involved (bridges, hubs, downstream
  servers). Target (shared): 4 sessions <= 1.3x one session; `--no-share` shown beside it.
- `proxy_call`: 300 sequential proxied `echo` calls through the bridge, against the same through
  an in-process hub and against a client talking to the downstream server directly: median per call.
- `claude_startup`: the real Claude Code CLI answering one `-p` prompt (fake Messages API) with
  the hub in its MCP config, shared process warm and cold, against no MCP server, medians of 5.

Every figure comes with the load average at start and end: on a loaded machine read the ratios,
not the absolute times.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import psutil
from mcp import Client, StdioServerParameters

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "peers"))
from fake_anthropic import FakeAnthropic  # noqa: E402

HUB = str(Path(sys.executable).parent / "hub")
CLAUDE = ROOT / ".cache" / "npm" / "node_modules" / ".bin" / "claude"
DOWNSTREAM = ROOT / "tests" / "peers" / "downstream.py"
INIT = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "bench", "version": "0"}}


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def ratio(values: list[float]) -> dict[str, float]:
    return {
        "median": round(statistics.median(values), 3),
        "min": round(min(values), 3),
        "max": round(max(values), 3),
    }


def setup(work: Path, idle_exit_s: float = 600) -> dict[str, str]:
    (work / "hub.toml").write_text(
        f"[daemon]\nidle_exit_s = {idle_exit_s}\n"
        f'[servers.d]\ncommand = "{sys.executable}"\nargs = ["{DOWNSTREAM}"]\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_") and k != "CLAUDECODE"}
    env.update(HUB_CONFIG=str(work / "hub.toml"), HUB_STATE_DIR=str(work / "state"), HUB_LOG_LEVEL="warning")
    return env


def shared_pids(env: dict[str, str], cwd: Path) -> list[int]:
    out = subprocess.run(
        [HUB, "status", "--json"], env=env, cwd=cwd, capture_output=True, text=True, check=True
    )
    return [entry["pid"] for entry in json.loads(out.stdout)]


def stop_shared(env: dict[str, str], cwd: Path) -> None:
    for pid in shared_pids(env, cwd):
        proc = psutil.Process(pid)
        proc.terminate()
        proc.wait(10)


def time_to_tools(env: dict[str, str], cwd: Path, *args: str) -> float:
    """Spawn `hub serve` and time it to the answer of tools/list (after initialize)."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        [HUB, "serve", *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
        cwd=cwd,
    )
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(
        json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": INIT}).encode() + b"\n"
    )
    proc.stdin.write(b'{"jsonrpc":"2.0","method":"notifications/initialized"}\n')
    proc.stdin.write(b'{"jsonrpc":"2.0","id":2,"method":"tools/list"}\n')
    proc.stdin.flush()
    while True:
        message = json.loads(proc.stdout.readline())
        if message.get("id") == 2:
            break
    elapsed = time.perf_counter() - started
    assert message["result"]["tools"]
    proc.stdin.close()
    proc.wait(30)
    return elapsed


def start(work: Path) -> dict[str, Any]:
    env = setup(work)
    time_to_tools(env, work)  # starts the shared process: warm from here on
    shared, local = [], []
    for _ in range(9):
        shared.append(time_to_tools(env, work))
        local.append(time_to_tools(env, work, "--no-share"))
    stop_shared(env, work)
    return {
        "warm_shared_median_ms": round(statistics.median(shared) * 1000, 1),
        "no_share_median_ms": round(statistics.median(local) * 1000, 1),
        "ratio_shared_vs_no_share": ratio([s / n for s, n in zip(shared, local, strict=True)]),
        "target_warm_ms": 100,
    }


def tree_rss(pids: list[int]) -> int:
    seen: dict[int, int] = {}
    for pid in pids:
        try:
            root = psutil.Process(pid)
            for proc in [root, *root.children(recursive=True)]:
                seen[proc.pid] = proc.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return sum(seen.values())


async def sessions_rss(env: dict[str, str], cwd: Path, count: int, *args: str) -> int:
    """Total RSS with `count` sessions open, each having used the downstream server once."""
    params = StdioServerParameters(command=HUB, args=["serve", *args], env=env, cwd=str(cwd))
    clients = [Client(params, mode="legacy") for _ in range(count)]
    try:
        for client in clients:
            await client.__aenter__()
            for _ in range(100):  # the server is listed once the hub has started and asked it
                if "d__echo" in [t.name for t in (await client.list_tools()).tools]:
                    break
                await anyio.sleep(0.1)
            await client.call_tool("d__echo", {"text": "hi"})
        await anyio.sleep(0.5)
        me = psutil.Process()
        bridges = [p.pid for p in me.children() if "hub" in " ".join(p.cmdline())]
        return tree_rss(bridges + shared_pids(env, cwd))
    finally:
        for client in reversed(clients):
            await client.__aexit__(None, None, None)


async def memory(work: Path) -> dict[str, Any]:
    env = setup(work)
    out: dict[str, Any] = {}
    for mode, args in (("shared", ()), ("no_share", ("--no-share",))):
        one = await sessions_rss(env, work, 1, *args)
        stop_shared(env, work)
        four = await sessions_rss(env, work, 4, *args)
        stop_shared(env, work)
        out[mode] = {
            "one_session_mb": round(one / 2**20, 1),
            "four_sessions_mb": round(four / 2**20, 1),
            "ratio": round(four / one, 3),
        }
    out["target_shared_ratio"] = 1.3
    return out


async def per_call(params: StdioServerParameters, tool: str, calls: int = 300) -> float:
    async with Client(params, mode="legacy") as client:
        for _ in range(100):
            if tool in [t.name for t in (await client.list_tools()).tools]:
                break
            await anyio.sleep(0.1)
        for _ in range(20):
            await client.call_tool(tool, {"text": "warm"})
        times = []
        for i in range(calls):
            started = time.perf_counter()
            await client.call_tool(tool, {"text": f"call {i}"})
            times.append(time.perf_counter() - started)
    return statistics.median(times)


async def proxy_call(work: Path) -> dict[str, Any]:
    env = setup(work)
    direct = StdioServerParameters(command=sys.executable, args=[str(DOWNSTREAM)], env=env, cwd=str(work))
    bridged = StdioServerParameters(command=HUB, args=["serve"], env=env, cwd=str(work))
    local = StdioServerParameters(command=HUB, args=["serve", "--no-share"], env=env, cwd=str(work))
    rounds: dict[str, list[float]] = {"direct": [], "bridge": [], "in_process": []}
    for _ in range(2):
        rounds["direct"].append(await per_call(direct, "echo"))
        rounds["bridge"].append(await per_call(bridged, "d__echo"))
        rounds["in_process"].append(await per_call(local, "d__echo"))
    stop_shared(env, work)
    med = {k: statistics.median(v) for k, v in rounds.items()}
    return {
        "direct_ms": round(med["direct"] * 1000, 3),
        "through_bridge_added_ms": round((med["bridge"] - med["direct"]) * 1000, 3),
        "in_process_added_ms": round((med["in_process"] - med["direct"]) * 1000, 3),
    }


def claude_startup(work: Path) -> dict[str, Any]:
    if not CLAUDE.exists():
        return {"skipped": f"{CLAUDE} is missing (python3 dev.py test installs it)"}
    env = setup(work)
    with FakeAnthropic() as api:
        (work / "home").mkdir()
        entry = {"type": "stdio", "command": HUB, "args": ["serve"], "env": {"HUB_CONFIG": env["HUB_CONFIG"]}}
        (work / "with.json").write_text(json.dumps({"mcpServers": {"hub": entry}}))
        (work / "without.json").write_text(json.dumps({"mcpServers": {}}))
        env.update(
            HOME=str(work / "home"),
            ANTHROPIC_BASE_URL=api.url,
            ANTHROPIC_API_KEY=api.api_key,
            CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1",
            DISABLE_TELEMETRY="1",
        )

        def run(config: str) -> float:
            started = time.perf_counter()
            done = subprocess.run(
                [
                    str(CLAUDE),
                    "-p",
                    "hello",
                    "--mcp-config",
                    str(work / config),
                    "--strict-mcp-config",
                    "--model",
                    "claude-sonnet-4-5",
                ],
                capture_output=True,
                text=True,
                env=env,
                cwd=work,
                timeout=120,
            )
            assert done.returncode == 0, done.stderr[-500:]
            return time.perf_counter() - started

        run("with.json")  # warms the CLI's own caches
        times: dict[str, list[float]] = {"none": [], "warm": [], "cold": []}
        for _ in range(5):
            times["none"].append(run("without.json"))
            times["warm"].append(run("with.json"))  # the shared process is up from the run before
            stop_shared(env, work)
            times["cold"].append(run("with.json"))
        stop_shared(env, work)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "no_mcp_median_s": round(med["none"], 3),
        "warm_added_s": round(med["warm"] - med["none"], 3),
        "cold_added_s": round(med["cold"] - med["none"], 3),
        "target_added_s": 0.5,
    }


async def run_all() -> dict[str, Any]:
    result: dict[str, Any] = {"benchmark": "shared_hub", "load_average_start": load()}
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        for name in ("start", "memory", "proxy_call", "claude_startup"):
            work = base / name
            work.mkdir()
            step = globals()[name]
            result[name] = (
                await step(work)
                if name in ("memory", "proxy_call")
                else await anyio.to_thread.run_sync(step, work)
            )
    result["load_average_end"] = load()
    return result


def main() -> dict[str, Any]:
    return anyio.run(run_all)


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
