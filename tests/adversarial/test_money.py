"""Money under attack: the cap is a hard cap for new work, and the ledger tells the truth.

A CLI checks --max-budget-usd only between turns, so its last turn can pass it: one that reports
1.5x its cap must be charged what it reported (the ledger passes the cap), the result must say
the task overshot, and nothing new may start once spent + reserved is at the cap."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from hubtests import TESTS, HubProcess, hub_env

from hub.errors import BudgetExceeded
from hub.services.budget import Budget
from hub.services.sqlite_store import SQLiteStore as Store

pytestmark = pytest.mark.timeout(120)
FAKE_CLAUDE = TESTS / "peers" / "fake_claude.py"


def test_a_task_that_overshoots_is_charged_truthfully_and_nothing_new_starts(tmp_path):
    env = hub_env(tmp_path)
    args = [
        "--plugins",
        "pool",
        "--budget-usd",
        "1",
        "--set",
        f'plugins.pool.claude_command="{sys.executable} {FAKE_CLAUDE}"',
        "--set",
        "plugins.pool.max_budget_per_task_usd=1.0",
        "--set",
        "plugins.pool.slots=1",
    ]
    peer = HubProcess(tmp_path, "a", env, *args)
    try:
        result = peer._call("pool_run", {"prompt": "a long last turn [overshoot=1.5]"})
        view = result["structuredContent"]
        assert view["charged_usd"] == 1.5 and view["spend_known"] is True, view
        assert view["overshoot_usd"] == 0.5, view
        assert "$0.50 more than the $1.00 reserved" in view["spend_note"], view
        # Nothing new starts past the cap, however small.
        for tool in ("pool_run", "pool_submit"):
            refused = peer.call_error(tool, prompt="tiny", max_budget_usd=0.01)
            assert "budget exhausted: spent $1.50" in refused and "$0.50 over the cap" in refused, refused
            assert "ask for" not in refused, refused  # asking for less cannot help
    finally:
        peer.close()
    shown = subprocess.run(
        [sys.executable, "-m", "hub", "--budget-usd", "1", "budget", "--json"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    summary = json.loads(shown.stdout)
    assert summary["spent_usd"] == 1.5 and summary["remaining_usd"] == 0, summary


@pytest.mark.anyio
async def test_at_the_cap_even_a_zero_reservation_is_refused(tmp_path):
    store = Store(tmp_path / "hub.sqlite")
    try:
        budget = Budget(store, 1.0)
        await budget.setup()
        reservation = await budget.reserve("pool", 0.4, "t1")
        await reservation.commit(1.0)  # spent past what it reserved: recorded all the same
        assert reservation.overshoot_usd == pytest.approx(0.6)
        assert (await budget.summary())["spent_usd"] == 1.0
        with pytest.raises(BudgetExceeded, match=r"spent \$1\.00 of \$1\.00"):
            await budget.reserve("pool", 0.0, "t2")
    finally:
        store.close()
