"""`hub budget` and `hub budget reset` through the real command, on a ledger in the state dir."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import anyio
from hubtests import hub_env

from hub.services.budget import Budget
from hub.services.sqlite_store import SQLiteStore as Store


def hub(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hub", *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=60
    )


def test_budget_show_and_reset(tmp_path):
    async def spend() -> None:
        store = Store(tmp_path / "state" / "hub.sqlite")
        try:
            budget = Budget(store, None)
            await budget.setup()
            await budget.record("pool", 0.3, "task a")
            async with await budget.reserve("batch", 0.2, "job b") as r:
                await r.commit(0.05)
            await budget.reserve("pool", 0.1, "task c")  # still running
        finally:
            store.close()

    (tmp_path / "state").mkdir()
    anyio.run(spend)
    (tmp_path / "hub.toml").write_text("plugins = []\n[budget]\nlimit_usd = 1\nperiod = 'week'\n")
    env = hub_env(tmp_path)
    shown = json.loads(hub("budget", "--json", env=env, cwd=tmp_path).stdout)
    assert shown["limit_usd"] == 1 and shown["period"] == "week" and shown["next_period"]
    assert shown["spent_usd"] == 0.35 and shown["reserved_usd"] == 0.1
    assert shown["spent_by_plugin"] == {"batch": 0.05, "pool": 0.3}
    assert shown["reserved_by_plugin"] == {"pool": 0.1}
    text = hub("budget", env=env, cwd=tmp_path).stdout
    assert "limit: $1.00 per week" in text and "pool: spent $0.3000, reserved $0.1000" in text

    out = hub("budget", "reset", env=env, cwd=tmp_path)
    assert out.returncode == 0 and "a new period started at" in out.stdout
    shown = json.loads(hub("budget", "--json", env=env, cwd=tmp_path).stdout)
    assert shown["spent_usd"] == 0 and shown["spent_all_time_usd"] == 0.35
    assert shown["reserved_usd"] == 0.1  # running work still holds its reservation


def test_the_limit_is_said_in_words():
    from hub.cli.budget import limit_text

    assert limit_text(None, "total").startswith("none (set one with [budget] limit_usd")
    assert limit_text(10, "total") == "$10.00 in all (until `hub budget reset`)"
    assert limit_text(2.5, "day") == "$2.50 per day"
