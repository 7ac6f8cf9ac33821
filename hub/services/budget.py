"""The shared USD budget: reserve an upper bound, charge what was spent, release the rest.

The ledger lives in the store, so spend survives a restart. Amounts are kept as integer
micro-dollars so sums never drift. Every reservation is checked and written in one
transaction: concurrent reservations (from this hub or another hub process
sharing the state directory) can never push spent + reserved past the cap, and a reservation is
settled exactly once, whichever hubs try. On PostgreSQL (hubs and workers on several machines)
every such transaction takes the store's `budget` lock first (`conn.lock`), which makes it as
serial as SQLite's `BEGIN IMMEDIATE` does.

The cap is hard for new work, and the ledger is truthful: what work reports it spent is
recorded even when it passes what was reserved for it (a CLI whose last turn overshoots its
--max-budget-usd), so the ledger may pass the cap, but once spent + reserved reaches the cap no
reservation is granted, however small, until a new period or a higher cap. An overshoot is
logged, and the plugin says it in its result (`Reservation.overshoot_usd`). Each reservation's owner is the hub instance that made
it (`hub.services.instances`); when that hub dies, what its plugins did not settle is charged in full by
the hub that recovers after it (`abandon`), because what it spent cannot be known.

Periods (`[budget] period`): `total` counts every spend since the last `hub budget reset`; `day`,
`week` (from Monday) and `month` count from the start of the current one in local time (or the
last reset, if later). Nothing is ever deleted: a reset or a new period only moves where the
count starts, so the ledger keeps the whole history. The clock is injectable for tests.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, Literal

import anyio
import structlog

from hub.errors import BudgetExceeded
from hub.services.store import Connection, Store
from hub.telemetry import STATE as TELEMETRY
from hub.telemetry import count_spend

__all__ = [
    "SPENDING_SESSION",
    "Budget",
    "PluginBudget",
    "Reservation",
    "local_now",
    "period_bounds",
    "usd",
]

#: The client session the current work is done for (set by the shared process per connection),
#: recorded with each reservation and spend, so spend can be shown by session where it is known.
SPENDING_SESSION: ContextVar[str | None] = ContextVar("hub_spending_session", default=None)

MICROS = 1_000_000
log = structlog.get_logger("hub.budget")
UNKNOWN_SPEND = "charged in full: the hub that held it stopped and what it spent cannot be known"

MIGRATIONS = [
    """
    CREATE TABLE budget_reservations (
        id INTEGER PRIMARY KEY,
        plugin TEXT NOT NULL,
        purpose TEXT NOT NULL DEFAULT '',
        reserved_micros INTEGER NOT NULL,
        remaining_micros INTEGER NOT NULL,
        state TEXT NOT NULL DEFAULT 'open' CHECK (state IN ('open', 'closed', 'abandoned')),
        owner TEXT NOT NULL,
        created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
        closed_at TEXT
    );
    CREATE INDEX budget_reservations_open ON budget_reservations (state) WHERE state = 'open';
    CREATE TABLE budget_ledger (
        id INTEGER PRIMARY KEY,
        plugin TEXT NOT NULL,
        purpose TEXT NOT NULL DEFAULT '',
        amount_micros INTEGER NOT NULL,
        reservation_id INTEGER REFERENCES budget_reservations (id),
        at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
    );
    """,
    # Every reservation has the hub instance that made it as its owner (`hub.services.instances`); a durable
    # one is kept open across that hub's death for its plugin to settle. Open reservations of the
    # old `host:pid` owners are released once, as those hubs did at their next start.
    """
    ALTER TABLE budget_reservations ADD COLUMN durable INTEGER NOT NULL DEFAULT 0;
    UPDATE budget_reservations SET durable = 1 WHERE owner = 'durable';
    UPDATE budget_reservations SET state = 'abandoned', remaining_micros = 0,
        closed_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
        WHERE state = 'open' AND durable = 0;
    CREATE INDEX budget_reservations_owner ON budget_reservations (owner) WHERE state = 'open';
    """,
    # `hub budget reset`: where the count starts again; the ledger itself is never deleted.
    """
    CREATE TABLE budget_resets (
        id INTEGER PRIMARY KEY,
        at TEXT NOT NULL
    );
    CREATE INDEX budget_ledger_at ON budget_ledger (at);
    """,
    # What was charged to one reservation (to tell when spend passes it).
    """
    CREATE INDEX budget_ledger_reservation ON budget_ledger (reservation_id);
    """,
    # The client session spend was for, where known (`SPENDING_SESSION`): a reservation's, and
    # each ledger line's (its reservation's).
    """
    ALTER TABLE budget_reservations ADD COLUMN session TEXT;
    ALTER TABLE budget_ledger ADD COLUMN session TEXT;
    """,
]

Period = Literal["total", "day", "week", "month"]
Clock = Callable[[], datetime]


def local_now() -> datetime:
    """Now, as an aware datetime in the local time zone."""
    return datetime.now().astimezone()


def stamp(moment: datetime) -> str:
    """The store's UTC timestamp format (sortable as text): 2026-11-23T22:41:50.123Z."""
    utc = moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def period_bounds(period: Period, now: datetime) -> tuple[datetime | None, datetime | None]:
    """The current period's start and the next one's, in `now`'s time zone (None for `total`)."""
    if period == "total":
        return None, None
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        start = midnight
        return start, start + timedelta(days=1)
    if period == "week":
        start = midnight - timedelta(days=now.weekday())
        return start, start + timedelta(days=7)
    start = midnight.replace(day=1)
    following = (
        start.replace(year=start.year + 1, month=1)
        if start.month == 12
        else start.replace(month=start.month + 1)
    )
    return start, following


def to_micros(amount_usd: float) -> int:
    return round(amount_usd * MICROS)


def usd(micros: int) -> float:
    return round(micros / MICROS, 6)


def _money(micros: int) -> str:
    return f"${micros / MICROS:,.2f}" if micros >= 10_000 or micros == 0 else f"${micros / MICROS:.4f}"


@dataclass
class Reservation:
    """Money set aside for one piece of work. Use as ``async with``: what is unspent is released."""

    budget: Budget = field(repr=False)
    id: int
    plugin: str
    purpose: str
    reserved_usd: float
    owner: str = ""
    closed: bool = False
    # What was charged past `reserved_usd` (the work spent more than was set aside for it).
    overshoot_usd: float = 0.0

    async def charge(self, amount_usd: float) -> bool:
        """Record spend against this reservation; it stays open for more. False (nothing
        recorded) if it was closed meanwhile, e.g. settled by another hub."""
        return await self.budget._charge(self, to_micros(amount_usd), close=False)

    async def commit(self, amount_usd: float) -> bool:
        """Record the actual spend and release whatever is left of the reservation. Exactly once
        across every hub process: False (nothing recorded) if it was already closed."""
        return await self.budget._charge(self, to_micros(amount_usd), close=True)

    async def release(self) -> None:
        """Give back what is left unspent."""
        if not self.closed:
            await self.budget._charge(self, 0, close=True)

    async def __aenter__(self) -> Reservation:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        with anyio.CancelScope(shield=True):
            await self.release()


class Budget:
    """The hub-wide budget. Plugins get a `PluginBudget` view that records who spent what."""

    def __init__(
        self,
        store: Store,
        limit_usd: float | None,
        *,
        owner: str | None = None,
        period: Period = "total",
        clock: Clock = local_now,
    ) -> None:
        self.store = store
        self.limit_micros = None if limit_usd is None else to_micros(limit_usd)
        self.period: Period = period
        self.clock = clock
        # The hub instance (`hub.services.instances`) whose reservations these are.
        self.owner = owner or secrets.token_hex(4)

    async def setup(self) -> None:
        await self.store.migrate("budget", MIGRATIONS)

    async def abandon(self, owner: str, plugin: str) -> float:
        """Close what `plugin`'s reservations of dead hub instance `owner` still hold, charging it
        in full (the spend cannot be known, so it is not given back). Durable reservations stay
        open for their plugin to settle. Returns the USD charged."""

        def abandon(conn: Connection) -> int:
            conn.lock("budget")
            rows = conn.execute(
                "SELECT id, purpose, remaining_micros FROM budget_reservations "
                "WHERE state = 'open' AND durable = 0 AND owner = ? AND plugin = ?",
                (owner, plugin),
            ).fetchall()
            total = 0
            for row in rows:
                if row["remaining_micros"]:
                    conn.execute(
                        "INSERT INTO budget_ledger (plugin, purpose, amount_micros, reservation_id, at) "
                        "VALUES (?, ?, ?, ?, ?)",
                        (
                            plugin,
                            f"{row['purpose']} ({UNKNOWN_SPEND})",
                            row["remaining_micros"],
                            row["id"],
                            stamp(self.clock()),
                        ),
                    )
                    total += row["remaining_micros"]
                conn.execute(
                    "UPDATE budget_reservations SET state = 'abandoned', remaining_micros = 0, "
                    "closed_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE id = ?",
                    (row["id"],),
                )
            return total

        charged = await self.store.transaction(abandon)
        if charged:
            log.warning(
                "charged reservations left open by a hub that died",
                plugin=plugin,
                owner=owner,
                usd=usd(charged),
            )
        return usd(charged)

    def for_plugin(self, plugin: str) -> PluginBudget:
        return PluginBudget(self, plugin)

    async def reserve(
        self,
        plugin: str,
        amount_usd: float,
        purpose: str = "",
        *,
        durable: bool = False,
        lower: str | None = None,
    ) -> Reservation:
        """Set aside `amount_usd`, or raise `BudgetExceeded` saying spent, limit, what was asked
        and every fix that applies (`lower` names how the caller can ask for less).

        A `durable` reservation stays open across restarts until it is committed or released;
        find it again with `reservation(id)`.
        """
        if amount_usd < 0:
            raise ValueError("a reservation cannot be negative")
        ask = to_micros(amount_usd)
        session = SPENDING_SESSION.get()

        def reserve(conn: Connection) -> int:
            conn.lock("budget")  # the totals read below stay true until this commits
            spent, reserved = self._totals(conn)
            limit = self.limit_micros
            # At or past the cap (spend may pass it: see the module doc), nothing new starts.
            if limit is not None and (spent + reserved + ask > limit or spent + reserved >= limit):
                raise BudgetExceeded(self._refusal(spent, reserved, ask, purpose or plugin, lower))
            return conn.insert(
                "INSERT INTO budget_reservations (plugin, purpose, reserved_micros, remaining_micros, "
                "owner, durable, session) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (plugin, purpose, ask, ask, self.owner, int(durable), session),
            )

        reservation_id = await self.store.transaction(reserve)
        return Reservation(self, reservation_id, plugin, purpose, usd(ask), self.owner)

    def _refusal(self, spent: int, reserved: int, ask: int, what: str, lower: str | None) -> str:
        assert self.limit_micros is not None
        held = f" (+{_money(reserved)} reserved by running work)" if reserved else ""
        if spent > self.limit_micros:
            held += f", {_money(spent - self.limit_micros)} over the cap (work spent more than it reserved)"
        scope = "" if self.period == "total" else f" this {self.period}"
        fixes = ["Raise [budget] limit_usd or --budget-usd"]
        _, following = period_bounds(self.period, self.clock())
        if following is not None:
            fixes.append(f"wait for the next {self.period} (from {following:%Y-%m-%d %H:%M} local time)")
        if spent:
            fixes.append("start a new period with `hub budget reset` (the history is kept)")
        if reserved:
            fixes.append("wait for running work to settle what it reserved")
        left = max(0, self.limit_micros - spent - reserved)
        if left:  # with nothing left, asking for less does not help
            fixes.append(
                lower + f" (at most {_money(left)} is left)" if lower else f"ask for at most {_money(left)}"
            )
        return (
            f"budget exhausted: spent {_money(spent)}{held} of {_money(self.limit_micros)}{scope}; "
            f"{what} needs up to {_money(ask)}. " + "; or ".join(fixes) + "."
        )

    async def reset(self) -> str:
        """Start a new period now: spend before it no longer counts (the ledger keeps it).
        Returns the reset's timestamp."""
        at = stamp(self.clock())
        await self.store.execute("INSERT INTO budget_resets (at) VALUES (?)", (at,))
        return at

    def _since(self, conn: Connection) -> str | None:
        """Where the current period's count starts (UTC stamp), or None for all of history."""
        start, _ = period_bounds(self.period, self.clock())
        row = conn.execute("SELECT MAX(at) FROM budget_resets").fetchone()
        candidates = [s for s in (stamp(start) if start else None, row[0] if row else None) if s]
        return max(candidates) if candidates else None

    async def reservation(self, reservation_id: int) -> Reservation | None:
        """An open reservation by id (a durable one made before a restart), else None."""
        row = await self.store.fetchone(
            "SELECT id, plugin, purpose, remaining_micros, owner FROM budget_reservations "
            "WHERE id = ? AND state = 'open'",
            (reservation_id,),
        )
        if row is None:
            return None
        return Reservation(
            self, row["id"], row["plugin"], row["purpose"], usd(row["remaining_micros"]), row["owner"]
        )

    async def durable_reservations(self, plugin: str) -> list[Reservation]:
        """`plugin`'s open durable reservations (to release those whose work is gone); each
        says which hub instance made it (`owner`)."""
        rows = await self.store.fetchall(
            "SELECT id, plugin, purpose, remaining_micros, owner FROM budget_reservations "
            "WHERE state = 'open' AND durable = 1 AND plugin = ? ORDER BY id",
            (plugin,),
        )
        return [
            Reservation(self, r["id"], r["plugin"], r["purpose"], usd(r["remaining_micros"]), r["owner"])
            for r in rows
        ]

    async def _charge(self, reservation: Reservation, amount: int, *, close: bool) -> bool:
        if reservation.closed:
            raise RuntimeError(f"reservation {reservation.id} is already closed")
        over = [0]  # micro-dollars charged past the reservation, set in the transaction

        def charge(conn: Connection) -> bool:
            conn.lock("budget")
            row = conn.execute(
                "SELECT state, reserved_micros FROM budget_reservations WHERE id = ?",
                (reservation.id,),
            ).fetchone()
            if row is None or row["state"] != "open":
                return False  # settled already (by another hub, or abandoned): never twice
            charged_before = conn.execute(
                "SELECT COALESCE(SUM(amount_micros), 0) FROM budget_ledger WHERE reservation_id = ?",
                (reservation.id,),
            ).fetchone()[0]
            over[0] = max(0, charged_before + amount - row["reserved_micros"])
            if amount:
                conn.execute(
                    "INSERT INTO budget_ledger (plugin, purpose, amount_micros, reservation_id, at, session) "
                    "VALUES (?, ?, ?, ?, ?, (SELECT session FROM budget_reservations WHERE id = ?))",
                    (
                        reservation.plugin,
                        reservation.purpose,
                        amount,
                        reservation.id,
                        stamp(self.clock()),
                        reservation.id,
                    ),
                )
            if close:
                conn.execute(
                    "UPDATE budget_reservations SET remaining_micros = 0, state = 'closed', "
                    "closed_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE id = ? AND state = 'open'",
                    (reservation.id,),
                )
            else:
                conn.execute(
                    "UPDATE budget_reservations SET remaining_micros = GREATEST(0, remaining_micros - ?) WHERE id = ?",
                    (amount, reservation.id),
                )
            return True

        applied = await self.store.transaction(charge)
        if close or not applied:
            reservation.closed = True
        if applied and TELEMETRY.on:
            count_spend(reservation.plugin, usd(amount))
        if applied and over[0]:
            reservation.overshoot_usd = usd(over[0])
            log.warning(
                "spend passed its reservation; recorded as spent, and no new work starts past the cap",
                plugin=reservation.plugin,
                purpose=reservation.purpose,
                reserved_usd=reservation.reserved_usd,
                overshoot_usd=usd(over[0]),
            )
        return applied

    async def record(self, plugin: str, amount_usd: float, purpose: str = "") -> None:
        """Record spend that had no reservation (it can take the total past the cap; prefer `reserve`)."""
        await self.store.execute(
            "INSERT INTO budget_ledger (plugin, purpose, amount_micros, at, session) VALUES (?, ?, ?, ?, ?)",
            (plugin, purpose, to_micros(amount_usd), stamp(self.clock()), SPENDING_SESSION.get()),
        )
        if TELEMETRY.on:
            count_spend(plugin, amount_usd)

    async def spend_by_hour(self, since: datetime) -> list[dict[str, Any]]:
        """The ledger since `since`, summed by UTC hour, plugin and session (None where unknown):
        ``{"hour": "2026-11-23T22", "plugin", "session", "usd"}``, oldest first (for charts)."""
        rows = await self.store.fetchall(
            "SELECT substr(at, 1, 13) AS hour, plugin, session, SUM(amount_micros) AS micros "
            "FROM budget_ledger WHERE at >= ? GROUP BY hour, plugin, session ORDER BY hour",
            (stamp(since),),
        )
        return [
            {
                "hour": row["hour"],
                "plugin": row["plugin"],
                "session": row["session"],
                "usd": usd(row["micros"]),
            }
            for row in rows
        ]

    async def ledger_mark(self) -> int:
        """The newest ledger line's id (0 for none): what changes when spend is recorded."""
        row = await self.store.fetchone("SELECT COALESCE(MAX(id), 0) AS mark FROM budget_ledger")
        return int(row["mark"]) if row is not None else 0

    def _totals(self, conn: Connection) -> tuple[int, int]:
        since = self._since(conn)
        spent = conn.execute(
            "SELECT COALESCE(SUM(amount_micros), 0) FROM budget_ledger WHERE at >= ?", (since or "",)
        ).fetchone()[0]
        reserved = conn.execute(
            "SELECT COALESCE(SUM(remaining_micros), 0) FROM budget_reservations WHERE state = 'open'"
        ).fetchone()[0]
        return int(spent), int(reserved)

    async def summary(self) -> dict[str, Any]:
        """Limit, period, spent (this period), reserved, remaining and both per plugin, in USD."""

        def read(conn: Connection) -> dict[str, Any]:
            spent, reserved = self._totals(conn)
            since = self._since(conn)
            by_plugin = {
                row[0]: usd(row[1])
                for row in conn.execute(
                    "SELECT plugin, SUM(amount_micros) FROM budget_ledger WHERE at >= ? "
                    "GROUP BY plugin ORDER BY plugin",
                    (since or "",),
                )
            }
            reserved_by_plugin = {
                row[0]: usd(row[1])
                for row in conn.execute(
                    "SELECT plugin, SUM(remaining_micros) FROM budget_reservations WHERE state = 'open' "
                    "GROUP BY plugin ORDER BY plugin"
                )
            }
            all_time = conn.execute("SELECT COALESCE(SUM(amount_micros), 0) FROM budget_ledger").fetchone()[0]
            _, following = period_bounds(self.period, self.clock())
            limit = self.limit_micros
            return {
                "limit_usd": None if limit is None else usd(limit),
                "period": self.period,
                "period_started": since,
                "next_period": None if following is None else stamp(following),
                "spent_usd": usd(spent),
                "reserved_usd": usd(reserved),
                "remaining_usd": None if limit is None else usd(max(0, limit - spent - reserved)),
                "spent_by_plugin": by_plugin,
                "reserved_by_plugin": reserved_by_plugin,
                "spent_all_time_usd": usd(int(all_time)),
            }

        return await self.store.run(read)


@dataclass
class PluginBudget:
    """The budget as one plugin sees it: its reservations and spend are recorded under its name."""

    budget: Budget = field(repr=False)
    plugin: str

    async def reserve(
        self, amount_usd: float, purpose: str = "", *, durable: bool = False, lower: str | None = None
    ) -> Reservation:
        """See `Budget.reserve`; `lower` says how the caller can ask for less (named in a refusal)."""
        return await self.budget.reserve(self.plugin, amount_usd, purpose, durable=durable, lower=lower)

    async def reservation(self, reservation_id: int) -> Reservation | None:
        return await self.budget.reservation(reservation_id)

    async def durable_reservations(self) -> list[Reservation]:
        return await self.budget.durable_reservations(self.plugin)

    async def record(self, amount_usd: float, purpose: str = "") -> None:
        await self.budget.record(self.plugin, amount_usd, purpose)

    async def summary(self) -> dict[str, Any]:
        return await self.budget.summary()
