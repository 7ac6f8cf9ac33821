"""Planning and running one `batch_execute` request.

`plan()` checks everything that can be checked before a single call is made (servers, tool
names, references, limits) and reports every problem at once. `BatchRun` then runs the
operations: in request order as far as `maxConcurrent` and references allow, each under its own
timeout, and records one `Outcome` per operation, whatever happened to it.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import anyio
import mcp.types as types
from mcp import ClientSession
from mcp.shared.exceptions import MCPError

from hub import (
    ConnectionCache,
    ServerConfig,
    ServerUnavailable,
    ToolCall,
    ToolError,
    failure_message,
)

from .refs import RefError, find_refs, has_refs, resolve, result_root
from .request import BatchRequest, Operation, TargetServer
from .results import Result

Status = Literal["ok", "error", "skipped", "timeout", "cancelled"]
STATUSES: tuple[Status, ...] = ("ok", "error", "skipped", "timeout", "cancelled")
PROGRESS_INTERVAL_S = 0.05
MAX_PROBLEMS = 10
LIST_TOOLS_TIMEOUT_S = 60.0  # on top of the server's own startup_timeout_s


@dataclass
class Step:
    """One planned operation."""

    index: int
    op: Operation
    server: str  # the connection cache's name for it
    label: str  # the name the caller used (an inline server's targetServer.name)
    deps: set[int] = field(default_factory=set)
    needs_resolving: bool = False


@dataclass
class Outcome:
    status: Status
    result: Result | None = None
    error: str | None = None
    duration_ms: float = 0.0


@dataclass
class Limits:
    allow_inline_servers: bool
    max_operations: int
    max_concurrency: int


class ToolLists:
    """Each server's tool names, asked once per connection (and again after `tools/list_changed`)."""

    def __init__(self, connections: ConnectionCache) -> None:
        self.connections = connections
        self._names: dict[str, tuple[ClientSession, frozenset[str]]] = {}

    def forget(self, server: str) -> None:
        self._names.pop(server, None)

    async def names(self, server: str) -> frozenset[str]:
        session = await self.connections.get(server)
        cached = self._names.get(server)
        if cached is not None and cached[0] is session:
            return cached[1]
        names: set[str] = set()
        cursor: str | None = None
        while True:
            page = await session.list_tools(
                params=types.PaginatedRequestParams(cursor=cursor) if cursor else None
            )
            names.update(tool.name for tool in page.tools)
            cursor = page.next_cursor
            if not cursor:
                break
        self._names[server] = (session, frozenset(names))
        return self._names[server][1]


# -- planning ------------------------------------------------------------------------------------


def _toml_string(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)


def _refusal(target: TargetServer) -> str:
    transport = target.transport
    assert transport is not None
    if transport.command:
        lines = [f"command = {_toml_string(transport.command)}"]
        if transport.args:
            lines.append(f"args = [{', '.join(_toml_string(a) for a in transport.args)}]")
        if transport.env:
            lines.append(
                "env = { "
                + ", ".join(f"{_toml_string(k)} = {_toml_string(v)}" for k, v in transport.env.items())
                + " }"
            )
        what = f"run the command {transport.command!r}"
    else:
        lines = [f"url = {_toml_string(transport.url or '')}"]
        what = f"connect to {transport.url!r}"
    table = target.name if re.fullmatch(r"[A-Za-z0-9_-]+", target.name) else _toml_string(target.name)
    return (
        f"targetServer {target.name!r} is not configured in hub.toml, and the hub does not {what} because a "
        "request asked it to (any prompt could make it run anything). Add the server to hub.toml:\n\n"
        f"[servers.{table}]\n" + "\n".join(lines) + "\n\n"
        f'and send "server": "{target.name}" (or this same targetServer). To allow servers named in requests, '
        "set [plugins.batchit] allow_inline_servers = true."
    )


def inline_server(target: TargetServer, connections: ConnectionCache) -> str:
    """Add `target`'s transport to the connection cache (once) and return its cache name."""
    transport = target.transport
    assert transport is not None
    idle = target.maxIdleTimeMs / 1000 if target.maxIdleTimeMs else 300.0
    if transport.type == "websocket":
        raise ToolError(
            "targetServer.transport: websocket is not supported (MCP dropped it); use stdio, or "
            '"type": "http" with the url of a streamable HTTP server'
        )
    try:
        if transport.type == "stdio":
            if not transport.command:
                raise ToolError("targetServer.transport: a stdio transport needs `command`")
            config = ServerConfig(
                command=transport.command,
                args=transport.args,
                env=transport.env,
                cwd=transport.cwd,
                idle_timeout_s=idle,
            )
        else:
            if not transport.url:
                raise ToolError(f"targetServer.transport: a {transport.type} transport needs `url`")
            config = ServerConfig(url=transport.url, idle_timeout_s=idle)
    except ValueError as exc:
        raise ToolError(f"targetServer.transport: {exc}") from None
    digest = hashlib.sha256(config.model_dump_json().encode()).hexdigest()[:10]
    name = f"inline-{re.sub(r'[^A-Za-z0-9_-]', '-', target.name)[:40]}-{digest}"
    connections.add_server(name, config, expand=False)  # a request's ${VAR} is text, not a secret
    return name


def _servers_for(
    request: BatchRequest,
    configured: Mapping[str, ServerConfig],
    connections: ConnectionCache,
    limits: Limits,
) -> tuple[str | None, str | None]:
    """The batch's default server: (cache name, name the caller used), or (None, None)."""
    if request.server is not None:
        if request.server not in configured:
            known = ", ".join(sorted(configured)) or "none"
            raise ToolError(f"server: no server {request.server!r} in hub.toml (configured: {known})")
        return request.server, request.server
    target = request.target
    if target is None:
        return None, None
    if target.name in configured:
        return target.name, target.name
    if target.transport is None:
        known = ", ".join(sorted(configured)) or "none"
        raise ToolError(
            f"targetServer {target.name!r} is not configured in hub.toml (configured: {known}) and has no transport"
        )
    if not limits.allow_inline_servers:
        raise ToolError(_refusal(target))
    return inline_server(target, connections), target.name


def _check_graph(steps: list[Step], ids: dict[str, int], problems: list[str]) -> None:
    """Refuse cycles among references, naming the ids around one (iterative: chains can be long)."""
    state: dict[int, int] = {}  # 1 on the current path, 2 done
    for root in range(len(steps)):
        if state.get(root):
            continue
        path: list[int] = [root]
        pending: list[list[int]] = [sorted(steps[root].deps)]
        state[root] = 1
        while path:
            if not pending[-1]:
                state[path.pop()] = 2
                pending.pop()
                continue
            nxt = pending[-1].pop()
            if state.get(nxt) == 1:
                cycle = [*path[path.index(nxt) :], nxt]
                names = " -> ".join(steps[k].op.id or f"operations[{k}]" for k in cycle)
                problems.append(f"operations[{nxt}]: references form a cycle: {names}")
                return
            if not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                pending.append(sorted(steps[nxt].deps))


async def plan(
    request: BatchRequest,
    configured: Mapping[str, ServerConfig],
    connections: ConnectionCache,
    tool_lists: ToolLists,
    limits: Limits,
) -> list[Step]:
    """Check the whole request and return its steps, or raise `ToolError` listing every problem."""
    _check_limits(request, limits)
    default, default_label = _servers_for(request, configured, connections, limits)
    problems: list[str] = []
    steps, ids = _steps(request.operations, default, default_label, configured, problems)
    _link_references(steps, ids, problems)
    if not problems:
        _check_graph(steps, ids, problems)
    servers = sorted({s.server for s in steps if s.server})
    if servers and not problems:
        await _check_tools(steps, servers, tool_lists, problems)
    if problems:
        more = f" (and {len(problems) - MAX_PROBLEMS} more)" if len(problems) > MAX_PROBLEMS else ""
        raise ToolError("nothing was run: " + "; ".join(problems[:MAX_PROBLEMS]) + more)
    return steps


def _check_limits(request: BatchRequest, limits: Limits) -> None:
    operations = request.operations
    if len(operations) > limits.max_operations:
        raise ToolError(
            f"{len(operations)} operations is more than the {limits.max_operations} allowed in one batch "
            "([plugins.batchit] max_operations); split the batch"
        )
    if request.options.maxConcurrent > limits.max_concurrency:
        raise ToolError(
            f"options.maxConcurrent {request.options.maxConcurrent} is over the limit of {limits.max_concurrency} "
            "([plugins.batchit] max_concurrency)"
        )


def _steps(
    operations: list[Operation],
    default: str | None,
    default_label: str | None,
    configured: Mapping[str, ServerConfig],
    problems: list[str],
) -> tuple[list[Step], dict[str, int]]:
    """One step per operation, on its server, and the operations' ids (problems noted)."""
    steps: list[Step] = []
    ids: dict[str, int] = {}
    for i, op in enumerate(operations):
        if op.server is None or op.server == default_label:
            server, label = default, default_label
        elif op.server in configured:
            server, label = op.server, op.server
        else:
            known = ", ".join(sorted(configured)) or "none"
            problems.append(
                f"operations[{i}].server: no server {op.server!r} in hub.toml (configured: {known})"
            )
            server = label = None
        if server is None or label is None:
            if op.server is None:
                known = ", ".join(sorted(configured)) or "none configured"
                problems.append(
                    f"operations[{i}]: no server; give `server` for the batch or the operation ({known})"
                )
            server, label = "", ""
        if op.id is not None:
            if op.id in ids:
                problems.append(
                    f"operations[{i}].id: {op.id!r} is already the id of operations[{ids[op.id]}]"
                )
            else:
                ids[op.id] = i
        steps.append(Step(i, op, server, label))
    return steps, ids


def _link_references(steps: list[Step], ids: dict[str, int], problems: list[str]) -> None:
    """Each step waits for the operations its arguments reference (problems noted)."""
    for step in steps:
        try:
            refs = list(find_refs(step.op.arguments, f"operations[{step.index}].arguments"))
        except RefError as exc:
            problems.append(str(exc))
            continue
        step.needs_resolving = has_refs(step.op.arguments)
        for ref in refs:
            if ref.id not in ids:
                known = ", ".join(ids) or "no operation has an id"
                problems.append(
                    f"{ref.where}: reference to {ref.id!r}, which names no operation (ids: {known})"
                )
            else:
                step.deps.add(ids[ref.id])


async def _check_tools(
    steps: list[Step], servers: list[str], tool_lists: ToolLists, problems: list[str]
) -> None:
    names: dict[str, frozenset[str]] = {}

    async def learn(server: str) -> None:
        try:
            with anyio.fail_after(LIST_TOOLS_TIMEOUT_S):
                names[server] = await tool_lists.names(server)
        except ServerUnavailable as exc:
            problems.append(str(exc))
        except MCPError as exc:
            problems.append(f"server {server!r} could not list its tools: {exc.message}")
        except TimeoutError:
            problems.append(f"server {server!r} did not list its tools within {LIST_TOOLS_TIMEOUT_S:g} s")
        except Exception as exc:
            problems.append(f"server {server!r} could not list its tools: {type(exc).__name__}: {exc}")

    async with anyio.create_task_group() as tg:
        for server in servers:
            tg.start_soon(learn, server)
    for step in steps:
        known = names.get(step.server)
        if known is None or step.op.tool in known:
            continue
        close = difflib.get_close_matches(step.op.tool, sorted(known), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else f" (its tools: {', '.join(sorted(known)[:20])})"
        problems.append(
            f"operations[{step.index}].tool: server {step.label!r} has no tool {step.op.tool!r}{hint}"
        )


# -- running -------------------------------------------------------------------------------------


class BatchRun:
    """Runs planned steps; `outcomes` is filled in as they end."""

    def __init__(
        self,
        steps: list[Step],
        request: BatchRequest,
        connections: ConnectionCache,
        call: ToolCall,
    ) -> None:
        self.steps = steps
        self.options = request.options
        self.connections = connections
        self.call = call
        self.outcomes: list[Outcome | None] = [None] * len(steps)
        self.roots: dict[str, dict[str, Any]] = {}
        self.dependents: dict[int, list[int]] = {}
        self.waiting: dict[int, set[int]] = {}
        self.running: dict[int, anyio.CancelScope] = {}
        self.cancelled: set[int] = set()  # ops cancelled by cancelOnError (else a scope ends by its deadline)
        self.stopped_by: int | None = None
        self.done = 0
        self._last_progress = 0.0
        self._send, self._receive = anyio.create_memory_object_stream[int](len(steps))

    async def run(self) -> list[Outcome]:
        for step in self.steps:
            self.waiting[step.index] = set(step.deps)
            for dep in step.deps:
                self.dependents.setdefault(dep, []).append(step.index)
        for step in self.steps:
            if not step.deps:
                self._send.send_nowait(step.index)
        workers = min(self.options.maxConcurrent, len(self.steps))
        async with self._send, self._receive, anyio.create_task_group() as tg:
            for _ in range(workers):
                tg.start_soon(self._worker)
        return [o if o is not None else Outcome("skipped", error="not run") for o in self.outcomes]

    async def _next(self) -> int | None:
        """The next step to run, None when every step has ended. A step already queued is taken
        without a trip through the event loop (each operation awaits its server anyway)."""
        try:
            return self._receive.receive_nowait()
        except anyio.WouldBlock:
            try:
                return await self._receive.receive()
            except anyio.EndOfStream:
                return None
        except anyio.EndOfStream:
            return None

    async def _worker(self) -> None:
        while (index := await self._next()) is not None:
            step = self.steps[index]
            if self.stopped_by is not None:
                outcome = Outcome(
                    "skipped",
                    error=f"not run: operations[{self.stopped_by}] failed and "
                    f"{'cancelOnError' if self.options.cancelOnError else 'stopOnError'} is set",
                )
            else:
                outcome = await self._execute(step)
            self._finish(index, outcome)
            await self._progress(step, outcome)

    def _finish(self, first: int, first_outcome: Outcome) -> None:
        """Record an outcome, then queue or skip what depended on it (a worklist: chains can be long)."""
        work = [(first, first_outcome)]
        while work:
            index, outcome = work.pop()
            if self.outcomes[index] is not None:
                continue
            self.outcomes[index] = outcome
            self.done += 1
            step = self.steps[index]
            if outcome.status == "ok" and outcome.result is not None and step.op.id is not None:
                self.roots[step.op.id] = result_root(outcome.result)
            if outcome.status in ("error", "timeout") and self.stopped_by is None:
                if self.options.stopOnError or self.options.cancelOnError:
                    self.stopped_by = index
                if self.options.cancelOnError:
                    for other, scope in self.running.items():
                        if other != index:
                            self.cancelled.add(other)
                            scope.cancel()
            name = step.op.id or f"operations[{index}]"
            for dependent in self.dependents.get(index, []):
                waiting = self.waiting[dependent]
                waiting.discard(index)
                if self.outcomes[dependent] is not None:
                    continue
                if outcome.status != "ok":
                    skipped = Outcome(
                        "skipped", error=f"not run: it references {name!r}, which ended {outcome.status}"
                    )
                    work.append((dependent, skipped))
                elif not waiting:
                    self._send.send_nowait(dependent)
        if self.done == len(self.steps):
            self._send.close()

    async def _progress(self, step: Step, outcome: Outcome) -> None:
        now = time.monotonic()
        total = len(self.steps)
        if self.done < total and now - self._last_progress < PROGRESS_INTERVAL_S:
            return
        self._last_progress = now
        await self.call.report_progress(
            self.done, total, f"{self.done}/{total} done; last: {step.label} {step.op.tool} {outcome.status}"
        )

    async def _execute(self, step: Step) -> Outcome:
        started = time.perf_counter()

        def ended(status: Status, result: Result | None = None, error: str | None = None) -> Outcome:
            return Outcome(status, result, error, round((time.perf_counter() - started) * 1000, 1))

        arguments = step.op.arguments
        if step.needs_resolving:
            try:
                arguments = resolve(arguments, self.roots)
            except RefError as exc:
                return ended("error", error=f"reference: {exc}")
        timeout_ms = step.op.timeoutMs or self.options.timeoutMs
        server, tool = step.server, step.op.tool
        raw: dict[str, Any] | None = None
        try:
            await self.connections.get(server)  # started (or waited for) before the op's clock runs
            if self.stopped_by is not None:  # an operation failed while this one waited for its server
                option = "cancelOnError" if self.options.cancelOnError else "stopOnError"
                return ended(
                    "skipped", error=f"not run: operations[{self.stopped_by}] failed and {option} is set"
                )
            # One scope per op: its deadline is the op's timeout, and cancelOnError cancels it.
            with anyio.CancelScope(deadline=anyio.current_time() + timeout_ms / 1000) as scope:
                self.running[step.index] = scope
                try:
                    # The result as the server sent it (checked against its output schema first
                    # for a `validate_output` server); a closed connection is marked dead.
                    raw = await self.connections.call_tool(server, tool, arguments)
                finally:
                    self.running.pop(step.index, None)
        except Exception as exc:  # one operation never takes the batch down
            return ended("error", error=failure_message(step.label, tool, exc))
        if raw is None and step.index in self.cancelled:
            return ended(
                "cancelled",
                error=f"cancelled: operations[{self.stopped_by}] failed and cancelOnError is set",
            )
        if raw is None:  # the scope's deadline passed
            return ended(
                "timeout", error=f"no answer within {timeout_ms} ms; the call was cancelled on the server"
            )
        try:
            result = Result.from_wire(raw)
        except ValueError as exc:
            return ended("error", error=f"{step.label} {tool}: the server's result is malformed: {exc}")
        if result.is_error:
            return ended("error", result, result.text or f"{tool} reported an error")
        return ended("ok", result)


# -- the answer ----------------------------------------------------------------------------------
#
# One result shape, sized for a model's context: each operation's downstream payload appears once in
# structuredContent (its structuredContent if it has one, else its content) and once in the text
# (its text blocks), and a client hands the model one of the two. See docs/batchit.md.


def summarize(outcomes: list[Outcome], wall_ms: float) -> dict[str, Any]:
    counts: dict[str, int] = {status: 0 for status in STATUSES}
    for outcome in outcomes:
        counts[outcome.status] += 1
    return {"total": len(outcomes), **counts, "durationMs": wall_ms}


def _cut(text: str, limit: int | None) -> tuple[str, int]:
    """`text` cut to at most `limit` UTF-8 bytes (on a character boundary), and the bytes cut."""
    if limit is None:
        return text, 0
    data = _utf8(text)
    if len(data) <= limit:
        return text, 0
    kept = data[:limit].decode(errors="ignore")  # a lone surrogate in the kept part is dropped
    return kept, len(data) - len(kept.encode())


def _utf8(text: str) -> bytes:
    """`text` as UTF-8, a lone surrogate (valid in JSON, sent escaped) counted as its 3 bytes."""
    return text.encode(errors="surrogatepass")


def _compact(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


def _payload(result: Result) -> tuple[str, Any]:
    """The key and value that carry a downstream result in an operation's entry."""
    if result.structured is not None:
        return "structuredContent", result.structured
    return "content", result.content


def _payload_text(result: Result) -> str:
    """The result as text: its text blocks, else its structuredContent (or content) as JSON."""
    if result.has_text:
        return result.text
    return _compact(_payload(result)[1])


def _shows_result(include: str, outcome: Outcome) -> bool:
    return include == "all" or (include == "errors" and outcome.status != "ok")


def operation_entry(step: Step, outcome: Outcome, include: str, limit: int | None) -> dict[str, Any]:
    """One operation in structuredContent: index, id (when given), status, durationMs, then its
    result (`structuredContent` or `content`), or `error` text; when the result is over `limit`
    bytes, `text` (its text, cut to `limit` bytes) and `cutBytes` (what was cut, if anything)."""
    entry: dict[str, Any] = {"index": step.index}
    if step.op.id is not None:
        entry["id"] = step.op.id
    entry["status"] = outcome.status
    if include == "status":
        return entry
    entry["durationMs"] = outcome.duration_ms
    if not _shows_result(include, outcome):
        return entry
    if outcome.status == "ok" and outcome.result is not None:
        key, value = _payload(outcome.result)
        if limit is not None and len(_utf8(_compact(value))) > limit:
            entry["text"], cut = _cut(_payload_text(outcome.result), limit)
            if cut:  # else its text alone fits: shown whole
                entry["cutBytes"] = cut
        else:
            entry[key] = value
    elif outcome.error is not None:
        entry["error"], cut = _cut(outcome.error, limit)
        if cut:
            entry["cutBytes"] = cut
    return entry


def _operation_blocks(step: Step, outcome: Outcome, include: str, limit: int | None) -> tuple[str, list[Any]]:
    """One operation in the text: a heading line, then its result's text (or error); and the
    result's non-text blocks (images and such), which follow that text."""
    name = f" {step.op.id}" if step.op.id else ""
    head = f"[{step.index}]{name} {step.label} {step.op.tool}: {outcome.status}"
    if include == "status":
        return head, []
    lines = [f"{head} ({outcome.duration_ms:g} ms)"]
    others: list[Any] = []
    if _shows_result(include, outcome):
        if outcome.status == "ok" and outcome.result is not None:
            result = outcome.result
            others = result.others
            if result.has_text:
                text = result.text
            elif result.structured is not None:
                text, others = _compact(result.structured), []
            else:
                text = ""  # images and such only: they follow as blocks
        else:
            text = f"error: {outcome.error}" if outcome.error is not None else ""
        shown, cut = _cut(text, limit)
        if cut:
            others = []
            shown += f"\n[... {cut} more bytes cut: options.maxResultBytes = {limit}]"
        if shown:
            lines.append(shown)
    return "\n".join(lines), others


def render(
    request: BatchRequest, steps: list[Step], outcomes: list[Outcome], wall_ms: float
) -> types.CallToolResult:
    """The result: readable text (each operation's own text) plus structuredContent (each
    operation's own structuredContent, else content), so whichever a client gives the model, it
    reads each payload once."""
    include, limit = request.options.include, request.options.maxResultBytes
    summary = summarize(outcomes, wall_ms)
    counts = ", ".join(f"{summary[s]} {s}" for s in STATUSES if summary[s])
    failed = summary["ok"] < summary["total"]
    head = f"batch_execute: {summary['total']} operations, {counts}, in {wall_ms:.0f} ms"
    if failed:
        head += " (isError is set because not every operation succeeded)"
    # The text is one block, up to each run of non-text blocks (a thousand operations make one
    # block, not a thousand: cheaper to build, to send and for the client to parse).
    content: list[Any] = []
    text = [head]
    for step, outcome in zip(steps, outcomes, strict=True):
        lines, others = _operation_blocks(step, outcome, include, limit)
        text.append(lines)
        if others:
            content.append(types.TextContent(type="text", text="\n".join(text)))
            content.extend(others)
            text = []
    if text:
        content.append(types.TextContent(type="text", text="\n".join(text)))
    structured = {
        "summary": summary,
        "operations": [operation_entry(s, o, include, limit) for s, o in zip(steps, outcomes, strict=True)],
    }
    return types.CallToolResult(content=content, structured_content=structured, is_error=failed)
