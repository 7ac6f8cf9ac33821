"""The store (migrations, WAL) and the shared budget (reserve / charge / commit / release)."""

from __future__ import annotations

import sqlite3

import anyio
import pytest

from hub.errors import BudgetExceeded
from hub.services.budget import Budget
from hub.services.sqlite_store import SQLiteStore as Store

pytestmark = pytest.mark.anyio


async def test_migrations_apply_once_in_order(tmp_path):
    store = Store(tmp_path / "hub.sqlite")
    migrations = ["CREATE TABLE t (a TEXT)", "ALTER TABLE t ADD COLUMN b TEXT"]
    assert await store.migrate("demo", migrations[:1]) == 1
    assert await store.migrate("demo", migrations) == 2
    assert await store.migrate("demo", migrations) == 2
    await store.execute("INSERT INTO t (a, b) VALUES (?, ?)", ("x", "y"))
    assert (await store.schema_versions())["demo"] == 2
    assert (await store.fetchone("PRAGMA journal_mode"))[0] == "wal"
    store.close()
    # A newer schema than the code knows is refused, not silently used.
    store = Store(tmp_path / "hub.sqlite")
    with pytest.raises(RuntimeError, match="demo schema is at version 2, newer than this hub knows"):
        await store.migrate("demo", migrations[:1])
    store.close()


async def test_failed_migration_leaves_nothing_behind(tmp_path):
    store = Store(tmp_path / "hub.sqlite")
    with pytest.raises(RuntimeError, match="demo migration 1 failed"):
        await store.migrate("demo", ["CREATE TABLE ok (a); CREATE TABLE ok (a);"])
    assert await store.schema_versions() == {}
    with pytest.raises(sqlite3.OperationalError):
        await store.fetchall("SELECT * FROM ok")
    store.close()


async def test_transaction_rolls_back(tmp_path):
    store = Store(tmp_path / "hub.sqlite")
    await store.migrate("demo", ["CREATE TABLE t (a INTEGER)"])

    def boom(conn):
        conn.execute("INSERT INTO t VALUES (1)")
        raise ValueError("no")

    with pytest.raises(ValueError):
        await store.transaction(boom)
    assert await store.fetchall("SELECT * FROM t") == []
    store.close()


async def budget_at(tmp_path, limit):
    budget = Budget(Store(tmp_path / "hub.sqlite"), limit)
    await budget.setup()
    return budget


async def test_reserve_commit_release(tmp_path):
    budget = await budget_at(tmp_path, 10.0)
    async with await budget.reserve("pool", 4.0, "task 1") as r:
        assert (await budget.summary())["reserved_usd"] == 4.0
        await r.charge(1.0)
        assert (await budget.summary())["reserved_usd"] == 3.0
        await r.commit(0.5)
    summary = await budget.summary()
    assert summary == {
        "limit_usd": 10.0,
        "spent_usd": 1.5,
        "reserved_usd": 0.0,
        "remaining_usd": 8.5,
        "spent_by_plugin": {"pool": 1.5},
        "reserved_by_plugin": {},
        "period": "total",
        "period_started": None,
        "next_period": None,
        "spent_all_time_usd": 1.5,
    }
    async with await budget.reserve("batch", 2.0, "job"):
        pass  # nothing spent: all released
    await budget.record("batch", 0.25, "late result")
    summary = await budget.summary()
    assert summary["spent_by_plugin"] == {"batch": 0.25, "pool": 1.5}
    assert summary["reserved_usd"] == 0


async def test_refusal_states_spent_limit_and_ask(tmp_path):
    budget = await budget_at(tmp_path, 10.0)
    r = await budget.reserve("pool", 9.8)
    await r.commit(9.8)
    held = await budget.reserve("pool", 0.1, "task 2")
    with pytest.raises(BudgetExceeded) as caught:
        await budget.reserve("pool", 0.5, "task 3")
    assert str(caught.value) == (
        "budget exhausted: spent $9.80 (+$0.10 reserved by running work) of $10.00; task 3 needs up to $0.50. "
        "Raise [budget] limit_usd or --budget-usd; or start a new period with `hub budget reset` (the history "
        "is kept); or wait for running work to settle what it reserved; or ask for at most $0.10."
    )
    await held.release()


async def test_concurrent_reservations_never_exceed_the_cap(tmp_path):
    budget = await budget_at(tmp_path, 1.0)
    granted: list[object] = []
    refused = 0

    async def try_reserve() -> None:
        nonlocal refused
        try:
            granted.append(await budget.reserve("pool", 0.3))
        except BudgetExceeded:
            refused += 1

    async with anyio.create_task_group() as tg:
        for _ in range(40):
            tg.start_soon(try_reserve)
    assert len(granted) == 3 and refused == 37
    assert (await budget.summary())["reserved_usd"] == pytest.approx(0.9)


async def test_ledger_survives_restart_and_a_dead_hubs_reservations_are_charged_in_full(tmp_path):
    budget = await budget_at(tmp_path, 5.0)
    r = await budget.reserve("pool", 1.0)
    await r.commit(2.0)  # the actual spend can exceed the estimate: the truth is recorded
    await budget.reserve("pool", 1.5, "task 2")  # left open, as by a hub that was killed
    await budget.reserve("batch", 0.5, "job", durable=True)  # kept for its plugin to settle
    dead = budget.owner
    budget.store.close()

    again = await budget_at(tmp_path, 5.0)
    summary = await again.summary()
    assert (summary["spent_usd"], summary["reserved_usd"]) == (2.0, 2.0)  # nothing is guessed at start
    assert await again.abandon(dead, "pool") == 1.5  # its spend cannot be known: charged, not released
    assert await again.abandon(dead, "batch") == 0.0  # durable: the batch plugin settles it
    assert await again.abandon(dead, "pool") == 0.0  # once
    summary = await again.summary()
    assert (summary["spent_usd"], summary["reserved_usd"]) == (3.5, 0.5)
    purposes = [r["purpose"] for r in await again.store.fetchall("SELECT purpose FROM budget_ledger")]
    assert (
        "task 2 (charged in full: the hub that held it stopped and what it spent cannot be known)" in purposes
    )
    again.store.close()


async def test_a_reservation_is_settled_once_whichever_hubs_try(tmp_path):
    one, two = await budget_at(tmp_path, 5.0), await budget_at(tmp_path, 5.0)  # two hubs, one store
    made = await one.reserve("batch", 1.0, "job", durable=True)
    seen_by_one, seen_by_two = await one.reservation(made.id), await two.reservation(made.id)
    assert seen_by_one is not None and seen_by_two is not None
    assert await seen_by_one.commit(0.25) is True
    assert await seen_by_two.commit(0.25) is False  # already settled: nothing recorded twice
    assert (await two.summary())["spent_usd"] == 0.25
    one.store.close()
    two.store.close()


async def test_a_durable_reservation_outlives_a_restart(tmp_path):
    budget = await budget_at(tmp_path, 5.0)
    kept = await budget.reserve("batch", 1.5, "job-1", durable=True)
    await budget.reserve("pool", 1.0)  # an ordinary one, settled by whoever recovers its hub
    budget.store.close()

    again = await budget_at(tmp_path, 5.0)
    await again.abandon(budget.owner, "pool")
    assert (await again.summary())["reserved_usd"] == 1.5
    found = await again.reservation(kept.id)
    assert found is not None and (found.plugin, found.purpose, found.reserved_usd) == ("batch", "job-1", 1.5)
    await found.commit(0.25)
    summary = await again.summary()
    assert (summary["spent_usd"], summary["reserved_usd"]) == (1.25, 0.0)  # 1.0 abandoned + 0.25
    assert await again.reservation(kept.id) is None  # closed
    again.store.close()


async def test_no_limit_still_tracks(tmp_path):
    budget = await budget_at(tmp_path, None)
    r = await budget.reserve("pool", 1000.0)
    await r.commit(3.0)
    assert (await budget.summary())["remaining_usd"] is None
    assert (await budget.summary())["spent_usd"] == 3.0


async def test_hubs_starting_together_apply_each_migration_once(tmp_path):
    stores = [Store(tmp_path / "hub.sqlite") for _ in range(4)]  # four hubs, one state dir
    migrations = ["CREATE TABLE t (a TEXT)", "ALTER TABLE t ADD COLUMN b TEXT; CREATE INDEX t_b ON t (b);"]
    # Another process holds the write lock while all four start, so they all get as far as they
    # can before any of them writes (reading the version outside the lock was the bug).
    blocker = sqlite3.connect(tmp_path / "hub.sqlite", isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    async with anyio.create_task_group() as tg:
        for store in stores:
            tg.start_soon(store.migrate, "demo", migrations)
        await anyio.sleep(0.3)  # not a timing assertion: only lets every migrate reach the lock
        blocker.execute("COMMIT")
    blocker.close()
    rows = await stores[0].fetchall("SELECT version FROM schema_migrations WHERE component = 'demo'")
    assert sorted(r["version"] for r in rows) == [1, 2]
    for store in stores:
        store.close()


class FakeClock:
    """Local time in a fixed zone (UTC+2), moved by hand."""

    def __init__(self, text: str) -> None:
        from datetime import datetime, timedelta, timezone

        self.zone = timezone(timedelta(hours=2))
        self.now = datetime.fromisoformat(text).replace(tzinfo=self.zone)

    def __call__(self):
        return self.now

    def advance(self, **delta: float) -> None:
        from datetime import timedelta

        self.now += timedelta(**delta)


@pytest.mark.parametrize(
    ("period", "start", "later_same", "next_start"),
    [
        (
            "day",
            "2026-11-25T08:00",
            dict(hours=15),
            dict(hours=16, minutes=1),
        ),  # to 23:00, then past midnight
        ("week", "2026-11-25T08:00", dict(days=4), dict(days=5)),  # Wednesday to Sunday, then Monday
        ("month", "2026-11-25T08:00", dict(days=5), dict(days=6)),  # to 30 Nov, then 1 Dec
    ],
)
async def test_budget_periods_in_local_time(tmp_path, period, start, later_same, next_start):
    clock = FakeClock(start)
    budget = Budget(Store(tmp_path / "hub.sqlite"), 1.0, period=period, clock=clock)
    await budget.setup()
    async with await budget.reserve("pool", 0.8) as r:
        await r.commit(0.8)
    with pytest.raises(BudgetExceeded) as refused:
        await budget.reserve("pool", 0.5, "pool task t1", lower="lower max_budget_usd on the call")
    text = str(refused.value)
    assert f"spent $0.80 of $1.00 this {period}; pool task t1 needs up to $0.50" in text
    assert "Raise [budget] limit_usd" in text and f"wait for the next {period}" in text
    assert "`hub budget reset`" in text and "lower max_budget_usd on the call" in text
    clock.advance(**later_same)
    with pytest.raises(BudgetExceeded):
        await budget.reserve("pool", 0.5)
    clock.advance(**{k: v - later_same.get(k, 0) for k, v in next_start.items()})
    summary = await budget.summary()
    assert summary["spent_usd"] == 0 and summary["spent_all_time_usd"] == 0.8
    assert summary["period_started"] < summary["next_period"]
    async with await budget.reserve("pool", 0.9) as r:
        await r.commit(0.1)
    assert (await budget.summary())["spent_by_plugin"] == {"pool": 0.1}


async def test_reset_starts_a_new_period_and_keeps_history(tmp_path):
    clock = FakeClock("2026-11-25T08:00")
    budget = Budget(Store(tmp_path / "hub.sqlite"), 1.0, clock=clock)
    await budget.setup()
    await budget.record("pool", 0.9)
    with pytest.raises(BudgetExceeded) as refused:
        await budget.reserve("pool", 0.5)
    assert "wait for the next" not in str(refused.value)  # a total budget has no next period
    clock.advance(seconds=1)
    await budget.reset()
    clock.advance(seconds=1)
    summary = await budget.summary()
    assert summary["spent_usd"] == 0 and summary["spent_all_time_usd"] == 0.9
    assert summary["period_started"] == "2026-11-25T06:00:01.000Z"
    async with await budget.reserve("pool", 0.5):
        pass
    rows = await budget.store.fetchall("SELECT amount_micros FROM budget_ledger")
    assert [row["amount_micros"] for row in rows] == [900_000]  # nothing deleted
