"""The pool plugin through an MCP client, with the fake `claude` CLI kept in the tests."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import hub_pool
import mcp.types as types
import pytest
from hub_pool.runner import Seen
from hubtests import TESTS, gone

from hub.testing import call_error as error_of
from hub.testing import call_failed as failed
from hub.testing import call_ok as call
from hub.testing import make_config, result_json, result_text, running_hub

pytestmark = pytest.mark.anyio
FAKE_CLAUDE = TESTS / "peers" / "fake_claude.py"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def runs(tmp_path, monkeypatch) -> Path:
    """Where the fake CLI records each run (argv, stdin, cwd, pid)."""
    log = tmp_path / "runs"
    log.mkdir()
    monkeypatch.setenv("FAKE_CLAUDE_LOG", str(log))
    monkeypatch.setenv("CLAUDECODE", "1")  # as inside a Claude Code session: must not reach the child
    return log


def recorded(log: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(log.glob("*.json"), key=lambda p: p.stat().st_mtime)]


def pool_config(tmp_path: Path, budget: float | None = None, **settings: Any):
    pool = {"claude_command": f"{sys.executable} {FAKE_CLAUDE}", "busy_grace_s": 0.5, **settings}
    extra = {"budget": {"limit_usd": budget}} if budget is not None else {}
    return make_config(tmp_path, plugins={"pool": pool}, **extra)


def hub_for(tmp_path: Path, **kw: Any):
    return running_hub(pool_config(tmp_path, **kw), plugins={"pool": hub_pool.PoolPlugin})


async def wait_status(client, task_id: str, *states: str) -> dict[str, Any]:
    with anyio.fail_after(20):
        while True:
            result = await call(client, "pool_result", task_id=task_id)
            if result["status"] in states:
                return result
            await anyio.sleep(0.02)


def sh(*args: str) -> str:
    """Run a command (git) and return its output; blocking is fine for these quick calls."""
    return subprocess.run(args, capture_output=True, text=True, check=True).stdout


async def test_pool_run_runs_the_cli_with_the_right_flags(tmp_path, runs):
    async with hub_for(tmp_path, system_prompt="Be terse.", max_budget_per_task_usd=0.5) as (hub, client):
        await hub.context.set("language", "rust")
        progress: list[str | None] = []

        async def on_progress(done: float, total: float | None, message: str | None) -> None:
            progress.append(message)

        result = await client.call_tool(
            "pool_run", {"prompt": "say hello [cost=0.02]", "effort": "high"}, progress_callback=on_progress
        )
        out = result_json(result)
        assert out["status"] == "completed" and out["output"] == "done: say hello [cost=0.02]"
        assert out["spend_usd"] == 0.02 and out["tokens_used"] == {
            "input": len("say hello [cost=0.02]") // 4 + 1,
            "output": 20,
        }
        assert out["session_id"] and out["slot"] == "slot-0"
        (run,) = recorded(runs)
        argv = run["argv"]
        assert argv[:3] == ["-p", "--output-format=stream-json", "--verbose"] and argv[-1] == "--"
        assert "--permission-mode=plan" in argv and "--effort=high" in argv and "--max-budget-usd=0.5" in argv
        # The system prompt (with the shared context) in a private file, not on the command line.
        system = run["system_prompt_file"]
        assert (
            system["text"] == "Be terse.\n\nShared context:\n- language: rust" and system["mode"] == "0o600"
        )
        assert "rust" not in " ".join(argv) and not Path(system["path"]).exists()  # removed after the run
        assert not any(a.startswith("--resume") for a in argv)
        assert "say hello" not in " ".join(argv)  # the prompt goes on stdin
        assert run["stdin"] == "say hello [cost=0.02]" and run["claudecode"] is False
        assert progress and progress[0] == "working on it"
        budget = await hub.budget.summary()
        assert budget["spent_usd"] == 0.02 and budget["reserved_usd"] == 0
        again = await call(client, "pool_run", prompt="go on", session_id=out["session_id"])
        assert (
            recorded(runs)[-1]["argv"][-2:] == [f"--resume={out['session_id']}", "--"]
            and again["session_id"] == out["session_id"]
        )


async def test_a_queue_when_every_slot_is_busy_and_cancel_of_running_and_queued(tmp_path, runs):
    async with hub_for(tmp_path, slots=1) as (_, client):
        hung = (await call(client, "pool_submit", prompt="forever [hang]"))["task_id"]
        queued = [(await call(client, "pool_submit", prompt=f"later {i}"))["task_id"] for i in range(2)]
        await wait_status(client, hung, "running")
        status = await call(client, "pool_status")
        assert status["queued"] == queued and status["running"] == [hung] and status["idle"] == 0
        assert (await call(client, "pool_result", task_id=queued[1]))["queue_position"] == 2

        assert (await call(client, "pool_cancel", task_id=queued[0]))["status"] == "cancelled"
        with anyio.fail_after(10):
            while not recorded(runs) or "grandchild" not in recorded(runs)[0]:
                await anyio.sleep(0.02)
        run = recorded(runs)[0]
        cancelled = await call(client, "pool_cancel", task_id=hung)
        assert cancelled == {"task_id": hung, "status": "cancelled", "cancelled": True}
        assert gone(run["pid"]) and gone(run["grandchild"])  # the whole process group was killed
        assert (await call(client, "pool_result", task_id=hung))["status"] == "cancelled"
        done = await wait_status(client, queued[1], "completed")
        assert done["output"] == "done: later 1"
        assert [r["stdin"] for r in recorded(runs)] == ["forever [hang]", "later 1"]  # 'later 0' never ran
        assert (await call(client, "pool_result", task_id=queued[0]))["status"] == "cancelled"
        again = await call(client, "pool_cancel", task_id=hung)
        assert again["cancelled"] is False and again["details"] == "the task had already ended (cancelled)"
        assert (await error_of(client, "pool_result", task_id="task_nope")).startswith(
            "no task 'task_nope' (recent: "
        )


async def test_a_result_is_kept_when_the_cli_leaves_a_child_holding_stdout(tmp_path, runs):
    async with hub_for(tmp_path, task_timeout_s=20) as (_, client):
        with anyio.fail_after(15):
            out = await call(client, "pool_run", prompt="done but lingering [linger]")
        assert out["status"] == "completed" and out["output"] == "done: done but lingering [linger]"
        run = recorded(runs)[-1]
        with anyio.fail_after(10):
            while not gone(run["grandchild"]):  # the leftover was killed with the group
                await anyio.sleep(0.05)


async def test_fan_out_keeps_order_and_failures(tmp_path, runs):
    async with hub_for(tmp_path, slots=3) as (_, client):
        out = await failed(  # isError: some prompts failed; every result is still there
            client, "pool_fan_out", prompts=["one [delay=0.3]", "two [fail]", "three [crash]", "four"]
        )
        results = out["results"]
        assert [r["status"] for r in results] == ["completed", "failed", "failed", "completed"]
        assert results[0]["output"] == "done: one [delay=0.3]" and results[3]["output"] == "done: four"
        assert results[1]["error"] == "error_during_execution: it went wrong"
        assert results[2]["error"].startswith(
            "claude exited with code 3 without a result; stderr: fake claude: crashing"
        )
        assert out["completed"] == 2 and out["failed"] == 2
        # A failed run reports its cost, which is charged; a crash reports none, so its whole
        # reservation (the default max_budget_per_task_usd, $1) is.
        assert results[1]["spend_known"] is True and results[1]["charged_usd"] == 0.001
        assert results[2]["spend_known"] is False and results[2]["charged_usd"] == 1.0
        assert results[2]["spend_note"] == (
            "the CLI ended without reporting its spend (it crashed or was killed), "
            "so the task's whole reservation ($1.00) was charged"
        )
        assert out["spend_usd"] == out["charged_usd"] == pytest.approx(1.003)
        assert out["spend_known"] is False
        assert out["spend_note"].startswith("the spend of 1 of 4 tasks is not known: the CLI ended")


async def test_chain_failure_policies_and_previous_output(tmp_path, runs):
    async with hub_for(tmp_path, slots=2) as (_, client):
        ok = await call(
            client, "pool_chain", steps=[{"prompt": "first"}, {"prompt": "second got <{previous_output}>"}]
        )
        assert ok["status"] == "completed" and ok["completed_steps"] == 2
        assert ok["final_output"] == "done: second got <done: first>"

        abort = await failed(
            client, "pool_chain", steps=[{"prompt": "a"}, {"prompt": "b [fail]"}, {"prompt": "c"}]
        )
        assert abort["status"] == "failed" and [s["status"] for s in abort["steps"]] == [
            "completed",
            "failed",
            "not_run",
        ]
        assert abort["steps"][1]["error"] == "error_during_execution: it went wrong"

        skip = await failed(
            client,
            "pool_chain",
            failure_policy="skip",
            steps=[{"prompt": "a"}, {"prompt": "b [fail]"}, {"prompt": "c <{previous_output}>"}],
        )
        assert skip["status"] == "partial" and [s["status"] for s in skip["steps"]] == [
            "completed",
            "skipped",
            "completed",
        ]
        assert skip["final_output"] == "done: c <done: a>"

        retry = await failed(
            client, "pool_chain", steps=[{"prompt": "x [fail]", "failure_policy": "retry", "retries": 2}]
        )
        assert (
            retry["status"] == "failed"
            and retry["steps"][0]["attempts"] == 3
            and len(retry["steps"][0]["task_ids"]) == 3
        )

        skill = await call(
            client,
            "pool_chain",
            steps=[
                {"skill": "summarize", "arguments": {"target": "README.md"}},
                {"prompt": "then {previous_output}", "model": "opus"},
            ],
        )
        assert skill["status"] == "completed"
        assert recorded(runs)[-2]["stdin"].startswith("Summarize README.md:")
        assert "--model=opus" in recorded(runs)[-1]["argv"]

        submitted = await call(
            client, "pool_submit_chain", steps=[{"prompt": "slow [delay=0.5]"}, {"prompt": "after"}]
        )
        with anyio.fail_after(10):
            while True:
                progress = await call(client, "pool_chain_result", chain_id=submitted["chain_id"])
                if progress["current_step"]:
                    break
                await anyio.sleep(0.02)
        assert progress["status"] == "running" and progress["current_step"]["index"] == 0
        with anyio.fail_after(10):
            while (await call(client, "pool_chain_result", chain_id=submitted["chain_id"]))[
                "status"
            ] == "running":
                await anyio.sleep(0.05)
        bad = await error_of(
            client, "pool_chain", steps=[{"skill": "refactor", "arguments": {"target": "x"}}]
        )
        assert bad == "steps[0]: skill refactor: missing required argument(s): goal"


async def test_budget_refuses_tasks_under_concurrency(tmp_path, runs):
    async with hub_for(tmp_path, budget=0.25, slots=4, max_budget_per_task_usd=0.1) as (hub, client):
        results: list[Any] = []

        async def one(i: int) -> None:
            results.append(await client.call_tool("pool_run", {"prompt": f"job {i} [delay=0.3] [cost=0.05]"}))

        async with anyio.create_task_group() as tg:
            for i in range(4):
                tg.start_soon(one, i)
        refused = [result_text(r) for r in results if r.is_error]
        assert len(refused) == 2
        assert all(
            t.startswith(
                "task refused: budget exhausted: spent $0.00 (+$0.20 reserved by running work) of $0.25"
            )
            for t in refused
        )
        assert (await hub.budget.summary())["spent_usd"] == pytest.approx(0.1)
        fanned = await failed(
            client, "pool_fan_out", prompts=["a [cost=0.06]", "b", "c", "d", "e"], max_budget_usd=0.06
        )
        assert [r["status"] for r in fanned["results"]].count("refused") >= 3
        refused = next(r for r in fanned["results"] if r["status"] == "refused")
        assert refused["spend_known"] is True and refused["charged_usd"] == 0.0  # it never ran


async def test_spend_is_the_reported_cost_or_else_the_whole_reservation(tmp_path, runs):
    """One rule: the cost the CLI reports is charged (known); a task that never started is charged
    $0 (known); a process that ran but ended without reporting is charged its whole reservation."""
    async with hub_for(tmp_path, slots=1, max_budget_per_task_usd=0.5) as (hub, client):
        done = await call(client, "pool_run", prompt="finish [cost=0.02]")
        assert done["spend_known"] is True and done["charged_usd"] == done["spend_usd"] == 0.02
        assert "spend_note" not in done
        assert (done["seen_input_tokens"], done["seen_output_tokens"]) == (10, 3)
        errored = await failed(client, "pool_run", prompt="breaks [fail] [cost=0.03]")
        assert errored["spend_known"] is True and errored["charged_usd"] == 0.03  # an error result too

        hung = (await call(client, "pool_submit", prompt="forever [hang]"))["task_id"]
        queued = (await call(client, "pool_submit", prompt="never runs"))["task_id"]
        with anyio.fail_after(20):
            while not (running := await call(client, "pool_result", task_id=hung))["seen_input_tokens"]:
                await anyio.sleep(0.02)
        assert running["status"] == "running" and running["spend_known"] is False
        assert running["spend_note"] == (
            "the task is running: what it spends is known when it ends; until then $0.50 is reserved for it"
        )
        waiting = await call(client, "pool_result", task_id=queued)
        assert waiting["spend_known"] is False and waiting["spend_note"].startswith("the task is queued: ")

        assert (await call(client, "pool_cancel", task_id=queued))["cancelled"] is True
        never = await call(client, "pool_result", task_id=queued)
        assert never["spend_known"] is True and never["charged_usd"] == 0.0 and "spend_note" not in never
        assert (await call(client, "pool_cancel", task_id=hung))["cancelled"] is True
        cancelled = await call(client, "pool_result", task_id=hung)
        assert cancelled["spend_known"] is False and cancelled["charged_usd"] == cancelled["spend_usd"] == 0.5
        assert cancelled["spend_note"] == (
            "cancelled while running: the CLI reports its spend only when it finishes, "
            "so the task's whole reservation ($0.50) was charged"
        )
        assert (cancelled["seen_input_tokens"], cancelled["seen_output_tokens"]) == (10, 3)
        budget = await hub.budget.summary()
        assert budget["spent_usd"] == pytest.approx(0.55) and budget["reserved_usd"] == 0

        timed = await failed(client, "pool_run", prompt="too slow [hang]", timeout_s=0.5)
        assert timed["status"] == "timeout" and timed["spend_known"] is False
        assert timed["charged_usd"] == 0.5 and timed["spend_note"].startswith(
            "timed out: the CLI was killed before it reported its spend, so the task's whole reservation"
        )

        chain = (await call(client, "pool_submit_chain", steps=[{"prompt": "a [hang]"}, {"prompt": "b"}]))[
            "chain_id"
        ]
        with anyio.fail_after(20):
            while not (step := (await call(client, "pool_chain_result", chain_id=chain))["steps"][0])[
                "task_ids"
            ]:
                await anyio.sleep(0.02)
        await wait_status(client, step["task_ids"][0], "running")
        await call(client, "pool_cancel", task_id=step["task_ids"][0])
        with anyio.fail_after(20):
            while (ended := await call(client, "pool_chain_result", chain_id=chain))["status"] == "running":
                await anyio.sleep(0.02)
        step = ended["steps"][0]
        assert step["status"] == "cancelled" and step["spend_known"] is False
        assert step["charged_usd"] == step["spend_usd"] == 0.5
        assert step["spend_note"].startswith("cancelled while running: ")
        assert ended["total_spend"] == ended["charged_usd"] == 0.5 and ended["spend_known"] is False

        status = await call(client, "pool_status")
        assert status["spend_usd"] == status["charged_usd"] == pytest.approx(1.55)
        assert status["spend_known"] is False
        assert status["spend_note"].startswith("3 of 6 tasks ended without the CLI reporting what they spent")
        assert status["spend_note"].endswith("so each was charged its whole reservation: $1.50 in all")


def test_seen_tokens_count_each_api_message_once():
    """The CLI prints an API message once per content block, each copy with the same usage."""
    seen = Seen()
    usage = {"input_tokens": 5, "cache_read_input_tokens": 100, "output_tokens": 7}
    for block in ("text", "tool_use"):
        seen.assistant(
            {"type": "assistant", "message": {"id": "msg_1", "content": [{"type": block}], "usage": usage}}
        )
    seen.assistant(
        {"type": "assistant", "message": {"id": "msg_2", "usage": {"input_tokens": 1, "output_tokens": 2}}}
    )
    seen.assistant({"type": "assistant", "message": {"id": "msg_3"}})  # no usage: nothing to count
    assert (seen.input_tokens, seen.output_tokens) == (106, 9)
    seen.result({"type": "result", "subtype": "error_during_execution"})
    assert seen.cost_usd is None  # a result without total_cost_usd does not say the spend
    seen.result({"type": "result", "total_cost_usd": 0.25})
    assert seen.cost_usd == 0.25


async def test_tasks_ended_before_the_spend_fields_read_with_the_same_rule(tmp_path):
    """Rows an older hub ended: known when the CLI printed a result (subtype) or no process was
    started (no pid); a process that ran without a result, or a hub stopped under it, is not."""
    from hub_pool.pool import MIGRATIONS, task_view

    from hub.services.sqlite_store import SQLiteStore as Store

    store = Store(tmp_path / "hub.sqlite")
    try:
        await store.migrate("pool", MIGRATIONS[:2])
        old = [
            ("done", "completed", "success", 111, None, 0.02),
            ("crashed", "failed", None, 222, "claude exited with code 3 without a result", 0.0),
            ("cancelled", "cancelled", None, 333, "cancelled by pool_cancel", 0.0),
            ("never", "cancelled", None, None, "cancelled by pool_cancel", 0.0),
            ("stopped", "interrupted", None, None, "the hub stopped while this task was running", 0.0),
            ("open", "running", None, 444, None, 0.0),
        ]
        for task_id, status, subtype, pid, error, spend in old:
            await store.execute(
                "INSERT INTO pool_tasks (id, prompt, status, subtype, pid, error, spend_usd) VALUES (?, 'p', ?, ?, ?, ?, ?)",
                (task_id, status, subtype, pid, error, spend),
            )
        await store.migrate("pool", MIGRATIONS)
        views = {row["id"]: task_view(dict(row)) for row in await store.fetchall("SELECT * FROM pool_tasks")}
    finally:
        store.close()
    known = {task_id: view["spend_known"] for task_id, view in views.items()}
    assert known == {
        "done": True,
        "crashed": False,
        "cancelled": False,
        "never": True,
        "stopped": False,
        "open": False,  # not yet: it has not ended
    }
    assert views["crashed"]["spend_note"] == (
        "the task ended without the CLI reporting its spend, so what it spent cannot be known; $0.00 was charged"
    )
    assert views["open"]["spend_note"] == "the task is running: what it spends is known when it ends"


async def test_drain_cancels_queued_and_a_hung_task_after_its_timeout(tmp_path, runs):
    async with hub_for(tmp_path, slots=1) as (_, client):
        hung = (await call(client, "pool_submit", prompt="stuck [hang]"))["task_id"]
        queued = (await call(client, "pool_submit", prompt="never"))["task_id"]
        await wait_status(client, hung, "running")
        drained = await call(client, "pool_drain", timeout_s=0.5)
        assert drained["cancelled_queued"] == 1 and drained["cancelled_running"] == [hung]
        assert drained["total_tasks"] == 2 and drained["cancelled"] == 2
        assert (await call(client, "pool_result", task_id=hung))[
            "error"
        ] == "still running when the drain's 0.5 s were up"
        assert (await call(client, "pool_result", task_id=queued))["status"] == "cancelled"
        assert (await call(client, "pool_run", prompt="after the drain"))[
            "status"
        ] == "completed"  # open again


async def test_scaling_removes_idle_slots_first_and_cancels_a_busy_one_after_grace(tmp_path, runs):
    async with hub_for(tmp_path, slots=2, min_slots=0, max_slots=3) as (_, client):
        hung = (await call(client, "pool_submit", prompt="busy [hang]"))["task_id"]
        await wait_status(client, hung, "running")
        busy_slot = (await call(client, "pool_result", task_id=hung))["slot"]
        up = await call(client, "pool_scale_up", count=1)
        assert up["new_slot_count"] == 3
        assert "at most 3 (max_slots)" in await error_of(client, "pool_scale_up", count=1)
        down = await call(client, "pool_scale_down", count=2)
        assert down["new_slot_count"] == 1 and down["cancelled_tasks"] == []  # the two idle ones went
        assert [s["id"] for s in (await call(client, "pool_status"))["slots"]] == [busy_slot]
        last = await call(client, "pool_set_target_slots", target=0)
        assert last["new_slot_count"] == 0 and last["cancelled_tasks"] == [hung]
        assert "did not finish within 0.5 s" in last["details"]
        result = await call(client, "pool_result", task_id=hung)
        assert result["status"] == "cancelled" and "removed by scale-down" in result["error"]
        assert "outside 0..3" in await error_of(client, "pool_set_target_slots", target=9)


async def test_skills_builtin_user_and_as_prompts(tmp_path, runs):
    skills_dir = tmp_path / "skills"
    (skills_dir / "triage").mkdir(parents=True)
    (skills_dir / "triage" / "SKILL.md").write_text(
        "---\nname: triage\ndescription: Sort an issue\narguments:\n  - name: issue\n    description: the issue text\n---\nTriage this: {issue}\n"
    )
    (skills_dir / "broken.md").write_text("no front matter")
    user = {"greet": {"description": "Greet", "prompt": "Say hi to {who}", "arguments": [{"name": "who"}]}}
    async with hub_for(tmp_path, skills_dir=str(skills_dir), skills=user) as (_, client):
        review = await call(client, "pool_skill_run", skill="code_review", arguments={"target": "src/lib.rs"})
        assert review["skill"] == "code_review" and recorded(runs)[-1]["stdin"].startswith(
            "Review src/lib.rs for bugs"
        )
        await call(
            client,
            "pool_skill_run",
            skill="refactor",
            arguments={"target": "a.py", "goal": "smaller functions"},
        )
        assert "with this goal: smaller functions" in recorded(runs)[-1]["stdin"]
        assert await error_of(
            client, "pool_skill_run", skill="refactor", arguments={"target": "a.py", "path": "x"}
        ) == (
            "skill refactor: missing required argument(s): goal; unknown argument(s): path (it takes: goal, target)"
        )
        assert (await error_of(client, "pool_skill_run", skill="nope")).startswith(
            "unknown skill 'nope' (skills: "
        )
        await call(client, "pool_skill_run", skill="triage", arguments={"issue": "crash on start"})
        assert recorded(runs)[-1]["stdin"] == "Triage this: crash on start"
        await call(client, "pool_skill_run", skill="greet", arguments={"who": "Ada"})
        assert recorded(runs)[-1]["stdin"] == "Say hi to Ada"
        prompts = {p.name: p for p in (await client.list_prompts()).prompts}
        assert {"code_review", "write_tests", "summarize", "refactor", "triage", "greet"} <= set(prompts)
        got = await client.get_prompt("refactor", {"target": "a.py", "goal": "speed"})
        assert got.messages[0].content.text.startswith("Refactor a.py with this goal: speed.")
    async with hub_for(tmp_path / "nobuiltins", builtins=False) as (_, client):
        assert (await client.list_prompts()).prompts == []


async def test_a_missing_cli_is_a_clear_failure(tmp_path, runs):
    async with hub_for(tmp_path, claude_command="no-such-claude-xyz") as (hub, client):
        status = await hub.status()
        warnings = next(p["warnings"] for p in status["plugins"] if p["name"] == "pool")
        assert warnings == [
            "the Claude Code CLI 'no-such-claude-xyz' was not found (PATH or [plugins.pool] claude_command): "
            "pool tasks fail until it is installed (npm install -g @anthropic-ai/claude-code) or "
            "claude_command points at it"
        ]
        out = await failed(client, "pool_run", prompt="hello")
        assert out["status"] == "failed"
        assert out["error"].startswith(
            "cannot run 'no-such-claude-xyz': No such file or directory (install Claude Code"
        )
        skill = await failed(client, "pool_skill_run", skill="summarize", arguments={"target": "x"})
        assert skill["status"] == "failed" and skill["skill"] == "summarize"
        assert (await hub.budget.summary())["reserved_usd"] == 0


async def test_resources(tmp_path, runs):
    async with hub_for(tmp_path) as (hub, client):
        done = await call(client, "pool_run", prompt="hello")
        chain = await call(client, "pool_chain", steps=[{"prompt": "x"}])
        await hub.context.set("k", "v")

        async def read(uri: str) -> Any:
            return json.loads((await client.read_resource(uri)).contents[0].text)

        assert (await read("pool://status"))["slot_count"] == 2
        assert [s["id"] for s in await read("pool://slots")] == ["slot-0", "slot-1"]
        assert (await read("pool://slots/slot-1"))["status"] == "idle"
        assert (await read("pool://budget"))["pool_spend_usd"] == pytest.approx(0.002)
        assert await read("pool://context") == {"k": "v"}
        assert (await read(f"pool://results/{done['task_id']}"))["output"] == "done: hello"
        assert (await read(f"pool://chains/{chain['chain_id']}"))["status"] == "completed"


async def test_a_killed_hub_leaves_running_work_interrupted_and_results_readable(tmp_path, runs):
    from hubtests import StdioPeer, hub_env

    (tmp_path / "hub.toml").write_text(
        f"[plugins]\nenabled = [\"pool\"]\n[plugins.pool]\nclaude_command = '{sys.executable} {FAKE_CLAUDE}'\nslots = 1\n"
    )
    peer = StdioPeer(
        ["--config", str(tmp_path / "hub.toml")], hub_env(tmp_path, FAKE_CLAUDE_LOG=str(runs)), tmp_path
    )
    try:
        peer.initialize()
        done = peer.request("tools/call", {"name": "pool_run", "arguments": {"prompt": "finished"}})["result"]
        assert done["structuredContent"]["status"] == "completed", done
        running = peer.request("tools/call", {"name": "pool_submit", "arguments": {"prompt": "long [hang]"}})[
            "result"
        ]
        queued = peer.request("tools/call", {"name": "pool_submit", "arguments": {"prompt": "waits"}})[
            "result"
        ]
        with anyio.fail_after(10):
            while len(recorded(runs)) < 2:
                await anyio.sleep(0.02)
        running_id = running["structuredContent"]["task_id"]
        with anyio.fail_after(10):  # the hub writes the tokens it has seen as the task runs
            while not peer.request(
                "tools/call", {"name": "pool_result", "arguments": {"task_id": running_id}}
            )["result"]["structuredContent"]["seen_input_tokens"]:
                await anyio.sleep(0.05)
        dead_pid = peer.proc.pid
        peer.proc.kill()  # kill -9: no chance to clean up
        peer.proc.wait(timeout=10)
    finally:
        peer.close()
    orphan = recorded(runs)[-1]
    with anyio.fail_after(10):  # the CLI dies with its hub (parent-death signal) ...
        while not gone(orphan["pid"]):
            await anyio.sleep(0.02)
    assert not gone(orphan["grandchild"])  # ... but what it started is left, until a hub recovers
    config = pool_config(tmp_path, slots=1)
    async with running_hub(config, plugins={"pool": hub_pool.PoolPlugin}) as (hub, client):
        assert gone(orphan["grandchild"])  # its process group was killed before anything was marked
        first = await call(client, "pool_result", task_id=done["structuredContent"]["task_id"])
        assert first["status"] == "completed" and first["output"] == "done: finished"
        lost = await call(client, "pool_result", task_id=running["structuredContent"]["task_id"])
        assert lost["status"] == "interrupted", lost
        assert lost["error"].startswith(f"its hub (pid {dead_pid}) died while this task was running")
        assert "its whole reservation ($1.0000) was charged" in lost["error"]
        assert lost["spend_usd"] == 1.0  # what the orphan spent cannot be known: the cap is charged
        # The same rule and fields as a running hub's, with the tokens the dead hub had seen.
        assert lost["spend_known"] is False and lost["charged_usd"] == 1.0
        assert lost["spend_note"] == (
            "its hub died while the task was running, before the CLI could report its spend, "
            "so the task's whole reservation ($1.00) was charged"
        )
        assert (lost["seen_input_tokens"], lost["seen_output_tokens"]) == (10, 3)
        assert first["spend_known"] is True and first["charged_usd"] == 0.001
        never = await call(client, "pool_result", task_id=queued["structuredContent"]["task_id"])
        assert never["status"] == "interrupted"
        assert never["error"] == f"its hub (pid {dead_pid}) died before this task ran"
        assert never["spend_known"] is True and never["charged_usd"] == 0.0 and "spend_note" not in never
        budget = await hub.budget.summary()
        assert budget["spent_usd"] == pytest.approx(1.001) and budget["reserved_usd"] == 0
        assert len(recorded(runs)) == 2  # nothing was re-run


async def test_worktrees_per_slot_keep_their_branches(tmp_path, runs, monkeypatch):
    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.email=t@t", "-c", "user.name=t"]
    sh("git", "init", "-q", "-b", "main", str(repo))
    (repo / "a.txt").write_text("a\n")
    sh(*git, "add", ".")
    sh(*git, "commit", "-qm", "init")
    async with hub_for(tmp_path, worktree=True, cwd=str(repo), slots=2, min_slots=1) as (_, client):
        slots = (await call(client, "pool_status"))["slots"]
        paths = [Path(s["worktree"]) for s in slots]
        assert all(p.is_dir() and (p / "a.txt").exists() for p in paths)
        await call(client, "pool_run", prompt="in a worktree")
        assert Path(recorded(runs)[-1]["cwd"]).resolve() == paths[0].resolve()
        sh(
            "git",
            "-C",
            str(paths[1]),
            "-c",
            "user.email=t@t",
            "-c",
            "user.name=t",
            "commit",
            "-q",
            "--allow-empty",
            "-m",
            "work of slot-1",
        )
        (paths[1] / "draft.txt").write_text("not committed yet\n")
        await call(client, "pool_scale_down", count=1)
        assert not paths[1].exists()
    owner = paths[0].parent.name  # worktrees and branches are per hub instance
    assert paths[1].parent.name == owner
    branches = sh(*git, "branch", "--list", "hub-pool/*")
    assert f"hub-pool/{owner}/slot-0" in branches and f"hub-pool/{owner}/slot-1" in branches
    log = sh(*git, "log", "--format=%s", f"hub-pool/{owner}/slot-1")
    assert "work of slot-1" in log  # the branch and its commit outlive the worktree
    assert "hub pool: uncommitted work left in slot-1" in log  # and uncommitted work was committed
    assert sh(*git, "show", f"hub-pool/{owner}/slot-1:draft.txt") == "not committed yet\n"
    assert not paths[0].exists()  # removed at shutdown
    assert str(paths[0]) not in sh(*git, "worktree", "list", "--porcelain")
    # A worktree of a hub from before owners (<repo-hash>/slot-N) is retired at the next start:
    # its uncommitted work committed to its branch, which stays.
    legacy = paths[0].parent.parent / "slot-9"
    sh(*git, "worktree", "add", "-q", "-b", "hub-pool/slot-9", str(legacy), "HEAD")
    (legacy / "left.txt").write_text("left behind\n")
    async with hub_for(tmp_path, worktree=True, cwd=str(repo), slots=1, min_slots=1) as (_, client):
        assert str(legacy) not in sh(*git, "worktree", "list", "--porcelain")
        assert sh(*git, "show", "hub-pool/slot-9:left.txt") == "left behind\n"
    outside = tmp_path / "plain"
    outside.mkdir()
    from hub.plugin.manager import PluginLoadError

    with pytest.raises(
        PluginLoadError,
        match=r"plugin 'pool' failed to start: .*worktree = true needs a git repository, and .* is not in one",
    ):
        async with hub_for(tmp_path / "o", worktree=True, cwd=str(outside)):
            pass


async def test_workers_get_only_the_mcp_servers_they_are_given(tmp_path, runs):
    async with hub_for(tmp_path) as (_, client):
        await call(client, "pool_run", prompt="plain")
    argv = recorded(runs)[-1]["argv"]
    assert "--strict-mcp-config" in argv and not any(a.startswith("--mcp-config") for a in argv)  # none
    assert recorded(runs)[-1]["pool_depth"] == "1"
    servers = {"mcpServers": {"time": {"command": "mcp-server-time"}}}
    async with hub_for(tmp_path, worker_mcp_config=servers) as (_, client):
        await call(client, "pool_run", prompt="with a server")
    argv, given = recorded(runs)[-1]["argv"], recorded(runs)[-1]["mcp_config_file"]
    assert json.loads(given["text"]) == servers and given["mode"] == "0o600" and "--strict-mcp-config" in argv
    assert "mcp-server-time" not in " ".join(argv)  # by file: `ps` shows argv to every user
    (tmp_path / "workers.json").write_text(json.dumps(servers))
    async with hub_for(tmp_path, worker_mcp_config=str(tmp_path / "workers.json")) as (_, client):
        await call(client, "pool_run", prompt="from a file")
    assert f"--mcp-config={tmp_path / 'workers.json'}" in recorded(runs)[-1]["argv"]


async def test_a_hub_inside_a_worker_serves_no_pool_unless_max_depth_allows(tmp_path, monkeypatch):
    monkeypatch.setenv("HUB_POOL_DEPTH", "1")  # as the pool sets it for its workers
    async with hub_for(tmp_path) as (hub, client):
        names = [t.name for t in (await client.list_tools()).tools]
        assert not [n for n in names if n.startswith("pool_")] and "context_set" in names
        assert "depth 1" in hub.plugins["pool"].plugin.disabled
    async with hub_for(tmp_path, max_depth=2) as (_, client):
        assert "pool_run" in [t.name for t in (await client.list_tools()).tools]


async def test_pool_skill_run_names_each_skill_and_follows_skills_dir(tmp_path, runs):
    """The description lists every skill with its arguments; a new SKILL.md shows up in it (and
    as a prompt) with tools/list_changed, without a restart."""
    skills_dir = tmp_path / "skills"
    skills_dir.mkdir()
    changed = anyio.Event()

    async def on_message(message: Any) -> None:
        if isinstance(message, types.ToolListChangedNotification):
            changed.set()

    config = pool_config(tmp_path, skills_dir=str(skills_dir), skills_poll_s=0.05)
    async with running_hub(config, plugins={"pool": hub_pool.PoolPlugin}, message_handler=on_message) as (
        _,
        client,
    ):

        async def description() -> str:
            tools = {t.name: t for t in (await client.list_tools()).tools}
            return tools["pool_skill_run"].description or ""

        first = await description()
        assert "- refactor(target, goal): Refactor code toward a goal." in first
        assert "- code_review(target): Review code for bugs, style and clarity." in first
        assert "triage" not in first
        (skills_dir / "triage.md").write_text(
            "---\ndescription: Sort an issue\narguments:\n  - name: issue\n  - name: area\n    required: false\n"
            "---\nTriage this: {issue} {area}\n"
        )
        with anyio.fail_after(20):
            await changed.wait()
        assert "- triage(issue, area?): Sort an issue" in await description()
        assert "triage" in {p.name for p in (await client.list_prompts()).prompts}
        await call(client, "pool_skill_run", skill="triage", arguments={"issue": "crash"})
        assert recorded(runs)[-1]["stdin"] == "Triage this: crash "


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
async def test_the_dashboard_panel_shows_the_shared_queue_and_who_runs_each_task(tmp_path, request, backend):
    """The pool's dashboard panel reads the queue from the store: a task queued by a hub without
    slots waits there (queued by this hub); a `hub worker` takes it, and the panel says which
    worker runs it, among the hubs and workers with slots and in the latest tasks."""
    import socket

    from hub.host import Hub

    state = {} if backend == "sqlite" else {"state_url": request.getfixturevalue("pg").new_url()}
    pool = {"claude_command": f"{sys.executable} {FAKE_CLAUDE}", "slots": 0, "queue": "shared"}
    config = make_config(tmp_path, plugins={"pool": pool}, liveness={"heartbeat_s": 0.2}, **state)
    gate = tmp_path / "gate"

    async def panel(hub: Any) -> tuple[dict[str, Any], dict[str, list[list[Any]]]]:
        (shown,) = [p for p in await hub.panels.snapshot() if p["name"] == "pool"]
        view = shown["view"]
        return view["facts"], {t["title"]: t["rows"] for t in view["tables"]}

    async with running_hub(config, plugins={"pool": hub_pool.PoolPlugin}) as (queuer, client):
        task = (await call(client, "pool_submit", prompt=f"wait for the gate [gate={gate}]"))["task_id"]
        facts, tables = await panel(queuer)
        assert facts["queued"] == 1 and facts["workers"] == 0
        ((position, queued, prompt, _waiting, queued_by, _cancel),) = tables["Queue shared"]
        assert (position, queued, queued_by) == (1, task, "this hub")
        assert prompt.startswith("wait for the gate")
        async with (
            Hub(config, extra_plugins={"pool": hub_pool.PoolPlugin()}, role="worker") as worker,
            anyio.create_task_group() as tg,
        ):
            tg.start_soon(worker.run_workers, 1)
            await wait_status(client, task, "running")
            who = f"worker pid {worker.instances.pid} on {socket.gethostname()}"
            with anyio.fail_after(20):  # the worker's slots reach the store with its heartbeat
                while not (await panel(queuer))[1]["Hubs and workers with slots"]:
                    await anyio.sleep(0.05)
            facts, tables = await panel(queuer)
            assert facts["queued"] == 0 and facts["workers"] == 1 and tables["Queue shared"] == []
            assert tables["Hubs and workers with slots"][0][:4] == [who, 1, 1, task]
            recent = tables["Recent tasks"][0]
            assert recent[:2] == [task, "running"] and recent[3] == who
            gate.touch()
            await wait_status(client, task, "completed")
            tg.cancel_scope.cancel()
