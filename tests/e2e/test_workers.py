"""Pool workers on other machines, against one PostgreSQL store: `hub worker` processes (one in a
network namespace of its own, with a host name of its own, reaching the server over TCP) take
tasks queued by hubs that only queue. A worker killed with -9 is found dead by its heartbeat, a
cancel from a third hub reaches the worker running the task, a tight budget holds with three hubs
and two workers spending at once, and a PostgreSQL server stopped and started again under load
loses nothing and charges nothing twice."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from fake_anthropic import FakeAnthropic
from hubtests import TESTS, HubProcess, gone, hub_env, wait_for
from pgserver import VETH_HOST, netns_host
from workers import WorkerProcess, kill_leftovers

# A bound for a hung test (each takes a few seconds; the slowest waits for a heartbeat to go stale).
pytestmark = pytest.mark.timeout(120)

FAKE_CLAUDE = TESTS / "peers" / "fake_claude.py"


def runs(log: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(log.glob("*.json"), key=lambda p: p.stat().st_mtime)]


class Cluster:
    """Hubs and workers of one test on one PostgreSQL schema (`hub.toml` shared by all)."""

    def __init__(self, tmp_path: Path, pg: Any, budget: float | None = None) -> None:
        self.tmp_path, self.pg = tmp_path, pg
        self.schema = pg.new_schema()
        self.log = tmp_path / "runs"
        self.log.mkdir()
        self.config = tmp_path / "hub.toml"
        self.config.write_text(
            '[plugins]\nenabled = ["pool", "batch"]\n'
            f"[plugins.pool]\nclaude_command = '{sys.executable} {FAKE_CLAUDE}'\nslots = 0\nqueue = 'team'\n"
            "max_budget_per_task_usd = 0.25\nbusy_grace_s = 1\n"
            f"[plugins.batch]\nresults_dir = '{tmp_path / 'results'}'\n"
            "poll_initial_s = 0.1\npoll_factor = 1.0\npoll_jitter = 0\n"
            "[liveness]\nheartbeat_s = 0.5\ndead_after_s = 3\n"
            + (f"[budget]\nlimit_usd = {budget}\n" if budget is not None else "")
        )
        self.started: list[Any] = []

    def env(self, host: str = "127.0.0.1", **extra: str) -> dict[str, str]:
        url = self.pg.url(host=host, schema=self.schema)
        return hub_env(self.tmp_path, FAKE_CLAUDE_LOG=str(self.log), HUB_STATE_URL=url, **extra)

    def hub(self, name: str, **env: str) -> HubProcess:
        hub = HubProcess(self.tmp_path, name, self.env(**env), "--config", str(self.config))
        self.started.append(hub)
        return hub

    def worker(self, name: str, slots: int = 2, netns: str | None = None, *args: str) -> WorkerProcess:
        env = self.env(host=VETH_HOST) if netns else self.env()
        worker = WorkerProcess(
            self.tmp_path / name, env, "--slots", str(slots), "--config", str(self.config), *args,
            netns=netns, hostname=name if netns else None,
        )  # fmt: skip
        self.started.append(worker)
        return worker

    def ready(self, hub: HubProcess, worker: WorkerProcess, host: str) -> dict[str, Any]:
        def seen() -> Any:
            assert worker.proc.poll() is None, worker.stderr()
            found = [
                w for w in hub.call("pool_status")["workers"] if w["host"] == host and w["role"] == "worker"
            ]
            return found and found[0]

        return wait_for(seen, what=f"the worker on {host} to take work")

    def close(self) -> None:
        kill_leftovers([r.get("grandchild") or r["pid"] for r in runs(self.log)])
        for process in self.started:
            process.close()


@pytest.fixture
def cluster(tmp_path, pg):
    made = Cluster(tmp_path, pg)
    yield made
    made.close()


@pytest.fixture
def other_host():
    with netns_host() as name:
        yield name


def test_a_worker_on_another_host_runs_what_a_hub_that_only_queues_asks(cluster, other_host):
    a = cluster.hub("a")
    worker = cluster.worker("box2", netns=other_host)
    seen = cluster.ready(a, worker, "box2")
    assert (seen["slots"], seen["busy"]) == (2, 0)
    a.call("context_set", key="house_style", value="short sentences", scope="global")
    done = a.call("pool_run", prompt="hello from a")
    assert done["status"] == "completed" and done["output"] == "done: hello from a", done
    assert done["worker"]["host"] == "box2" and done["worker"]["role"] == "worker"
    assert done["worker"]["pid"] == worker.pid and done["worker"]["slot"].startswith("slot-")
    (run,) = runs(cluster.log)
    assert run["cwd"] == str(cluster.tmp_path / "box2")  # the worker's own checkout
    assert "- house_style: short sentences" in run["system_prompt_file"]["text"]  # one context
    status = subprocess.run(
        [sys.executable, "-m", "hub", "status"],
        env=cluster.env(),
        cwd=cluster.tmp_path,
        capture_output=True,
        text=True,
    )
    assert status.returncode == 0, status.stderr
    line = next(line for line in status.stdout.splitlines() if "box2" in line)
    assert f"box2 pid {worker.pid} (worker" in line and "pool 0/2 slots busy, heartbeat" in line
    assert worker.stop() == 0  # SIGTERM: a clean stop
    assert "Traceback" not in worker.stderr()


def test_a_worker_killed_mid_task_is_found_dead_by_its_heartbeat_and_charged(cluster, other_host):
    a = cluster.hub("a")
    worker = cluster.worker("box3", netns=other_host)
    cluster.ready(a, worker, "box3")
    task = a.call("pool_submit", prompt="forever [hang]")["task_id"]
    running = wait_for(lambda: (r := a.call("pool_result", task_id=task))["status"] == "running" and r)
    assert running["worker"]["host"] == "box3" and running["hub"]["host"] == "box3"
    (box3,) = [w for w in a.call("pool_status")["workers"] if w["host"] == "box3"]
    assert box3["running"] == [task] and box3["instance"] == running["worker"]["instance"]
    worker.kill9()  # on another host: no pid to check, only a heartbeat that stops
    lost = wait_for(
        lambda: (r := a.call("pool_result", task_id=task))["status"] == "interrupted" and r,
        what="the dead worker to be found by its heartbeat",
    )
    assert lost["error"].startswith(f"its worker (pid {worker.pid} on box3) died while this task was running")
    assert lost["spend_usd"] == 0.25 and lost["spend_known"] is False  # the rule for unknown spend
    budget = a.resource("hub://budget")
    assert budget["spent_usd"] == 0.25 and budget["reserved_usd"] == 0
    assert not [w for w in a.call("pool_status")["workers"] if w["host"] == "box3"]


def test_pool_cancel_from_a_third_hub_reaches_the_worker_running_the_task(cluster, other_host):
    a, c = cluster.hub("a"), cluster.hub("c")
    worker = cluster.worker("box4", netns=other_host)
    cluster.ready(a, worker, "box4")
    task = a.call("pool_submit", prompt="forever [hang]")["task_id"]
    record = wait_for(lambda: runs(cluster.log), what="the CLI to start on the worker")[0]
    cancelled = c.call("pool_cancel", task_id=task)
    assert cancelled["cancelled"] is True and cancelled["status"] == "cancelled", cancelled
    assert cancelled["worker"]["host"] == "box4" and cancelled["hub"]["pid"] == worker.pid
    assert gone(record["pid"]) and gone(record["grandchild"])  # its whole process group, over there
    assert a.call("pool_result", task_id=task)["status"] == "cancelled"
    assert a.resource("hub://budget")["reserved_usd"] == 0


def test_three_hubs_and_two_workers_never_overspend_a_tight_budget(tmp_path, pg, other_host):
    cluster = Cluster(tmp_path, pg, budget=1.5)
    try:
        with FakeAnthropic(polls_to_end=2) as api:
            keys = {"ANTHROPIC_BASE_URL": api.url, "ANTHROPIC_API_KEY": api.api_key}
            hubs = [cluster.hub(name, **keys) for name in ("a", "b", "c")]
            workers = [cluster.worker("box5", netns=other_host), cluster.worker("near")]
            cluster.ready(hubs[0], workers[0], "box5")
            gate = tmp_path / "gate"  # opened once both workers run tasks, whichever wakes first
            prompts = [f"task {i} [cost=0.2] [gate={gate}]" for i in range(6)]

            def spend(hub: HubProcess) -> dict[str, Any]:
                out = hub._call("pool_fan_out", {"prompts": prompts})["structuredContent"]
                if hub.name != "a":  # batch jobs reserve from the same budget meanwhile
                    out["job"] = hub._call("send_to_batch", {"packet_text": f"from {hub.name}"})
                return out

            with ThreadPoolExecutor(3) as pool:
                running = [pool.submit(spend, hub) for hub in hubs]
                wait_for(lambda: len(runs(cluster.log)) == 4, what="both workers' slots to be busy")
                gate.touch()
                fanned = [future.result() for future in running]
            results = [r for out in fanned for r in out["results"]]
            jobs = [
                out["job"]["structuredContent"]["job_id"]
                for out in fanned
                if "job" in out and not out["job"].get("isError")
            ]
            for job in jobs:
                wait_for(lambda job=job: hubs[0].call("batch_status", job_id=job)["state"] == "succeeded")
            batch_cost = sum(hubs[0].call("batch_status", job_id=job)["cost_usd"] for job in jobs)
            refused = [r for r in results if r["status"] == "refused"]
            assert refused and all("budget exhausted" in r["error"] for r in refused)
            budget = hubs[1].resource("hub://budget")
            assert budget["spent_usd"] <= 1.5 and budget["reserved_usd"] == 0  # never overspent
            charged = sum(r["charged_usd"] for r in results)
            assert budget["spent_usd"] == pytest.approx(charged + batch_cost)  # the ledger is the spends
            hosts = {
                hubs[0].call("pool_result", task_id=r["task_id"])["worker"]["host"]
                for r in results
                if r["task_id"]
            }
            assert "box5" in hosts and len(hosts) == 2  # both workers took tasks
    finally:
        cluster.close()


def test_postgresql_stopped_and_started_under_load_loses_nothing_and_charges_once(cluster, pg):
    a = cluster.hub("a")
    worker = cluster.worker("near", slots=2)
    cluster.ready(a, worker, socket.gethostname())
    gate = cluster.tmp_path / "gate"  # the tasks end once the server is down, whatever the load
    tasks = [a.call("pool_submit", prompt=f"job {i} [gate={gate}]")["task_id"] for i in range(4)]
    wait_for(lambda: len(runs(cluster.log)) == 2, what="two tasks to run")
    pg.stop("fast")
    gate.touch()
    try:
        down = subprocess.run(
            [sys.executable, "-m", "hub", "status"],
            env=cluster.env(),
            cwd=cluster.tmp_path,
            capture_output=True,
            text=True,
        )
        assert down.returncode == 2 and "cannot be reached" in down.stderr and down.stderr.count("\n") == 1
        problem = wait_for(
            lambda: a.resource("hub://status")["store"]["problem"], what="hub a to say the store is away"
        )
        assert "cannot be reached" in problem and cluster.schema in problem
        wait_for(
            lambda: worker.stderr().count("its result is kept until it can be recorded") >= 2,
            what="the worker to keep both results",
        )
        assert len(runs(cluster.log)) == 2  # no new work taken while the store is away
    finally:
        pg.start()
    for task in tasks:
        done = wait_for(
            lambda task=task: (
                (r := a.call("pool_result", task_id=task))["status"] not in ("queued", "running") and r
            ),
            timeout=60,
            what="every task to end",
        )
        assert done["status"] == "completed", done
    assert len(runs(cluster.log)) == 4  # each ran once
    ledger = cluster.pg.query(cluster.schema, "SELECT COUNT(*), SUM(amount_micros) FROM budget_ledger")
    assert ledger == "4|4000"  # each charged once, what it reported
    assert wait_for(
        lambda: a.resource("hub://status")["store"]["problem"] is None, what="the store to be back"
    )


def test_a_worker_stopped_lets_its_running_task_finish_and_says_a_bad_slot_count(cluster):
    a = cluster.hub("a")
    worker = cluster.worker("near", 1, None, "--set", "plugins.pool.busy_grace_s=60")
    cluster.ready(a, worker, socket.gethostname())
    gate = cluster.tmp_path / "gate"
    task = a.call("pool_submit", prompt=f"finish me [gate={gate}]")["task_id"]
    wait_for(lambda: runs(cluster.log), what="the task to start")
    worker.proc.send_signal(signal.SIGTERM)
    wait_for(lambda: "waiting for the running tasks to finish" in worker.stderr(), what="the worker to wait")
    gate.touch()
    assert worker.proc.wait(timeout=60) == 0, worker.stderr()  # a second signal would stop it at once
    done = a.call("pool_result", task_id=task)
    assert done["status"] == "completed" and done["spend_known"] is True, done
    bad = subprocess.run(
        [sys.executable, "-m", "hub", "worker", "--slots", "99", "--config", str(cluster.config)],
        env=cluster.env(),
        cwd=cluster.tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert bad.stderr.splitlines()[-1] == (
        "hub: pool: --slots 99 is outside [plugins.pool] min_slots..max_slots (1..16): "
        "ask for fewer, or raise max_slots"
    )


def test_a_worker_started_before_its_store_waits_for_it_and_one_refused_for_good_exits(cluster, pg):
    """A worker started while PostgreSQL is down (the database machine still booting) says so and
    takes work once the server is up; a database that does not exist is a fix to make: one line,
    exit 2."""
    pg.stop("fast")
    try:
        worker = cluster.worker("early", slots=1)
        wait_for(
            lambda: "the worker waits for it" in worker.stderr(), what="the worker to wait for the store"
        )
        assert "connection refused" in worker.stderr() and worker.proc.poll() is None
    finally:
        pg.start()
    a = cluster.hub("a")
    cluster.ready(a, worker, socket.gethostname())
    done = a.call("pool_run", prompt="hello once the store is up")
    assert done["status"] == "completed" and done["worker"]["pid"] == worker.pid, done
    wrong = cluster.env()
    wrong["HUB_STATE_URL"] = wrong["HUB_STATE_URL"].replace("/hub?", "/no_such_db?")
    refused = subprocess.run(
        [sys.executable, "-m", "hub", "worker", "--config", str(cluster.config)],
        env=wrong,
        cwd=cluster.tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 2, refused.stderr
    assert "has no database 'no_such_db'" in refused.stderr and "Traceback" not in refused.stderr
