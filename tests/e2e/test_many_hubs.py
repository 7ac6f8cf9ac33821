"""Several real `hub` processes on one store, as with one hub per Claude Code window.

Each hub is started with different `--set` values, so none could ever be the same process. Every
test asserts what a user sees: statuses and errors in tool results, files, the budget ledger, and
which processes are alive (`psutil`). Every test runs twice: on one SQLite state directory, and on
one PostgreSQL database (`store_env`, the session's server from tests/support/pgserver.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from fake_anthropic import FakeAnthropic
from hubtests import TESTS, HubProcess, gone, hub_env, wait_for

FAKE_CLAUDE = TESTS / "peers" / "fake_claude.py"


def runs(log: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(log.glob("*.json"), key=lambda p: p.stat().st_mtime)]


@pytest.fixture
def hubs(tmp_path, store_env):
    """Start hubs on one shared store (a state directory, or a PostgreSQL schema):
    ``hubs("a", "--set", "k=v")``; all are ended after the test."""
    started: list[HubProcess] = []
    log = tmp_path / "runs"
    log.mkdir()
    (tmp_path / "hub.toml").write_text(
        '[plugins]\nenabled = ["pool", "batch"]\n'
        f"[plugins.pool]\nclaude_command = '{sys.executable} {FAKE_CLAUDE}'\nslots = 1\n"
        f"[plugins.batch]\nresults_dir = '{tmp_path / 'results'}'\n"
        "poll_initial_s = 0.1\npoll_factor = 1.0\npoll_jitter = 0\n"
    )

    def start(name: str, *args: str, **env: str) -> HubProcess:
        environment = hub_env(tmp_path, FAKE_CLAUDE_LOG=str(log), **store_env, **env)
        hub = HubProcess(tmp_path, name, environment, "--config", str(tmp_path / "hub.toml"), *args)
        started.append(hub)
        return hub

    start.log = log  # type: ignore[attr-defined]
    yield start
    for hub in started:
        hub.close()


def test_a_starting_hub_leaves_a_live_hubs_tasks_alone_and_sees_them(hubs):
    a = hubs("a", "--set", "plugins.pool.busy_grace_s=1")
    running = a.call("pool_submit", prompt="slow [delay=3]")["task_id"]
    queued = a.call("pool_submit", prompt="after it")["task_id"]
    wait_for(lambda: a.call("pool_result", task_id=running)["status"] == "running", what="the task to run")
    b = hubs("b", "--set", "plugins.pool.busy_grace_s=2")
    seen = b.call("pool_result", task_id=running)
    assert seen["status"] == "running", seen  # not "interrupted" by b's start
    assert seen["hub"]["pid"] == a.pid  # and b says which hub runs it
    assert b.call("pool_result", task_id=queued)["status"] == "queued"
    status = b.call("pool_status")
    assert status["other_hubs"] == [
        {**status["other_hubs"][0], "pid": a.pid, "alive": True, "running": [running], "queued": [queued]}
    ]
    done = wait_for(
        lambda: (r := b.call("pool_result", task_id=queued))["status"] == "completed" and r,
        what="the queued task to complete on hub a",
    )
    assert done["output"] == "done: after it"
    assert b.call("pool_result", task_id=running)["status"] == "completed"
    assert a.call("pool_result", task_id=running)["status"] == "completed"


def test_pool_cancel_from_another_hub_kills_the_task_where_it_runs(hubs):
    a = hubs("a", "--set", "plugins.pool.busy_grace_s=1")
    b = hubs("b", "--set", "plugins.pool.busy_grace_s=2")
    task = a.call("pool_submit", prompt="forever [hang]")["task_id"]
    record = wait_for(lambda: runs(hubs.log), what="the CLI to start")[0]
    cancelled = b.call("pool_cancel", task_id=task)
    assert cancelled["cancelled"] is True and cancelled["status"] == "cancelled", cancelled
    assert cancelled["hub"]["pid"] == a.pid
    assert f"hub pid {a.pid}" in cancelled["details"]
    assert gone(record["pid"]) and gone(record["grandchild"])  # the whole process group
    assert a.call("pool_result", task_id=task)["status"] == "cancelled"
    # A hub's own cancel of another hub's ended task says so, and nothing else happens.
    assert b.call("pool_cancel", task_id=task)["cancelled"] is False


def test_a_hub_killed_mid_task_is_recovered_by_a_live_hub(hubs):
    a = hubs("a", "--set", "plugins.pool.busy_grace_s=1")
    b = hubs("b", "--set", "plugins.pool.busy_grace_s=2")
    task = a.call("pool_submit", prompt="forever [hang]")["task_id"]
    queued = a.call("pool_submit", prompt="never runs")["task_id"]
    record = wait_for(lambda: runs(hubs.log), what="the CLI to start")[0]
    assert record["pool_depth"] == "1"  # workers know they are inside a pool
    assert "--strict-mcp-config" in record["argv"]
    assert not any(a.startswith("--mcp-config") for a in record["argv"])
    a.kill9()
    wait_for(lambda: gone(record["pid"]), what="the CLI to die with its hub")
    lost = wait_for(
        lambda: (r := b.call("pool_result", task_id=task))["status"] == "interrupted" and r,
        what="hub b to recover hub a's work",
    )
    assert lost["error"].startswith(f"its hub (pid {a.pid}) died while this task was running")
    assert lost["spend_usd"] == 1.0  # its spend cannot be known: charged its whole reservation
    assert gone(record["grandchild"])  # what the CLI started was killed too
    never = b.call("pool_result", task_id=queued)
    assert never["status"] == "interrupted" and "died before this task ran" in never["error"]
    budget = b.resource("hub://budget")
    assert budget["spent_usd"] == 1.0 and budget["reserved_usd"] == 0.0
    assert len(runs(hubs.log)) == 1  # nothing re-run


def git(repo: Path, *args: str) -> str:
    command = ["git", "-C", str(repo), "-c", "user.email=t@t", "-c", "user.name=t", *args]
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout


def test_two_hubs_never_share_a_worktree_and_a_dead_hubs_work_is_committed(hubs, tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    (repo / "a.txt").write_text("a\n")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "init")
    options = ("--set", "plugins.pool.worktree=true", "--set", f"plugins.pool.cwd='{repo}'")
    a = hubs("a", *options, "--set", "plugins.pool.busy_grace_s=1")
    mine = Path(a.call("pool_status")["slots"][0]["worktree"])
    (mine / "draft.txt").write_text("work in progress\n")
    b = hubs("b", *options, "--set", "plugins.pool.busy_grace_s=2")
    theirs = Path(b.call("pool_status")["slots"][0]["worktree"])
    assert theirs != mine and (mine / "draft.txt").exists()  # b's start touched nothing of a's
    a.kill9()
    wait_for(lambda: not mine.exists(), what="hub b to retire hub a's worktree")
    branch = f"hub-pool/{mine.parent.name}/slot-0"
    assert git(repo, "show", f"{branch}:draft.txt") == "work in progress\n"  # committed, branch kept
    assert theirs.exists()


def batch_env(api: FakeAnthropic) -> dict[str, str]:
    return {"ANTHROPIC_BASE_URL": api.url, "ANTHROPIC_API_KEY": api.api_key}


def test_one_poller_per_job_and_one_charge_however_many_hubs(hubs):
    with FakeAnthropic(polls_to_end=4) as api:
        a = hubs("a", "--set", "plugins.pool.busy_grace_s=1", **batch_env(api))
        b = hubs("b", "--set", "plugins.pool.busy_grace_s=2", **batch_env(api))
        c = hubs("c", "--set", "plugins.pool.busy_grace_s=3", **batch_env(api))
        job = a.call("send_to_batch", requests=[{"prompt": "one"}, {"prompt": "two"}])["job_id"]
        for hub in (b, c):  # everyone asks; only the lease holder asks the API
            hub.call("batch_poll_once")
            assert hub.call("batch_status", job_id=job)["state"] in ("in_progress", "succeeded")
        ended = wait_for(
            lambda: (r := c.call("batch_status", job_id=job))["state"] == "succeeded" and r,
            what="the job to end",
        )
        remote = ended["batches"][0]["id"]
        fetched = {hub.name: hub.call("batch_fetch", job_id=job) for hub in (a, b, c)}
        assert all("answer to: one" in f["text"] for f in fetched.values())
        assert api.downloads(remote) == 1  # one download for three hubs
        budget = b.resource("hub://budget")
        assert budget["spent_usd"] == pytest.approx(ended["cost_usd"]) and budget["reserved_usd"] == 0
        results = Path(ended["result_path"]).parent
        assert sorted(p.name for p in results.iterdir()) == [f"{job}.md", f"{job}.raw.jsonl"]  # no leftovers


def test_a_starting_hub_leaves_a_job_being_submitted_alone(hubs):
    with FakeAnthropic() as api:
        a = hubs("a", "--set", "plugins.pool.busy_grace_s=1", **batch_env(api))
        release = api.hold_creates()
        request_id = a.request(
            "tools/call", {"name": "send_to_batch", "arguments": {"packet_text": "hi"}}, wait=False
        )
        wait_for(lambda: api.creates_waiting, what="the create call")
        b = hubs("b", "--set", "plugins.pool.busy_grace_s=2", **batch_env(api))
        job = b.call("batch_list")["jobs"][0]
        assert job["state"] == "submitting", job  # not failed by b's start
        release.set()
        reply = a.read_reply(request_id)
        assert reply["result"]["structuredContent"]["state"] == "in_progress"
        assert b.call("batch_status", job_id=job["job_id"])["state"] in ("in_progress", "succeeded")


@pytest.mark.parametrize("made_it", [True, False], ids=["batch-made", "batch-not-made"])
def test_a_hub_killed_mid_create_is_adopted_or_said_unsent(hubs, made_it):
    with FakeAnthropic(polls_to_end=1) as api:
        a = hubs("a", "--set", "plugins.pool.busy_grace_s=1", **batch_env(api))
        release = api.hold_creates(take_effect=made_it)
        a.request("tools/call", {"name": "send_to_batch", "arguments": {"packet_text": "hi"}}, wait=False)
        wait_for(lambda: api.creates_waiting, what="the create call")
        a.kill9()
        b = hubs("b", "--set", "plugins.pool.busy_grace_s=2", **batch_env(api))
        job = b.call("batch_list")["jobs"][0]
        release.set()
        if made_it:
            assert len(api.batches) == 1
            status = wait_for(
                lambda: (r := b.call("batch_status", job_id=job["job_id"]))["state"] == "succeeded" and r,
                what="the adopted batch to end",
            )
            assert status["batches"][0]["id"] == next(iter(api.batches))  # found at the API and kept
            assert status["cost_usd"] > 0  # and paid for
        else:
            assert job["state"] == "failed", job
            assert "the API shows no batch made for it, so nothing was sent" in job["error"]
            budget = b.resource("hub://budget")
            assert budget["reserved_usd"] == 0


def test_a_dead_pollers_jobs_are_taken_over(hubs):
    with FakeAnthropic(polls_to_end=10_000) as api:
        a = hubs("a", "--set", "plugins.pool.busy_grace_s=1", **batch_env(api))
        b = hubs("b", "--set", "plugins.pool.busy_grace_s=2", **batch_env(api))
        job = a.call("send_to_batch", packet_text="hello")["job_id"]
        remote = a.call("batch_status", job_id=job)["batches"][0]["id"]
        before = api.calls.count(("GET", f"/v1/messages/batches/{remote}"))
        b.call("batch_poll_once")
        assert api.calls.count(("GET", f"/v1/messages/batches/{remote}")) <= before + 1  # a's poll only
        a.kill9()
        api.end(remote)
        wait_for(
            lambda: b.call("batch_status", job_id=job)["state"] == "succeeded",
            what="hub b to take over polling",
        )
        assert api.downloads(remote) == 1


def test_hubs_starting_together_share_the_start_up_cache(tmp_path):
    """Three hubs start at once and each keeps its start-up answers in one fastfront.json."""
    from hubtests import StdioPeer

    meta = {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientInfo": {"name": "test", "version": "1"},
        "io.modelcontextprotocol/clientCapabilities": {},
    }
    env = hub_env(tmp_path, HUB_PLUGINS="")
    peers = []
    for i in range(3):
        (tmp_path / f"h{i}").mkdir()
        peers.append(StdioPeer(["serve", "--set", f"http.port={9000 + i}"], env, tmp_path / f"h{i}"))
    try:
        for peer in peers:  # all three are starting before any is asked anything
            peer.send({"jsonrpc": "2.0", "id": "d", "method": "server/discover", "params": {"_meta": meta}})
            peer.send({"jsonrpc": "2.0", "id": "t", "method": "tools/list", "params": {"_meta": meta}})
        for peer in peers:
            assert peer.read_reply("t")["result"]["tools"]
            assert peer.proc.stdin is not None
            peer.proc.stdin.close()
        for peer in peers:
            assert peer.proc.wait(timeout=30) == 0, peer.stderr()
            assert "Traceback" not in peer.stderr()
        kept = json.loads((tmp_path / "state" / "fastfront.json").read_text())
        assert "tools/list|2026-07-28" in kept["answers"]
        assert not list((tmp_path / "state").glob("*.tmp"))
    finally:
        for peer in peers:
            peer.close()
