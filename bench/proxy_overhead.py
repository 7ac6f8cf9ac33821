"""A proxied tool call over stdio against the same call made directly, and against FastMCP's proxy
(PyPI `fastmcp`, its own venv: see peers.py), in paired rounds.

All sides are real processes over stdio, opened once and kept warm: client -> downstream;
client -> hub as `.mcp.json` runs it (`hub`: the bridge, which hands the client to the shared
process) -> downstream; client -> `hub --no-share` (`hub_no_share`: in-process) -> downstream;
client -> FastMCP proxy -> downstream. Each round makes CALLS sequential `echo` calls per side
(order rotating per round); a side's figure for the round is its median per call. Reported per
round: each hub's added ms over direct, hub / FastMCP, and the CPU per call of the process that
serves the hub's calls (the shared process; user + system from /proc over the round's calls).
`mcp-hub` serves SSE only: it is compared on that transport in `http_call`.

Targets (issue 15): at most +0.5 ms over direct; below FastMCP (ratio < 1); at most 0.7 ms of hub
CPU per proxied call.

Before / after a change: ``BENCH_HUB_BEFORE=/other/checkout/.venv/bin/python`` adds the same two
hub sides run by that interpreter (another checkout's hub, on a state directory of its own), and
the paired ratios hub / hub before (target: at most 1.05, i.e. unchanged within the noise).

What telemetry costs when on: ``BENCH_TELEMETRY=1`` adds ``hub_no_share_otel``, the `--no-share`
hub exporting traces and metrics by OTLP/HTTP (the standard variables) to a receiver in this
process that answers every export at once, and the paired ratio hub_no_share_otel / hub_no_share
(informative: the target is only that it stays below 1.5).
"""

from __future__ import annotations

import os
import signal
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
DOWNSTREAM = ROOT / "tests" / "peers" / "downstream.py"
ROUNDS = int(os.environ.get("BENCH_ROUNDS", 8))
CALLS = int(os.environ.get("BENCH_CALLS", 100))
BEFORE = os.environ.get("BENCH_HUB_BEFORE")  # the python of another checkout, to compare with
TELEMETRY = os.environ.get("BENCH_TELEMETRY") == "1"  # also a side with OpenTelemetry exporting
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process `pid` (utime + stime)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def find_pid(*markers: str, parent: int | None = None) -> int | None:
    """The pid of a process whose command line contains every one of `markers` (and whose parent
    is `parent`, when given)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if all(m in cmdline for m in markers) and parent in (None, int(stat.rsplit(")", 1)[1].split()[1])):
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


def otlp_sink() -> tuple[str, Callable[[], None]]:
    """An OTLP/HTTP receiver on loopback that drops what it gets (answering 200): its URL and stop."""
    import http.server
    import threading

    class Sink(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length") or 0))
            self.send_response(200)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Sink)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}", server.shutdown


async def run() -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "hub.toml").write_text(
            f'[servers.d]\ncommand = "{sys.executable}"\nargs = ["{DOWNSTREAM}"]\n'
        )
        env = {
            "PATH": os.environ["PATH"],
            "HUB_STATE_DIR": tmp,
            "HUB_LOG_LEVEL": "warning",
            "XDG_RUNTIME_DIR": tmp,
        }
        direct = StdioServerParameters(command=sys.executable, args=[str(DOWNSTREAM)])
        config = f"{tmp}/hub.toml"

        workdir = Path(tmp, "cwd")
        workdir.mkdir()

        def hub(share: str, python: str = sys.executable, config: str = config) -> StdioServerParameters:
            args = ["-m", "hub", "--plugins", "proxy", "--config", config]
            state = {"HUB_STATE_DIR": str(Path(config).parent)}
            # In an empty directory: `python -m` puts its working directory first on sys.path, so
            # run from a checkout it would import that checkout's hub whatever `python` is (and
            # from `tmp`, its runtime directory `hub/`).
            return StdioServerParameters(
                command=python, args=args, env={**env, **state, "HUB_SHARE": share}, cwd=workdir
            )

        before_config = f"{tmp}/before/hub.toml"
        if BEFORE:
            Path(tmp, "before").mkdir()
            Path(before_config).write_text(Path(config).read_text())

        fast_argv = fastmcp_proxy({"d": {"command": sys.executable, "args": [str(DOWNSTREAM)]}})
        rounds = Rounds()
        cpu: list[float] = []
        try:
            async with AsyncExitStack() as stack:
                sides = {"direct": side(*await open_client(stack, direct, "echo"))}
                shared = await open_client(stack, hub("1"), "d__echo")
                sides["hub"] = side(*shared, cpu, find_pid("hub shared", config))
                no_share = await open_client(stack, hub("0"), "d__echo")
                sides["hub_no_share"] = side(*no_share)
                if BEFORE:
                    sides["hub_before"] = side(
                        *await open_client(stack, hub("1", BEFORE, before_config), "d__echo")
                    )
                    before_no_share = await open_client(stack, hub("0", BEFORE, before_config), "d__echo")
                    sides["hub_no_share_before"] = side(*before_no_share)
                if TELEMETRY:
                    sink, stop_sink = otlp_sink()
                    stack.callback(stop_sink)
                    otel = hub("0")
                    otel.env = {**(otel.env or {}), "OTEL_EXPORTER_OTLP_ENDPOINT": sink}
                    sides["hub_no_share_otel"] = side(*await open_client(stack, otel, "d__echo"))
                if fast_argv is not None:
                    fast = StdioServerParameters(
                        command=fast_argv[0], args=fast_argv[1:], env=dict(os.environ)
                    )
                    sides["fastmcp"] = side(*await open_client(stack, fast, "d_echo", "echo"))
                await rounds.run(ROUNDS, sides)
        finally:
            for path in (config, before_config):
                pid = find_pid("hub shared", path)
                if pid is not None:
                    os.kill(pid, signal.SIGTERM)
    checks = {
        "hub_added_ms": (rounds.added("hub", "direct"), 0.5),
        "hub_no_share_added_ms": (rounds.added("hub_no_share", "direct"), 0.5),
    }
    if fast_argv is not None:
        checks["hub_vs_fastmcp"] = (rounds.ratio("hub", "fastmcp"), 1.0)
    if BEFORE:
        checks["hub_vs_before"] = (rounds.ratio("hub", "hub_before"), 1.05)
        checks["hub_no_share_vs_before"] = (rounds.ratio("hub_no_share", "hub_no_share_before"), 1.05)
    if TELEMETRY:
        checks["hub_no_share_otel_vs_off"] = (rounds.ratio("hub_no_share_otel", "hub_no_share"), 1.5)
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
