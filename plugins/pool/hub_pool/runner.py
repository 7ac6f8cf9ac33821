"""One task on one slot: a `claude -p` process, its stream-json output, and its end.

The prompt goes in on stdin (never argv, where `ps` shows it to every user and length is
limited), and so does nothing else secret: the system prompt (with the shared context) and an
`mcpServers` table given as JSON (its servers' env and headers) go in files only this user can
read (0600 in a 0700 directory, `private_files`), removed when the run ends. Every option takes
its value in one argument (`--resume=ID`) and `--` ends the options, so no value (a session id
that reads `--dangerously-skip-permissions`) can be taken for an option. The child
runs in its own process group, so cancelling or timing out kills everything it started, and dies
with the hub (a parent-death signal, `hub.processes.dies_with_parent`); its pid goes to the store
so a hub recovering after this one can kill what is left of the group. `CLAUDECODE` is removed
from its environment (the CLI refuses to run nested otherwise).

Workers start no MCP server but those of `[plugins.pool] worker_mcp_config`: always
`--strict-mcp-config`, so a project whose `.mcp.json` has the hub does not start a hub in every
worker. `HUB_POOL_DEPTH` tells a hub started inside a worker anyway how deep it is.

The CLI says what a run cost only in its final `result` line; a run that ends without one (killed,
timed out, crashed) has an unknown cost, which `Outcome.cost_reported` and `Seen` tell the pool.
The usage of the assistant messages printed on the way is summed as the tokens seen.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import signal
import tempfile
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
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

    def argv(self, files: Mapping[str, str] | None = None) -> list[str]:
        """The command line; `files`: the paths `private_files` wrote the secret values to."""
        files = files or {}
        argv = [*self.command, "-p", "--output-format=stream-json", "--verbose"]
        argv.append(f"--permission-mode={self.permission_mode}")
        mcp_config = files.get("mcp_config", self.mcp_config)
        if mcp_config:
            argv.append(f"--mcp-config={mcp_config}")
        argv.append("--strict-mcp-config")
        if self.model:
            argv.append(f"--model={self.model}")
        if self.effort:
            argv.append(f"--effort={self.effort}")
        if "system_prompt" in files:
            argv.append(f"--append-system-prompt-file={files['system_prompt']}")
        if self.max_budget_usd is not None:
            argv.append("--max-budget-usd=" + f"{self.max_budget_usd:.6f}".rstrip("0").rstrip("."))
        if self.resume_session:
            argv.append(f"--resume={self.resume_session}")
        argv.append("--")  # the options end here
        return argv


@contextlib.contextmanager
def private_files(inv: Invocation) -> Iterator[dict[str, str]]:
    """The values of `inv` that must not show on a command line, each in a file only this user
    can read (a 0700 directory of `tempfile.mkdtemp`, 0600 files), removed when the block ends:
    {"system_prompt": path, "mcp_config": path}, for those it has."""
    values = {}
    if inv.system_prompt:
        values["system_prompt"] = ("system-prompt.txt", inv.system_prompt)
    if inv.mcp_config and inv.mcp_config.lstrip().startswith("{"):  # JSON text, not a file's path
        values["mcp_config"] = ("mcp.json", inv.mcp_config)
    if not values:
        yield {}
        return
    directory = tempfile.mkdtemp(prefix="hub-pool-")
    try:
        paths = {}
        for key, (name, text) in values.items():
            path = os.path.join(directory, name)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
            paths[key] = path
        yield paths
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@dataclass
class Outcome:
    """How a run ended. `status`: completed | failed | cancelled | timeout.

    `cost_usd` is the `total_cost_usd` of the CLI's final result line; `cost_reported` says
    whether it printed one (without it the spend cannot be known). `seen_*_tokens` sum the usage
    of the assistant messages it printed: a floor of the work done, known even when the cost is not.
    """

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
    spawned: bool = False
    cost_reported: bool = False
    seen_input_tokens: int = 0
    seen_output_tokens: int = 0


@dataclass
class Seen:
    """What a run showed while it ran. The caller may pass its own, which outlives a run that is
    cancelled (and so returns no `Outcome`): whether the process was spawned, the cost the CLI
    reported in its result line (None until then), and the usage of its assistant messages."""

    spawned: bool = False
    cost_usd: float | None = None
    # Usage (input with cache tokens, output) by message id: the CLI prints one API message once
    # per content block, each copy with the same usage, so a message is counted once.
    usage: dict[str, tuple[int, int]] = field(default_factory=dict)

    @property
    def input_tokens(self) -> int:
        return sum(i for i, _ in self.usage.values())

    @property
    def output_tokens(self) -> int:
        return sum(o for _, o in self.usage.values())

    def assistant(self, message: dict[str, Any]) -> None:
        """Count the usage of one `{"type": "assistant"}` line."""
        body = message.get("message")
        if not isinstance(body, dict) or not isinstance(body.get("usage"), dict):
            return
        usage = body["usage"]
        key = str(body.get("id") or f"#{len(self.usage)}")
        self.usage[key] = (
            _count(usage, "input_tokens")
            + _count(usage, "cache_creation_input_tokens")
            + _count(usage, "cache_read_input_tokens"),
            _count(usage, "output_tokens"),
        )

    def result(self, message: dict[str, Any]) -> None:
        """Keep the cost of the final `{"type": "result"}` line, if it says one."""
        cost = message.get("total_cost_usd")
        if isinstance(cost, int | float) and not isinstance(cost, bool):
            self.cost_usd = float(cost)


def _count(usage: dict[str, Any], key: str) -> int:
    value = usage.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


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
    seen: Seen | None = None,
) -> Outcome:
    """Run one CLI process to its end. Cancelling this call kills the process group. `seen`, when
    given, is kept up to date while the process runs."""
    with private_files(inv) as files:
        return await _run_claude(inv, files, on_start, on_message, env, seen)


async def _run_claude(
    inv: Invocation,
    files: Mapping[str, str],
    on_start: Callable[[int], Awaitable[None] | None] | None,
    on_message: Callable[[dict[str, Any]], Awaitable[None]] | None,
    env: dict[str, str] | None,
    seen: Seen | None,
) -> Outcome:
    started = time.monotonic()
    seen = seen if seen is not None else Seen()
    try:
        process = await _spawn(inv, env, files)
    except OSError as exc:
        return Outcome(
            "failed",
            error=f"cannot run {inv.command[0]!r}: {exc.strerror or exc} (install Claude Code, "
            "npm install -g @anthropic-ai/claude-code, or set [plugins.pool] claude_command)",
        )
    seen.spawned = True
    if on_start is not None:
        maybe = on_start(process.pid)
        if maybe is not None:
            await maybe
    run = _Run(inv, process, seen, on_message)
    try:
        timed_out = await run.to_the_end()
    finally:
        with anyio.CancelScope(shield=True):
            await _stop(process)  # on every path, cancelled too: nothing the CLI started outlives the task
            await process.aclose()
    return run.outcome(timed_out, int((time.monotonic() - started) * 1000))


async def _spawn(inv: Invocation, env: dict[str, str] | None, files: Mapping[str, str]) -> anyio.abc.Process:
    # Found here, not by the launcher that dies_with_parent puts in front of it, so a missing
    # command is an OSError with a clear message rather than a launcher traceback.
    found = shutil.which(inv.command[0])
    if found is None:
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), inv.command[0])
    return await anyio.open_process(
        dies_with_parent([found, *inv.argv(files)[1:]]),
        stdin=-1,
        stdout=-1,
        stderr=-1,
        cwd=str(inv.cwd) if inv.cwd else None,
        env=child_env(env),
        start_new_session=True,
    )


class _Run:
    """One spawned CLI process while it runs: the prompt fed in, its output and stderr read."""

    def __init__(
        self,
        inv: Invocation,
        process: anyio.abc.Process,
        seen: Seen,
        on_message: Callable[[dict[str, Any]], Awaitable[None]] | None,
    ) -> None:
        self.inv = inv
        self.process = process
        self.seen = seen
        self.on_message = on_message
        self.stderr_tail: deque[str] = deque(maxlen=STDERR_TAIL)
        self.result: dict[str, Any] | None = None
        self.session_id: str | None = None
        self.got_result = anyio.Event()

    async def to_the_end(self) -> bool:
        """Wait for the process to end (or to linger past its result); True if it timed out."""
        with anyio.move_on_after(self.inv.timeout_s if self.inv.timeout_s else float("inf")) as timer:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self.feed)
                tg.start_soon(self.read_stderr)
                tg.start_soon(self._main, tg.cancel_scope)
                tg.start_soon(self._after_result, tg.cancel_scope)
        return timer.cancelled_caught and self.result is None

    async def _main(self, scope: anyio.CancelScope) -> None:
        await self.read_stdout()
        await self.process.wait()
        scope.cancel()  # stderr may be held open by a leftover child

    async def _after_result(self, scope: anyio.CancelScope) -> None:
        # A result is final: a process that lingers after it (a child holding stdout
        # open) gets a short grace, then the group is killed and the result kept.
        await self.got_result.wait()
        with anyio.move_on_after(RESULT_GRACE_S):
            await self.process.wait()
        scope.cancel()

    async def feed(self) -> None:
        assert self.process.stdin is not None
        with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            await self.process.stdin.send(self.inv.prompt.encode())
        with contextlib.suppress(Exception):
            await self.process.stdin.aclose()

    async def read_stderr(self) -> None:
        assert self.process.stderr is not None
        buffer = b""
        async for chunk in self.process.stderr:
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            self.stderr_tail.extend(line.decode(errors="replace") for line in lines if line.strip())
        if buffer.strip():
            self.stderr_tail.append(buffer.decode(errors="replace"))

    async def read_stdout(self) -> None:
        assert self.process.stdout is not None
        buffer = b""
        async for chunk in self.process.stdout:
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for raw in lines:
                if raw.strip():
                    await self._line(raw)

    async def _line(self, raw: bytes) -> None:
        try:
            message = json.loads(raw)
        except ValueError:
            self.stderr_tail.append(raw.decode(errors="replace"))
            return
        self.session_id = message.get("session_id") or self.session_id
        if message.get("type") == "result":
            self.result = message
            self.seen.result(message)
            self.got_result.set()
            return
        if message.get("type") == "assistant":
            self.seen.assistant(message)
        if self.on_message is not None:
            await self.on_message(message)

    def outcome(self, timed_out: bool, duration: int) -> Outcome:
        """How the run ended, once the process is gone."""
        seen: dict[str, Any] = {
            "spawned": True,
            "cost_reported": self.seen.cost_usd is not None,
            "seen_input_tokens": self.seen.input_tokens,
            "seen_output_tokens": self.seen.output_tokens,
        }
        result = self.result
        if timed_out:
            return Outcome(
                "timeout",
                error=f"no result within {self.inv.timeout_s:g} s; the process was killed",
                session_id=self.session_id,
                duration_ms=duration,
                **_spend(result),
                **seen,
            )
        if result is None:
            tail = " | ".join(list(self.stderr_tail)[-5:])
            return Outcome(
                "failed",
                error=f"claude exited with code {self.process.returncode} without a result"
                + (f"; stderr: {tail}" if tail else ""),
                session_id=self.session_id,
                duration_ms=duration,
                **seen,
            )
        failed = bool(result.get("is_error")) or result.get("subtype") != "success"
        return Outcome(
            "failed" if failed else "completed",
            output=str(result.get("result") or ""),
            error=f"{result.get('subtype')}: {result.get('result') or 'the CLI reported an error'}"
            if failed
            else None,
            subtype=result.get("subtype"),
            session_id=result.get("session_id") or self.session_id,
            duration_ms=duration,
            result=result,
            **_spend(result),
            **seen,
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
