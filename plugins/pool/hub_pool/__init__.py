"""pool: a pool of Claude Code CLI slots for parallel and chained tasks.

Each task runs `claude -p --output-format stream-json --verbose` in a slot, with the prompt on
stdin, the pool's system prompt plus the shared context appended, and `--max-budget-usd` set to
the budget the task reserved. Tools and resources keep the original slot pool's names.

A task is charged what the CLI reports it cost, $0 if its process never started, and its whole
reservation if its process ran but ended without reporting (the spend cannot be known then).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Literal

import anyio
import mcp.types as types
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from hub import (
    Instance,
    Lifecycle,
    Plugin,
    PluginContext,
    Prompt,
    PromptArgument,
    RegisterPanel,
    RegisterPrompt,
    RegisterResource,
    RegisterTool,
    Resource,
    ResourceTemplate,
    Tool,
    ToolCall,
    ToolError,
    hookimpl,
)

from .panels import pool_panel
from .pool import Pool, TaskSpec, combine_spend, current_depth, recover, refused_view
from .skills import Skill, load_skills

__all__ = ["PoolPlugin", "Settings"]

Effort = Literal["min", "low", "medium", "high", "max"]
PermissionMode = Literal["default", "acceptEdits", "bypassPermissions", "plan", "auto"]


# Upper bounds of settings and per-call arguments (documented in README.md).
MAX_TIMEOUT_S = 86_400.0  # a day
MAX_BUDGET_USD = 1_000.0  # per task
MAX_SLOTS = 1_000


class SkillTable(BaseModel):
    model_config = ConfigDict(extra="forbid")
    description: str = ""
    prompt: str = Field(min_length=1, description="The template, with {argument} placeholders.")
    arguments: list[dict[str, Any] | str] = Field(default_factory=list)


class Settings(BaseModel):
    """`[plugins.pool]`."""

    model_config = ConfigDict(extra="forbid")
    slots: int = Field(
        default=2,
        ge=0,
        le=MAX_SLOTS,
        description="Slots this hub runs; 0: a hub that only queues (workers elsewhere run its tasks).",
    )
    queue: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="The queue this hub's tasks go to and its slots take from; hubs and `hub worker`s "
        "naming one queue share their slots (default: the project, its git top level).",
    )
    min_slots: int = Field(default=1, ge=0, le=MAX_SLOTS)
    max_slots: int = Field(default=16, ge=1, le=MAX_SLOTS)
    model: str | None = Field(
        default=None, description="Default --model (e.g. sonnet, opus); None: the CLI's."
    )
    effort: Effort | None = None
    system_prompt: str = Field(
        default="", description="Appended to Claude Code's system prompt, before shared context."
    )
    permission_mode: PermissionMode = "plan"
    worktree: bool = Field(
        default=False, description="Each slot works in its own git worktree (branch hub-pool/<slot>)."
    )
    builtins: bool = Field(default=True, description="Offer the built-in skills.")
    task_timeout_s: float = Field(default=1800.0, gt=0, le=MAX_TIMEOUT_S)
    max_budget_per_task_usd: float = Field(
        default=1.0, gt=0, le=MAX_BUDGET_USD, description="Reserved per task and passed as --max-budget-usd."
    )
    claude_command: str = Field(
        default="claude", description="The CLI to run (a path, or a command on PATH)."
    )
    cwd: str | None = Field(
        default=None, description="Where tasks run (default: the hub's working directory)."
    )
    busy_grace_s: float = Field(
        default=30.0, ge=0, le=MAX_TIMEOUT_S, description="How long scale-down waits for a busy slot."
    )
    skills_dir: str | None = Field(
        default=None, description="A folder of SKILL.md files with YAML front matter."
    )
    skills_poll_s: float = Field(
        default=5.0, ge=0, description="How often skills_dir is checked for changes; 0: never."
    )
    skills: dict[str, SkillTable] = Field(default_factory=dict)
    worker_mcp_config: str | dict[str, Any] | None = Field(
        default=None,
        description="MCP servers for workers: a .mcp.json path or an mcpServers table. Workers always run "
        "with --strict-mcp-config, so by default they start none (not even a hub from the project's .mcp.json).",
    )
    max_depth: int = Field(
        default=1,
        ge=1,
        le=10,
        description="A hub started inside a pool worker serves pool tools only if fewer than this many pools "
        "are above it (1: workers cannot start workers).",
    )

    @field_validator("worker_mcp_config")
    @classmethod
    def _json_text_is_a_table(cls, value: str | dict[str, Any] | None) -> str | dict[str, Any] | None:
        # JSON text (as `claude --mcp-config` takes it) is a table; any other text is a file's path.
        if isinstance(value, str) and value.lstrip().startswith("{"):
            try:
                table = json.loads(value)
            except ValueError as exc:
                raise ValueError(
                    f"starts like JSON but is not JSON ({exc}); give a table or a file's path"
                ) from None
            if not isinstance(table, dict):
                raise ValueError("must be an mcpServers table (or a file's path)")
            return table
        return value

    @model_validator(mode="after")
    def _slots_in_range(self) -> Settings:
        if self.min_slots > self.max_slots:
            raise ValueError(f"min_slots ({self.min_slots}) is above max_slots ({self.max_slots})")
        if self.slots and not self.min_slots <= self.slots <= self.max_slots:  # 0: only queues
            raise ValueError(
                f"slots ({self.slots}) is outside min_slots..max_slots ({self.min_slots}..{self.max_slots})"
            )
        return self


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Overrides(_Args):
    model: str | None = Field(default=None, max_length=200, description="--model, e.g. sonnet.")
    effort: Effort | None = Field(default=None, description="--effort.")
    timeout_s: float | None = Field(
        default=None, gt=0, le=MAX_TIMEOUT_S, description="Time limit; the task is killed then."
    )
    max_budget_usd: float | None = Field(
        default=None,
        gt=0,
        le=MAX_BUDGET_USD,
        description="Reserved; passed as --max-budget-usd.",
    )


class RunArgs(Overrides):
    prompt: str = Field(min_length=1, description="The task for claude -p.")
    session_id: str | None = Field(
        default=None,
        description="Continue this earlier session (the session_id of an earlier result: a UUID).",
    )

    @field_validator("session_id")
    @classmethod
    def _a_uuid(cls, value: str | None) -> str | None:
        # It reaches the CLI as --resume: only a session's id, never something it reads as an option.
        if value is None:
            return None
        try:
            return str(uuid.UUID(value))
        except ValueError:
            raise ValueError(
                f"must be the session_id of an earlier pool result, a UUID such as "
                f"2f1c9a4e-0b7d-4c1e-9a53-6d2f8e1b7c40 (got {value[:60]!r})"
            ) from None


class TaskArgs(_Args):
    task_id: str = Field(min_length=1, description="From pool_submit.")


class FanOutArgs(Overrides):
    prompts: list[str] = Field(min_length=1, max_length=1000, description="One task per prompt.")


class ChainStep(_Args):
    name: str | None = Field(default=None, description="A label for the step.")
    prompt: str | None = Field(default=None, description="May use {previous_output}.")
    skill: str | None = Field(default=None, description="A skill instead of a prompt.")
    arguments: dict[str, Any] | None = Field(default=None, description="The skill's arguments.")
    model: str | None = Field(default=None, max_length=200, description="--model for this step.")
    effort: Effort | None = Field(default=None, description="--effort for this step.")
    timeout_s: float | None = Field(
        default=None, gt=0, le=MAX_TIMEOUT_S, description="Kill the step after this long."
    )
    max_budget_usd: float | None = Field(
        default=None, gt=0, le=MAX_BUDGET_USD, description="--max-budget-usd for this step."
    )
    failure_policy: Literal["abort", "skip", "retry"] | None = Field(
        default=None, description="Overrides the chain's."
    )
    retries: int = Field(default=2, ge=0, le=10, description="Extra attempts with failure_policy retry.")


class ChainArgs(_Args):
    steps: list[ChainStep] = Field(min_length=1, max_length=100, description="Run in order.")
    failure_policy: Literal["abort", "skip", "retry"] = Field(
        default="abort", description="When a step fails: stop, go on, or retry it."
    )


class ChainIdArgs(_Args):
    chain_id: str = Field(min_length=1, description="From pool_submit_chain.")


class DrainArgs(_Args):
    timeout_s: float = Field(default=60.0, ge=0, le=3600, description="How long running tasks may finish.")


class CountArgs(_Args):
    count: int = Field(ge=1, le=MAX_SLOTS, description="How many slots.")


class TargetArgs(_Args):
    target: int = Field(ge=0, le=MAX_SLOTS, description="Slots wanted, within min_slots..max_slots.")


class SkillRunArgs(Overrides):
    skill: str = Field(min_length=1, description="A skill named in this tool's description.")
    arguments: dict[str, Any] = Field(
        default_factory=dict, description="The skill's arguments, as the description lists them."
    )


class NoArgs(_Args):
    pass


def _spec(prompt: str, args: Overrides, session: str | None = None) -> TaskSpec:
    return TaskSpec(prompt, args.model, args.effort, args.timeout_s, args.max_budget_usd, session)


def _result(value: dict[str, Any], *, failed: bool) -> Any:
    """The tool result: `value` as structured content and JSON text, with isError when the work
    failed (pool_run / pool_skill_run: the task did not complete; pool_fan_out: any prompt did not
    complete; pool_chain: the chain did not complete, a skipped step included)."""
    if not failed:
        return value
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=json.dumps(value, ensure_ascii=False, default=str))],
        structured_content=value,
        is_error=True,
    )


def _missing_command(command: list[str], cwd: Path) -> str | None:
    """Why the CLI cannot be run, or None when it can."""
    name = command[0]
    found = shutil.which(name) if os.sep not in name else (name if os.access(cwd / name, os.X_OK) else None)
    if found:
        return None
    return (
        f"the Claude Code CLI {name!r} was not found (PATH or [plugins.pool] claude_command): pool tasks "
        "fail until it is installed (npm install -g @anthropic-ai/claude-code) or claude_command points at it"
    )


def _progress(call: ToolCall) -> Any:
    count = 0

    async def listener(message: dict[str, Any]) -> None:
        nonlocal count
        if message.get("type") != "assistant":
            return
        count += 1
        texts = [
            b.get("text", "")
            for b in (message.get("message") or {}).get("content") or []
            if b.get("type") == "text"
        ]
        tools = [
            b.get("name", "")
            for b in (message.get("message") or {}).get("content") or []
            if b.get("type") == "tool_use"
        ]
        note = (" ".join(texts).strip()[:120]) or (f"using {', '.join(tools)}" if tools else "working")
        await call.report_progress(count, None, note)

    return listener


class PoolPlugin(Plugin):
    """The pool plugin (entry point ``hub_pool:PoolPlugin``): one `Pool` per hub run."""

    # The running pool; None in a hub too deep inside pool workers to serve one (`disabled` says why).
    pool: Pool | None = None
    disabled: str | None = None
    skill_tool: Tool | None = None  # pool_skill_run, whose description names every skill

    @hookimpl
    def hub_config_model(self) -> type[BaseModel]:
        return Settings

    @hookimpl
    def hub_startup(self, hub: PluginContext) -> Lifecycle:
        async def start() -> None:
            settings = hub.config
            assert isinstance(settings, Settings)
            skills = _load_skills(hub, settings)
            depth = current_depth()
            if depth >= settings.max_depth:
                self.disabled = (
                    f"this hub runs inside a pool worker (depth {depth}) and [plugins.pool] max_depth is "
                    f"{settings.max_depth}: it serves no pool tools, so workers cannot start workers"
                )
                hub.log.info("pool tools not served", reason=self.disabled)
                return
            self.pool = Pool(hub, settings, skills)
            missing = _missing_command(self.pool.command, self.pool.cwd)
            if missing is not None and settings.slots:  # said once, at start, in the log and hub://status
                hub.warn(missing)
            await self.pool.start()
            if settings.skills_dir and settings.skills_poll_s > 0:
                hub.start_soon(self.watch_skills, settings, name="watch skills_dir")

        return start

    @hookimpl
    def hub_recover(self, hub: PluginContext, instance: Instance) -> Lifecycle:
        return recover(hub, instance)

    @hookimpl
    def hub_worker(self, hub: PluginContext, slots: int | None) -> Lifecycle:
        """`hub worker [--slots N]`: this hub's slots (N of them, else [plugins.pool] slots) take
        tasks from the queue, queued by any hub; it runs them until it stops."""

        async def work() -> None:
            if self.pool is None:
                raise ToolError(self.disabled or "the pool did not start")
            low, high = self.pool.settings.min_slots, self.pool.settings.max_slots
            if slots is not None and not low <= slots <= high:
                raise ToolError(
                    f"--slots {slots} is outside [plugins.pool] min_slots..max_slots ({low}..{high}): "
                    "ask for fewer, or raise max_slots"
                )
            if slots is not None and slots != len(self.pool.slots):
                await self.pool.set_target(slots)
            # Stopped (SIGTERM), a worker lets its running tasks finish for busy_grace_s first.
            self.pool.stop_grace_s = self.pool.settings.busy_grace_s
            missing = _missing_command(self.pool.command, self.pool.cwd)
            if missing is not None:
                hub.warn(missing)
            hub.log.info(
                "worker ready: taking pool tasks",
                queue=self.pool.queue_name,
                slots=len(self.pool.slots),
                store=hub.store.where,
            )

        return work

    @hookimpl
    def hub_shutdown(self) -> Lifecycle:
        async def stop() -> None:
            if self.pool is not None:
                await self.pool.stop()

        return stop

    @hookimpl
    def hub_register_tools(self, register: RegisterTool, hub: PluginContext) -> None:
        if self.pool is not None:
            self.skill_tool = register_tools(register, hub, self.pool)

    @hookimpl
    def hub_register_resources(self, register: RegisterResource, hub: PluginContext) -> None:
        if self.pool is not None:
            register_resources(register, hub, self.pool)

    @hookimpl
    def hub_dashboard_panels(self, register: RegisterPanel) -> None:
        if self.pool is not None:
            register(pool_panel(self.pool))

    @hookimpl
    def hub_register_prompts(self, register: RegisterPrompt) -> None:
        for skill in self.pool.skills.values() if self.pool is not None else ():
            register(_skill_prompt(skill))

    async def watch_skills(self, settings: Settings) -> None:
        """Reload skills when files in skills_dir change, so pool_skill_run's description (which
        names every skill) and the skill prompts follow; clients get list_changed."""
        folder = _skills_folder(settings)
        assert folder is not None
        seen = _folder_state(folder)
        while True:
            await anyio.sleep(settings.skills_poll_s)
            now = _folder_state(folder)
            if now != seen:
                seen = now
                self.set_skills(_load_skills(self.hub, settings))

    def set_skills(self, skills: dict[str, Skill]) -> None:
        hub, pool = self.hub, self.pool
        assert pool is not None  # skills are watched only where the pool runs
        old = pool.skills
        pool.skills = skills
        if self.skill_tool is not None:
            hub.remove_tool(self.skill_tool.name)
            self.skill_tool = dataclasses.replace(self.skill_tool, description=skill_run_description(skills))
            hub.add_tool(self.skill_tool)
        for name in old:
            hub.remove_prompt(name)
        for skill in skills.values():
            hub.add_prompt(_skill_prompt(skill))
        hub.log.info("skills reloaded", skills=sorted(skills))


def _skills_folder(settings: Settings) -> Path | None:
    return Path(settings.skills_dir).expanduser() if settings.skills_dir else None


def _load_skills(hub: PluginContext, settings: Settings) -> dict[str, Skill]:
    skills, problems = load_skills(
        settings.builtins, {k: v.model_dump() for k, v in settings.skills.items()}, _skills_folder(settings)
    )
    for problem in problems:
        hub.log.warning("skill not loaded", problem=problem)
    return skills


def _folder_state(folder: Path) -> list[tuple[str, int, int]]:
    """What a change in `folder`'s skill files changes: each file's path, mtime and size."""
    found = []
    for path in sorted([*folder.glob("*.md"), *folder.glob("*/SKILL.md")]):
        try:
            stat = path.stat()
        except OSError:
            continue
        found.append((str(path), stat.st_mtime_ns, stat.st_size))
    return found


def skill_run_description(skills: dict[str, Skill]) -> str:
    """pool_skill_run's description: what it does, and each skill with its arguments."""
    head = "Run a skill on a slot and wait for it, like pool_run."
    if not skills:
        return head + " No skills are configured ([plugins.pool] builtins, skills, skills_dir)."
    lines = []
    for skill in sorted(skills.values(), key=lambda s: s.name):
        args = ", ".join(a.name if a.required else f"{a.name}?" for a in skill.arguments)
        about = f": {skill.description.strip()}" if skill.description.strip() else ""
        lines.append(f"- {skill.name}({args}){about}")
    return head + " Skills (arguments):\n" + "\n".join(lines)


def register_tools(register: RegisterTool, hub: PluginContext, pool: Pool) -> Tool:
    """Register the pool's tools; returns pool_skill_run (its description follows the skills)."""
    tools = PoolTools(hub, pool)
    for tool in [*_task_tools(tools), *_chain_tools(tools), *_slot_tools(tools)]:
        register(tool)
    skill_tool = Tool(
        "pool_skill_run", tools.pool_skill_run, skill_run_description(pool.skills), SkillRunArgs
    )
    register(skill_tool)
    return skill_tool


class PoolTools:
    """The handlers of the pool's tools, one method per tool, named as the tool."""

    def __init__(self, hub: PluginContext, pool: Pool) -> None:
        self.hub = hub
        self.pool = pool

    # -- tasks -----------------------------------------------------------------------------------

    async def pool_run(self, args: RunArgs, call: ToolCall) -> Any:
        result = await self.pool.run(_spec(args.prompt, args, args.session_id), _progress(call))
        return _result(result, failed=result.get("status") != "completed")

    async def pool_submit(self, args: RunArgs, call: ToolCall) -> dict[str, Any]:
        task_id = await self.pool.submit(_spec(args.prompt, args, args.session_id))
        return {"task_id": task_id, "status": "queued"}

    async def pool_result(self, args: TaskArgs, call: ToolCall) -> dict[str, Any]:
        return await self.pool.result(args.task_id)

    async def pool_cancel(self, args: TaskArgs, call: ToolCall) -> dict[str, Any]:
        return await self.pool.cancel(args.task_id)

    async def pool_fan_out(self, args: FanOutArgs, call: ToolCall) -> Any:
        results: list[dict[str, Any]] = [{} for _ in args.prompts]
        done = 0

        async def one(i: int, prompt: str) -> None:
            nonlocal done
            try:
                task_id = await self.pool.submit(_spec(prompt, args))
            except ToolError as exc:  # refused (budget, draining): reported in its place
                results[i] = refused_view(str(exc))
            else:
                results[i] = await self.pool.wait(task_id)
            done += 1
            await call.report_progress(done, len(results), f"{done}/{len(results)} done")

        async with anyio.create_task_group() as tg:
            for i, prompt in enumerate(args.prompts):
                tg.start_soon(one, i, prompt)
        ok = sum(1 for r in results if r["status"] == "completed")
        summary = {
            "results": results,
            "completed": ok,
            "failed": len(results) - ok,
            "spend_usd": round(sum(r["spend_usd"] for r in results), 6),
            **combine_spend(results, "tasks"),
        }
        return _result(summary, failed=ok < len(results))

    async def pool_skill_run(self, args: SkillRunArgs, call: ToolCall) -> Any:
        skill = self.pool.skills.get(args.skill)
        if skill is None:
            raise ToolError(
                f"unknown skill {args.skill!r} (skills: {', '.join(sorted(self.pool.skills)) or 'none'})"
            )
        result = await self.pool.run(_spec(skill.render(args.arguments), args), _progress(call))
        result["skill"] = args.skill
        return _result(result, failed=result.get("status") != "completed")

    # -- chains ----------------------------------------------------------------------------------

    async def pool_chain(self, args: ChainArgs, call: ToolCall) -> Any:
        steps = [s.model_dump(exclude_none=True) for s in args.steps]
        self.pool.check_steps(steps)
        chain_id = await self.pool.create_chain(steps, args.failure_policy)
        result = await self.pool.run_chain(chain_id, _progress(call))
        return _result(result, failed=result.get("status") != "completed")

    async def pool_submit_chain(self, args: ChainArgs, call: ToolCall) -> dict[str, Any]:
        steps = [s.model_dump(exclude_none=True) for s in args.steps]
        self.pool.check_steps(steps)
        chain_id = await self.pool.create_chain(steps, args.failure_policy)
        self.hub.start_soon(self.pool.run_chain, chain_id, name=f"chain {chain_id}")
        return {"chain_id": chain_id, "status": "running", "total_steps": len(steps)}

    async def pool_chain_result(self, args: ChainIdArgs, call: ToolCall) -> dict[str, Any]:
        return await self.pool.chain_result(args.chain_id)

    # -- slots -----------------------------------------------------------------------------------

    async def pool_status(self, args: NoArgs, call: ToolCall) -> dict[str, Any]:
        return await self.pool.status()

    async def pool_drain(self, args: DrainArgs, call: ToolCall) -> dict[str, Any]:
        return await self.pool.drain(args.timeout_s)

    async def pool_scale_up(self, args: CountArgs, call: ToolCall) -> dict[str, Any]:
        return await self.pool.scale_up(args.count)

    async def pool_scale_down(self, args: CountArgs, call: ToolCall) -> dict[str, Any]:
        return await self.pool.scale_down(args.count)

    async def pool_set_target_slots(self, args: TargetArgs, call: ToolCall) -> dict[str, Any]:
        return await self.pool.set_target(args.target)


def _task_tools(tools: PoolTools) -> list[Tool]:
    return [
        Tool(
            "pool_run",
            tools.pool_run,
            "Run a task on a slot (claude -p) and wait for it: output, spend_usd, tokens_used.",
            RunArgs,
        ),
        Tool("pool_submit", tools.pool_submit, "Queue a task and return its task_id at once.", RunArgs),
        Tool(
            "pool_result",
            tools.pool_result,
            "A task's status and, once done, its output and spend.",
            TaskArgs,
        ),
        Tool(
            "pool_cancel",
            tools.pool_cancel,
            "Cancel a queued or running task (its process is killed).",
            TaskArgs,
        ),
        Tool(
            "pool_fan_out",
            tools.pool_fan_out,
            "Run many prompts in parallel; one result per prompt, in order, failures included.",
            FanOutArgs,
        ),
    ]


def _chain_tools(tools: PoolTools) -> list[Tool]:
    return [
        Tool(
            "pool_chain",
            tools.pool_chain,
            "Run steps in order ({previous_output} feeds the next); failure_policy abort|skip|retry.",
            ChainArgs,
        ),
        Tool(
            "pool_submit_chain",
            tools.pool_submit_chain,
            "Start a chain and return its chain_id at once.",
            ChainArgs,
        ),
        Tool(
            "pool_chain_result",
            tools.pool_chain_result,
            "A chain's progress: every step's status and output so far.",
            ChainIdArgs,
        ),
    ]


def _slot_tools(tools: PoolTools) -> list[Tool]:
    return [
        Tool(
            "pool_status",
            tools.pool_status,
            "Slots (idle, busy), queued and running tasks, spend and budget.",
            NoArgs,
        ),
        Tool(
            "pool_drain",
            tools.pool_drain,
            "Cancel queued tasks, let running ones finish up to timeout_s, then cancel them.",
            DrainArgs,
        ),
        Tool("pool_scale_up", tools.pool_scale_up, "Add slots (up to max_slots).", CountArgs),
        Tool(
            "pool_scale_down",
            tools.pool_scale_down,
            "Remove slots, idle ones first; a busy slot gets busy_grace_s.",
            CountArgs,
        ),
        Tool(
            "pool_set_target_slots",
            tools.pool_set_target_slots,
            "Scale to exactly `target` slots.",
            TargetArgs,
        ),
    ]


def register_resources(register: RegisterResource, hub: PluginContext, pool: Pool) -> None:
    async def status() -> dict[str, Any]:
        return await pool.status()

    async def slots() -> list[dict[str, Any]]:
        return [s.describe() for s in pool.slots]

    async def slot(params: dict[str, str]) -> dict[str, Any]:
        return pool.slot(params["id"])

    async def budget() -> dict[str, Any]:
        summary = await hub.budget.summary()
        status = await pool.status()
        return {
            **summary,
            "pool_spend_usd": status["spend_usd"],
            "max_budget_per_task_usd": pool.settings.max_budget_per_task_usd,
        }

    async def result(params: dict[str, str]) -> dict[str, Any]:
        return await pool.result(params["task_id"])

    async def chain(params: dict[str, str]) -> dict[str, Any]:
        return await pool.chain_result(params["chain_id"])

    register(Resource("pool://status", "status", status, "Slots, queue, running tasks, spend and budget."))
    register(Resource("pool://slots", "slots", slots, "Every slot."))
    register(ResourceTemplate("pool://slots/{id}", "slot", slot, "One slot."))
    register(Resource("pool://budget", "budget", budget, "The shared budget and what the pool spent."))
    register(Resource("pool://context", "context", hub.context.all, "The shared context the slots see."))
    register(ResourceTemplate("pool://results/{task_id}", "result", result, "One task's result."))
    register(
        ResourceTemplate("pool://chains/{chain_id}", "chain", chain, "One chain's progress and results.")
    )


def _skill_prompt(skill: Skill) -> Prompt:
    async def render(arguments: dict[str, str]) -> str:
        return str(skill.render(arguments))

    return Prompt(
        skill.name,
        render,
        skill.description,
        [PromptArgument(a.name, a.description, a.required) for a in skill.arguments],
    )
