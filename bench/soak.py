"""Soak (issue 27): the shared hub process under sustained load, then under session churn.

- `calls`: 20,000 proxied `echo` calls (the test downstream server, `tests/peers/downstream.py`)
  at concurrency 50 across 5 sessions (5 bridges, 10 calls in flight each) on one shared
  process: errors (must be 0), p50/p99/max per call, calls per second.
- `churn`: then 400 sessions coming and going, 8 at a time: each a new `hub serve` bridge that
  initializes, makes one proxied call and leaves: errors (must be 0), p50/p99 per session.
- `resources`: the shared process's RSS and open descriptors before and after the calls (after
  a warm-up of 1,000 calls, 5 sessions open), and before and after the churn (no session open):
  flat, no growth per call or per session; and its downstream servers (one, whatever the number
  of sessions). Also the shared process's CPU per call.

`SOAK_CALLS`, `SOAK_SESSIONS` change the counts. Driven with raw JSON-RPC lines (asyncio
subprocess pipes), so the driver adds little per call; the load average is reported at start
and end.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]
HUB = str(Path(sys.executable).parent / "hub")
DOWNSTREAM = ROOT / "tests" / "peers" / "downstream.py"
INIT = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "soak", "version": "0"}}
SESSIONS, IN_FLIGHT, WARM_UP = 5, 10, 1000


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


class Session:
    """One `hub serve` bridge, with a reader task matching answers to requests."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.waiting: dict[Any, asyncio.Future[dict[str, Any]]] = {}
        self.next_id = 0
        self.reader = asyncio.create_task(self._read())

    @classmethod
    async def open(cls, env: dict[str, str], cwd: Path) -> Session:
        proc = await asyncio.create_subprocess_exec(
            HUB,
            "serve",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            env=env,
            cwd=cwd,
            limit=1 << 24,
        )
        session = cls(proc)
        await session.request("initialize", INIT)
        session.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        return session

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            message = json.loads(line)
            future = self.waiting.pop(message.get("id"), None) if "method" not in message else None
            if future is not None and not future.done():
                future.set_result(message)
        for future in self.waiting.values():
            future.set_exception(EOFError("the bridge closed its output"))

    def send(self, message: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(message).encode() + b"\n")

    async def request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        self.next_id += 1
        future = self.waiting[self.next_id] = asyncio.get_running_loop().create_future()
        self.send({"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params})
        return await future

    async def call(self, text: str) -> bool:
        """One proxied echo; whether it was answered right."""
        reply = await self.request("tools/call", {"name": "d__echo", "arguments": {"text": text}})
        result = reply.get("result") or {}
        content = result.get("content") or [{}]
        return not result.get("isError") and content[0].get("text") == text

    async def close(self) -> int:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        code = await self.proc.wait()
        await self.reader
        return code


def _shared_process(cwd: Path) -> psutil.Process:
    for proc in psutil.process_iter(["cmdline", "cwd"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if "-m hub shared " in cmdline and proc.info["cwd"] == str(cwd):
            return proc
    raise RuntimeError("no shared process")


def _resources(proc: psutil.Process) -> dict[str, Any]:
    children = [c for c in proc.children(recursive=True) if "downstream" in " ".join(c.cmdline())]
    return {
        "rss_mb": round(proc.memory_info().rss / 2**20, 1),
        "fds": proc.num_fds(),
        "threads": proc.num_threads(),
        "downstream_servers": len(children),
    }


def _percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "p50_ms": round(statistics.median(ordered) * 1000, 3),
        "p99_ms": round(ordered[int(len(ordered) * 0.99) - 1] * 1000, 3),
        "max_ms": round(ordered[-1] * 1000, 3),
    }


async def _calls(sessions: list[Session], total: int) -> dict[str, Any]:
    """`total` calls, `IN_FLIGHT` at a time per session."""
    latencies: list[float] = []
    errors = 0
    per_worker = total // (len(sessions) * IN_FLIGHT)

    async def worker(session: Session, worker_id: int) -> None:
        nonlocal errors
        for n in range(per_worker):
            started = time.perf_counter()
            ok = await session.call(f"w{worker_id}-{n}")
            latencies.append(time.perf_counter() - started)
            errors += not ok

    started = time.perf_counter()
    await asyncio.gather(
        *(worker(session, i * IN_FLIGHT + k) for i, session in enumerate(sessions) for k in range(IN_FLIGHT))
    )
    elapsed = time.perf_counter() - started
    return {
        "calls": len(latencies),
        "errors": errors,
        "calls_per_s": round(len(latencies) / elapsed),
        **_percentiles(latencies),
    }


async def _churn(env: dict[str, str], cwd: Path, count: int, at_once: int = 8) -> dict[str, Any]:
    """`count` sessions, `at_once` at a time: open, one call, close."""
    durations: list[float] = []
    errors = 0
    limiter = asyncio.Semaphore(at_once)

    async def one(n: int) -> None:
        nonlocal errors
        async with limiter:
            started = time.perf_counter()
            try:
                session = await Session.open(env, cwd)
                ok = await session.call(f"churn-{n}")
                ok = await session.close() == 0 and ok
            except Exception:
                ok = False
            durations.append(time.perf_counter() - started)
            errors += not ok

    await asyncio.gather(*(one(n) for n in range(count)))
    return {"sessions": len(durations), "errors": errors, **_percentiles(durations)}


async def soak(work: Path) -> dict[str, Any]:
    (work / "hub.toml").write_text(
        f'[daemon]\nidle_exit_s = 600\n[servers.d]\ncommand = "{sys.executable}"\nargs = ["{DOWNSTREAM}"]\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_") and k != "CLAUDECODE"}
    env.update(
        HUB_CONFIG=str(work / "hub.toml"),
        HUB_STATE_DIR=str(work / "state"),
        HUB_LOG_LEVEL="warning",
        HUB_PLUGINS="proxy",
    )
    sessions = [await Session.open(env, work) for _ in range(SESSIONS)]
    shared = _shared_process(work)
    try:
        while "d__echo" not in [
            t["name"] for t in (await sessions[0].request("tools/list", {}))["result"]["tools"]
        ]:
            await asyncio.sleep(0.1)  # the proxy learns the server's tools in the background
        warm = await _calls(sessions, WARM_UP)
        before = _resources(shared)
        cpu = shared.cpu_times()
        calls = await _calls(sessions, int(os.environ.get("SOAK_CALLS", "20000")))
        spent = shared.cpu_times()
        calls["hub_cpu_ms_per_call"] = round(
            (spent.user + spent.system - cpu.user - cpu.system) * 1000 / calls["calls"], 3
        )
        after_calls = _resources(shared)
        for session in sessions:
            await session.close()
        await _no_sessions(work, env)
        before_churn = _resources(shared)
        churn = await _churn(env, work, int(os.environ.get("SOAK_SESSIONS", "400")))
        await _no_sessions(work, env)
        after_churn = _resources(shared)
    finally:
        shared.terminate()
        shared.wait(30)
    return {
        "warm_up": {"calls": warm["calls"], "errors": warm["errors"]},
        "calls": {"concurrency": SESSIONS * IN_FLIGHT, "sessions": SESSIONS, **calls},
        "churn": churn,
        "resources": {
            "calls": {"before": before, "after": after_calls},
            "churn": {"before": before_churn, "after": after_churn},
        },
        "errors": warm["errors"] + calls["errors"] + churn["errors"],
    }


async def _no_sessions(work: Path, env: dict[str, str]) -> None:
    """Wait until the shared process has no session left (`hub status`)."""
    for _ in range(300):
        proc = await asyncio.create_subprocess_exec(
            HUB, "status", "--json", stdout=asyncio.subprocess.PIPE, env=env, cwd=work
        )
        out, _ = await proc.communicate()
        if all(entry["sessions"] == 0 for entry in json.loads(out)):
            return
        await asyncio.sleep(0.1)


def main() -> dict[str, Any]:
    start_load = load()
    with tempfile.TemporaryDirectory(prefix="hub-soak-") as tmp:
        result = asyncio.run(soak(Path(tmp)))
    grew = {
        phase: {
            "rss_mb": round(seen["after"]["rss_mb"] - seen["before"]["rss_mb"], 1),
            "fds": seen["after"]["fds"] - seen["before"]["fds"],
        }
        for phase, seen in result["resources"].items()
    }
    return {
        "benchmark": "soak",
        "load_start": start_load,
        "load_end": load(),
        **result,
        "growth": grew,
        "verdict": {
            "errors_zero": result["errors"] == 0,
            "fds_flat": all(g["fds"] <= 0 for g in grew.values()),
            "rss_flat_within_10_mb": all(g["rss_mb"] <= 10 for g in grew.values()),
        },
    }


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
