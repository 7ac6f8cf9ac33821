"""`hub dashboard` in a real browser (headless Chromium over the DevTools protocol) against a
shared hub process doing real work: fake `claude` tasks in the pool, fake Batches API jobs, a
downstream server behind the proxy. One hub, one dashboard and one browser for the module; every
check waits on what the page shows (never reloading it). Screenshots are test artifacts, kept in
``test-artifacts/dashboard/`` of the checkout (ignored by git; ``HUB_TEST_ARTIFACTS=DIR`` puts
them in DIR/dashboard), overwritten by each run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import psutil
import pytest
from browser import Browser, chromium_path
from fake_anthropic import FakeAnthropic
from hubtests import DOWNSTREAM, ROOT, TESTS, HubProcess, hub_env, stop_shared_hubs, wait_for

FAKE_CLAUDE = TESTS / "peers" / "fake_claude.py"
ARTIFACTS = Path(os.environ.get("HUB_TEST_ARTIFACTS") or ROOT / "test-artifacts") / "dashboard"
SESSION = "abcdef12-3456-7890-abcd-ef1234567890"  # the client's Claude Code session, as the bridge sees it

pytestmark = [
    pytest.mark.timeout(180),  # the module's hub, dashboard and browser start in the first test
    pytest.mark.skipif(chromium_path() is None, reason="no chromium (apt-get install chromium)"),
]


def _config(tmp: Path, api: FakeAnthropic) -> Path:
    path = tmp / "hub.toml"
    path.write_text(
        '[plugins]\nenabled = ["pool", "batch", "proxy"]\n'
        f"[plugins.pool]\nclaude_command = '{sys.executable} {FAKE_CLAUDE}'\nslots = 1\n"
        f"[plugins.batch]\nresults_dir = '{tmp / 'results'}'\nbase_url = '{api.url}'\n"
        f"api_key = '{api.api_key}'\npoll_initial_s = 0.2\npoll_factor = 1.0\npoll_jitter = 0\n"
        f"[servers.d]\ncommand = '{sys.executable}'\nargs = ['{DOWNSTREAM}']\n"
        "[budget]\nlimit_usd = 5\nperiod = 'day'\n"
    )
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dashboard")
    runs = tmp / "runs"
    runs.mkdir()
    with FakeAnthropic(polls_to_end=3) as api:
        config = _config(tmp, api)
        env = hub_env(tmp, FAKE_CLAUDE_LOG=str(runs), HUB_SHARE="1", CLAUDE_CODE_SESSION_ID=SESSION)
        hub = HubProcess(tmp, "client", env, "--config", str(config))  # a bridge to the shared process
        hub_bin = str(Path(sys.executable).parent / "hub")
        args = [hub_bin, "dashboard", "--no-browser", "--interval", "0.25", "--config", str(config)]
        dashboard = subprocess.Popen(
            args,
            stdout=subprocess.PIPE,
            stderr=(tmp / "dashboard.log").open("w"),
            env=env,
            cwd=tmp / "client",
            text=True,
        )
        try:
            assert dashboard.stdout is not None
            line = dashboard.stdout.readline()
            assert line.startswith("hub dashboard: http://127.0.0.1:"), (tmp / "dashboard.log").read_text()
            url = line.split(": ", 1)[1].strip()
            with Browser(tmp / "chromium") as browser:
                page = browser.new_page()
                page.goto(url)
                page.wait_for(
                    "document.getElementById('live').textContent === 'live'", what="the event stream"
                )
                page.evaluate("window.loadedOnce = true")  # a reload would lose it
                yield SimpleNamespace(hub=hub, page=page, url=url, tmp=tmp, runs=runs, api=api)
        finally:
            dashboard.terminate()
            dashboard.wait(timeout=10)
            hub.close()
            stop_shared_hubs(env, tmp / "client")


def shot(world: Any, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = world.page.screenshot(ARTIFACTS / f"{name}.png")
    print(f"screenshot: {path}")
    return path


def cells(world: Any, section: str) -> list[list[str]]:
    """The text of each cell of each table row in `section`."""
    return world.page.evaluate(
        f"[...document.querySelectorAll('{section} tbody tr')]"
        ".map(r => [...r.querySelectorAll('td')].map(c => c.innerText.trim()))"
    )


def wait_row(world: Any, section: str, what: str, **wanted: str) -> list[str]:
    """A row of `section` whose cells (by column name: {column_index: text}) read as wanted."""
    checks = {int(k[1:]): v for k, v in wanted.items()}  # c0="d", c3="1"
    return wait_for(
        lambda: next(
            (
                row
                for row in cells(world, section)
                if all(i < len(row) and row[i] == v for i, v in checks.items())
            ),
            None,
        ),
        timeout=60,
        what=what,
    )


def row_with(section: str, *texts: str) -> str:
    """JS: whether a table row in `section` shows every text."""
    wanted = json.dumps(list(texts))
    return (
        f"[...document.querySelectorAll('{section} tr')].some(r => "
        f"{wanted}.every(t => r.innerText.includes(t)))"
    )


def test_a_task_is_seen_running_then_completed_without_a_reload(world):
    gate = world.tmp / "gate"
    os.mkfifo(gate)
    prompt = f"write a haiku about tides [gate={gate}]"
    task = world.hub.call("pool_submit", prompt=prompt)["task_id"]
    world.page.wait_for(
        row_with("#panel-pool-pool", task, "running", "write a haiku"), what=f"{task} running"
    )
    shot(world, "task-running")
    wait_for(lambda: _opened_for_writing(gate), what="the task waiting at its gate")
    world.page.wait_for(row_with("#panel-pool-pool", task, "completed", "$0.0010"), what=f"{task} completed")
    assert world.page.evaluate("window.loadedOnce") is True
    shot(world, "task-completed")


def _opened_for_writing(fifo: Path) -> bool:
    """Open the named pipe for writing (which lets its reader go on): False while no one reads it."""
    try:
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    except OSError:  # ENXIO: the task has not reached it yet
        return False
    return True


def test_the_page_works_offline_from_its_own_files(world):
    """Every script, style and request of the page is the dashboard's own (no CDN)."""
    origin = world.url.split("/?", 1)[0]
    loaded = world.page.evaluate(
        "[...performance.getEntriesByType('resource').map(e => e.name),"
        " ...[...document.querySelectorAll('script[src], link[href]')].map(e => e.src || e.href)]"
    )
    assert loaded and all(url.startswith(origin + "/") for url in loaded), loaded
    assert world.page.evaluate("typeof htmx === 'object' && typeof uPlot === 'function'")


def test_the_chart_has_the_days_spend_by_plugin_and_by_session(world):
    task = world.hub.call("pool_submit", prompt="count the stars [cost=0.25]")["task_id"]
    world.page.wait_for(row_with("#panel-pool-pool", task, "completed"), what=f"{task} completed")
    world.page.wait_for(
        "window.hubSpendChart && window.hubSpendChart.range === 'day' && window.hubSpendChart.total >= 0.25",
        what="the day's spend in the chart",
    )
    assert world.page.evaluate("window.hubSpendChart.names") == ["pool"]
    assert world.page.evaluate("document.querySelectorAll('#chart canvas').length") >= 1
    world.page.click("button[data-group=session]")
    names = world.page.wait_for("window.hubSpendChart.group === 'session' && window.hubSpendChart.names")
    assert names == [f"claude {SESSION[:8]}"]
    shot(world, "chart")
    for wider in ("week", "month"):
        world.page.click(f"button[data-range={wider}]")
        world.page.wait_for(
            f"window.hubSpendChart.range === '{wider}' && window.hubSpendChart.total >= 0.25",
            what=f"the spend in the {wider}'s chart",
        )
    world.page.click("button[data-range=day]")


def _run_of(runs: Path, marker: str) -> dict[str, Any]:
    for path in runs.glob("*.json"):
        record = json.loads(path.read_text())
        if marker in record["stdin"]:
            return record
    return {}


def test_a_cancel_from_the_page_kills_the_task(world):
    task = world.hub.call("pool_submit", prompt="never ends [hang] #cancel-me")["task_id"]
    world.page.wait_for(row_with("#panel-pool-pool", task, "running"), what=f"{task} running")
    run = wait_for(lambda: _run_of(world.runs, "#cancel-me"), what="the task's process")
    world.page.click(f'#panel-pool-pool button.action[hx-vals*="{task}"]')  # its confirm() is accepted
    world.page.wait_for(row_with("#panel-pool-pool", task, "cancelled"), what=f"{task} cancelled")
    assert world.page.wait_for(
        "document.querySelector('#flash .ok') && document.querySelector('#flash').innerText"
    )
    assert world.hub.call("pool_result", task_id=task)["status"] == "cancelled"
    for pid in (run["pid"], run["grandchild"]):
        wait_for(
            lambda pid=pid: not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie",
            what=f"pid {pid} gone",
        )
    shot(world, "task-cancelled")


def test_a_batch_job_is_followed_to_its_result_files(world):
    job = world.hub.call("send_to_batch", packet_text="summarise the tides", label="tides")["job_id"]
    world.page.wait_for(row_with("#panel-batch-batch", job, "tides"), what=f"{job} listed")
    world.page.wait_for(row_with("#panel-batch-batch", job, "succeeded", "md", "jsonl"), what=f"{job} ended")
    href = world.page.evaluate(
        f"[...document.querySelectorAll('#panel-batch-batch tr')].find(r => r.innerText.includes('{job}'))"
        ".querySelector('a').getAttribute('href')"
    )
    text = world.page.evaluate(f"fetch({json.dumps(href)}).then(r => r.text())")
    assert "summarise the tides" in text
    shot(world, "batch")


def test_downstream_servers_show_calls_errors_and_restarts(world):
    world.hub.call("d__echo", text="hello")
    world.hub.call("d__echo", text="again")
    error = world.hub.call_error("d__fail", message="no way")
    wait_row(world, "#servers", "d's echo counted twice", c0="d", c1="echo", c2="2", c3="0")
    failed = wait_row(world, "#servers", "d's fail counted as an error", c0="d", c1="fail", c2="1", c3="1")
    assert failed[-1] == error and failed[4].endswith("ms")  # its last error, its p50
    world.hub.call_error("d__crash")  # the server dies mid-call
    world.hub.call("d__echo", text="after the crash")  # and is started again
    wait_row(world, "#servers", "d ready again after one restart", c0="d", c1="ready", c3="1")
    world.page.wait_for(row_with("#sessions", f"claude {SESSION[:8]}"), what="the session listed")
    world.page.wait_for(row_with("#sessions", "(this one)", "shared process"), what="the hub listed")
    shot(world, "servers")


def test_the_page_needs_its_token_and_a_loopback_host(world):
    bare = world.url.split("?", 1)[0]
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(bare, timeout=10)
    assert refused.value.code == 401
    request = urllib.request.Request(world.url, headers={"Host": "dashboard.example.com"})
    with pytest.raises(urllib.error.HTTPError) as rebinding:
        urllib.request.urlopen(request, timeout=10)
    assert rebinding.value.code == 403
    with urllib.request.urlopen(world.url, timeout=10) as answer:
        assert "default-src 'none'" in answer.headers["content-security-policy"]
