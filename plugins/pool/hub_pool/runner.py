"""One task on one slot: a `claude -p` process, its stream-json output, and its end.

The prompt goes in on stdin (never argv, where `ps` shows it and length is limited). The child
runs in its own process group, so cancelling or timing out kills everything it started, and dies
with the hub (a parent-death signal, `hub.processes.dies_with_parent`); its pid goes to the store
so a hub recovering after this one can kill what is left of the group. `CLAUDECODE` is removed
from its environment (the CLI refuses to run nested otherwise).

Workers start no MCP server but those of `[plugins.pool] worker_mcp_config`: always
`--strict-mcp-config`, so a project whose `.mcp.json` has the hub does not start a hub in every
worker. `HUB_POOL_DEPTH` tells a hub started inside a worker anyway how deep it is.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import signal
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.abc

from hub import dies_with_parent

# Set for every worker: 1 inside a top-level hub's worker, 2 inside a worker of a hub in a worker...
DEPTH_ENV = "HUB_POOL_DEPTH"
KILL_GRACE_S = 3.0
RESULT_GRACE_S = 2.0
STDERR_TAIL = 20


@dataclass
class Invocation:
    command: Sequence[str]
    prompt: str
    model: str | None = None
    effort: str | None = None
    permission_mode: str = "plan"
    system_prompt: str = ""
    max_budget_usd: float | None = None
    resume_session: str | None = None
    cwd: Path | None = None
    timeout_s: float | None = None
    mcp_config: str | None = None  # --mcp-config: a file, or JSON text; None: no MCP servers

    def argv(self) -> list[str]:
        argv = [*self.command, "-p", "--output-format", "stream-json", "--verbose"]
        argv += ["--permission-mode", self.permission_mode]
        if self.mcp_config:
            argv += ["--mcp-config", self.mcp_config]
        argv += ["--strict-mcp-config"]
        if self.model:
            argv += ["--model", self.model]
        if self.effort:
            argv += ["--effort", self.effort]
        if self.system_prompt:
            argv += ["--append-system-prompt", self.system_prompt]
        if self.max_budget_usd is not None:
            argv += ["--max-budget-usd", f"{self.max_budget_usd:.6f}".rstrip("0").rstrip(".")]
        if self.resume_session:
            argv += ["--resume", self.resume_session]
        return argv


@dataclass
class Outcome:
    """How a run ended. `status`: completed | failed | cancelled | timeout."""

    status: str
    output: str = ""
    error: str | None = None
    subtype: str | None = None
    cost_usd: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    session_id: str | None = None
    duration_ms: int = 0
    result: dict[str, Any] | None = field(default=None, repr=False)


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "CLAUDECODE"}
    env.setdefault("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
    env.setdefault("DISABLE_TELEMETRY", "1")
    env.update(extra or {})
    return env


def kill_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


async def run_claude(
    inv: Invocation,
    *,
    on_start: Callable[[int], Awaitable[None] | None] | None = None,
    on_message: Callable[[dict[str, Any]], Awaitable[None]] | None = None,
    env: dict[str, str] | None = None,
) -> Outcome:
    """Run one CLI process to its end. Cancelling this call kills the process group."""
    started = time.monotonic()
    try:
        # Found here, not by the launcher that dies_with_parent puts in front of it, so a missing
        # command is an OSError with a clear message rather than a launcher traceback.
        found = shutil.which(inv.command[0])
        if found is None:
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), inv.command[0])
        process = await anyio.open_process(
            dies_with_parent([found, *inv.argv()[1:]]),
            stdin=-1,
            stdout=-1,
            stderr=-1,
            cwd=str(inv.cwd) if inv.cwd else None,
            env=child_env(env),
            start_new_session=True,
        )
    except OSError as exc:
        return Outcome(
            "failed",
            error=f"cannot run {inv.command[0]!r}: {exc.strerror or exc} (install Claude Code, "
            "npm install -g @anthropic-ai/claude-code, or set [plugins.pool] claude_command)",
        )
    if on_start is not None:
        maybe = on_start(process.pid)
        if maybe is not None:
            await maybe
    stderr_tail: deque[str] = deque(maxlen=STDERR_TAIL)
    result: dict[str, Any] | None = None
    session_id: str | None = None
    got_result = anyio.Event()

    async def feed() -> None:
        assert process.stdin is not None
        with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            await process.stdin.send(inv.prompt.encode())
        with contextlib.suppress(Exception):
            await process.stdin.aclose()

    async def read_stderr() -> None:
        assert process.stderr is not None
        buffer = b""
        async for chunk in process.stderr:
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            stderr_tail.extend(line.decode(errors="replace") for line in lines if line.strip())
        if buffer.strip():
            stderr_tail.append(buffer.decode(errors="replace"))

    async def read_stdout() -> None:
        nonlocal result, session_id
        assert process.stdout is not None
        buffer = b""
        async for chunk in process.stdout:
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for raw in lines:
                if not raw.strip():
                    continue
                try:
                    message = json.loads(raw)
                except ValueError:
                    stderr_tail.append(raw.decode(errors="replace"))
                    continue
                session_id = message.get("session_id") or session_id
                if message.get("type") == "result":
                    result = message
                    got_result.set()
                elif on_message is not None:
                    await on_message(message)

    async def read_and_wait() -> None:
        await read_stdout()
        await process.wait()

    try:
        with anyio.move_on_after(inv.timeout_s if inv.timeout_s else float("inf")) as timer:
            async with anyio.create_task_group() as tg:
                tg.start_soon(feed)
                tg.start_soon(read_stderr)

                async def main() -> None:
                    await read_and_wait()
                    tg.cancel_scope.cancel()  # stderr may be held open by a leftover child

                async def after_result() -> None:
                    # A result is final: a process that lingers after it (a child holding stdout
                    # open) gets a short grace, then the group is killed and the result kept.
                    await got_result.wait()
                    with anyio.move_on_after(RESULT_GRACE_S):
                        await process.wait()
                    tg.cancel_scope.cancel()

                tg.start_soon(main)
                tg.start_soon(after_result)
        timed_out = timer.cancelled_caught and result is None
    finally:
        with anyio.CancelScope(shield=True):
            await _stop(process)  # on every path, cancelled too: nothing the CLI started outlives the task
            await process.aclose()
    duration = int((time.monotonic() - started) * 1000)
    if timed_out:
        return Outcome(
            "timeout",
            error=f"no result within {inv.timeout_s:g} s; the process was killed",
            session_id=session_id,
            duration_ms=duration,
            **_spend(result),
        )
    if result is None:
        tail = " | ".join(list(stderr_tail)[-5:])
        return Outcome(
            "failed",
            error=f"claude exited with code {process.returncode} without a result"
            + (f"; stderr: {tail}" if tail else ""),
            session_id=session_id,
            duration_ms=duration,
        )
    failed = bool(result.get("is_error")) or result.get("subtype") != "success"
    return Outcome(
        "failed" if failed else "completed",
        output=str(result.get("result") or ""),
        error=f"{result.get('subtype')}: {result.get('result') or 'the CLI reported an error'}"
        if failed
        else None,
        subtype=result.get("subtype"),
        session_id=result.get("session_id") or session_id,
        duration_ms=duration,
        result=result,
        **_spend(result),
    )


def _spend(result: dict[str, Any] | None) -> dict[str, Any]:
    if not result:
        return {}
    usage = result.get("usage") or {}
    return {
        "cost_usd": float(result.get("total_cost_usd") or 0.0),
        "input_tokens": int(usage.get("input_tokens") or 0)
        + int(usage.get("cache_creation_input_tokens") or 0)
        + int(usage.get("cache_read_input_tokens") or 0),
        "output_tokens": int(usage.get("output_tokens") or 0),
    }


async def _stop(process: anyio.abc.Process) -> None:
    """SIGTERM the whole group, then SIGKILL it after a grace period."""
    if process.returncode is not None:
        kill_group(process.pid, signal.SIGKILL)  # the leader is gone; its children may not be
        return
    kill_group(process.pid, signal.SIGTERM)
    with anyio.move_on_after(KILL_GRACE_S):
        await process.wait()
    kill_group(process.pid, signal.SIGKILL)
    with anyio.move_on_after(KILL_GRACE_S):
        await process.wait()
