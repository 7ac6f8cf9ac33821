"""A proxied tool call over stdio against the same call made directly, and against FastMCP's proxy
(PyPI `fastmcp`, its own venv: see peers.py), in paired rounds.

All sides are real processes over stdio, opened once and kept warm: client -> downstream,
client -> hub (proxy plugin) -> downstream, client -> FastMCP proxy -> downstream. Each round
makes CALLS sequential `echo` calls per side (order rotating per round); a side's figure for the
round is its median per call. Reported per round: the hub's added ms over direct, the hub / FastMCP
ratio, and the hub process's CPU per call (user + system, from /proc, over the round's calls).
`mcp-hub` serves SSE only: it is compared on that transport in `http_call`.

Targets (issue 15): at most +0.5 ms over direct; below FastMCP (ratio < 1); at most 0.7 ms of hub
CPU per proxied call.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path

import anyio
from mcp import Client, StdioServerParameters
from paired import Rounds, load, spread, summary
from peers import fastmcp_proxy

ROOT = Path(__file__).resolve().parents[1]
DOWNSTREAM = ROOT / "tests" / "servers" / "downstream.py"
ROUNDS = int(os.environ.get("BENCH_ROUNDS", 8))
CALLS = int(os.environ.get("BENCH_CALLS", 100))
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process `pid` (utime + stime)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def child_pid(marker: str) -> int | None:
    """The pid of our child process whose command line contains `marker`."""
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == me and marker in cmdline:
            return int(entry.name)
    return None


async def open_client(
    stack: AsyncExitStack, params: StdioServerParameters, *names: str
) -> tuple[Client, str]:
    """A connected client and the first of `names` it serves (proxies name tools differently)."""
    client = await stack.enter_async_context(Client(params, mode="legacy"))
    with anyio.fail_after(60):  # a server the hub has never seen is listed once it has started
        while not (found := [n for n in names if n in {t.name for t in (await client.list_tools()).tools}]):
            await anyio.sleep(0.05)
    for _ in range(20):  # warm-up (and, for the proxies, start the downstream server)
        await client.call_tool(found[0], {"text": "x"})
    return client, found[0]


def side(
    client: Client, tool: str, cpu: list[float] | None = None, pid: int | None = None
) -> Callable[[], Awaitable[float]]:
    async def measure() -> float:
        before = cpu_seconds(pid) if pid else 0.0
        times = []
        for _ in range(CALLS):
            started = time.perf_counter()
            await client.call_tool(tool, {"text": "x"})
            times.append(time.perf_counter() - started)
        if pid and cpu is not None:
            cpu.append((cpu_seconds(pid) - before) / CALLS)
        return statistics.median(times)

    return measure


async def run() -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "hub.toml").write_text(
            f'[servers.d]\ncommand = "{sys.executable}"\nargs = ["{DOWNSTREAM}"]\n'
        )
        env = {"PATH": os.environ["PATH"], "HUB_STATE_DIR": tmp, "HUB_LOG_LEVEL": "warning"}
        direct = StdioServerParameters(command=sys.executable, args=[str(DOWNSTREAM)])
        marker = f"{tmp}/hub.toml"
        hub = StdioServerParameters(
            command=sys.executable,
            args=["-m", "hub", "--plugins", "proxy", "--config", marker],
            env=env,
        )
        fast_argv = fastmcp_proxy({"d": {"command": sys.executable, "args": [str(DOWNSTREAM)]}})
        rounds = Rounds()
        cpu: list[float] = []
        async with AsyncExitStack() as stack:
            sides = {"direct": side(*await open_client(stack, direct, "echo"))}
            sides["hub"] = side(*await open_client(stack, hub, "d__echo"), cpu, child_pid(marker))
            if fast_argv is not None:
                fast = StdioServerParameters(command=fast_argv[0], args=fast_argv[1:], env=dict(os.environ))
                sides["fastmcp"] = side(*await open_client(stack, fast, "d_echo", "echo"))
            await rounds.run(ROUNDS, sides)
    checks = {"hub_added_ms": (rounds.added("hub", "direct"), 0.5)}
    if fast_argv is not None:
        checks["hub_vs_fastmcp"] = (rounds.ratio("hub", "fastmcp"), 1.0)
    if cpu:
        checks["hub_cpu_ms_per_call"] = (spread([c * 1000 for c in cpu]), 0.7)
    return {
        "benchmark": "proxy_overhead",
        "rounds": ROUNDS,
        "calls_per_round": CALLS,
        "per_call_ms": {name: rounds.side(name) for name in rounds.values},
        "fastmcp": "measured" if fast_argv is not None else "not installed (see bench/peers.py)",
        **summary(rounds, checks),
        "load_now": load(),
    }


def main() -> dict[str, object]:
    return anyio.run(run)


if __name__ == "__main__":
    import json

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    print(json.dumps(main(), indent=2))
