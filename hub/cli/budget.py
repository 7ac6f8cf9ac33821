"""`hub budget [show|reset]`: the shared budget of this period, read (or reset) in the store with
no plugin loaded."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from hub.cli.options import add_common, config_from

if TYPE_CHECKING:
    from hub.config.settings import HubConfig

__all__ = ["add_parser", "run"]


def add_parser(commands: Any) -> None:
    budget = commands.add_parser(
        "budget",
        help="show the shared budget of this period; `hub budget reset` starts a new period",
        description="Show the limit, the period ([budget] period: total, day, week, month), what was "
        "spent in it and what running work holds, by plugin. `reset` starts a new period now; the "
        "ledger keeps every earlier spend.",
    )
    budget.add_argument("action", nargs="?", choices=["show", "reset"], default="show")
    budget.add_argument("--json", action="store_true", help="print JSON")
    add_common(budget, suppress=True)


def run(args: argparse.Namespace) -> int:
    import anyio

    from hub.log import configure_logging

    config = config_from(args)
    configure_logging(config.log_format, config.log_level)
    anyio.run(show_budget, config, args.action, args.json)
    return 0


async def show_budget(config: HubConfig, action: str, as_json: bool) -> None:
    """`hub budget [show|reset]`: read (or reset) the ledger in the store, no plugin loaded."""
    from hub.services.backends import open_store
    from hub.services.budget import Budget

    store = open_store(config)  # a fault is one line (`StoreError`), exit 2
    try:
        budget = Budget(store, config.budget.limit_usd, period=config.budget.period)
        await budget.setup()
        if action == "reset":
            at = await budget.reset()
            if not as_json:
                print(f"hub budget: a new period started at {at}; earlier spend is kept in the ledger")
        summary = await budget.summary()
    finally:
        store.close()
    if as_json:
        print(json.dumps(summary, indent=2))
        return
    if action == "reset":
        return
    since = summary["period_started"] or "the beginning"
    print(f"limit: {limit_text(summary['limit_usd'], summary['period'])}")
    print(
        f"period: {summary['period']}, counting since {since}"
        + (f", next from {summary['next_period']}" if summary["next_period"] else "")
    )
    print(
        f"spent: ${summary['spent_usd']:,.4f}   reserved: ${summary['reserved_usd']:,.4f}"
        + ("" if summary["remaining_usd"] is None else f"   remaining: ${summary['remaining_usd']:,.4f}")
    )
    limit = summary["limit_usd"]
    if limit is not None and summary["spent_usd"] > limit:
        print(
            f"over the cap by ${summary['spent_usd'] - limit:,.4f}: work spent more than it reserved "
            "(recorded as spent); no new work starts until a new period or a higher cap"
        )
    for plugin in sorted(set(summary["spent_by_plugin"]) | set(summary["reserved_by_plugin"])):
        spent = summary["spent_by_plugin"].get(plugin, 0.0)
        held = summary["reserved_by_plugin"].get(plugin, 0.0)
        print(f"  {plugin}: spent ${spent:,.4f}, reserved ${held:,.4f}")
    print(f"spent in all periods: ${summary['spent_all_time_usd']:,.4f}")


def limit_text(limit_usd: float | None, period: str) -> str:
    """The cap in words: "$10.00 per day", "$10.00 in all", or how to set one."""
    if limit_usd is None:
        return "none (set one with [budget] limit_usd in hub.toml, or --budget-usd)"
    if period == "total":
        return f"${limit_usd:,.2f} in all (until `hub budget reset`)"
    return f"${limit_usd:,.2f} per {period}"
