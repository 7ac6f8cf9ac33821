"""`hub worker [--slots N]`: a hub that serves no MCP client and takes work queued in the store.

It loads the plugins and opens the store as any hub does (with a PostgreSQL `state_url`, on any
machine that can reach the database), then runs the worker role of each plugin that has one (the
`hub_worker` hook: the pool's slots take queued tasks), with the heartbeat and recovery of dead
hubs every hub runs, until SIGTERM, SIGINT or SIGHUP. The core knows nothing of what the work is:
`--slots N` is passed to the plugins as how many pieces of work this worker may run at once. The
store being away is said in the log; the worker takes no new work then and carries on by itself.
A store that cannot be reached when the worker starts is waited for the same way; one that refuses
for good (a wrong password, no such database) ends it with its line (exit 2).
"""

from __future__ import annotations

import argparse
import signal
from typing import TYPE_CHECKING, Any

from hub.cli.options import add_common, config_from

if TYPE_CHECKING:
    from hub.config.settings import HubConfig
    from hub.host import Hub

__all__ = ["STORE_WAIT_MAX_S", "add_parser", "run", "work"]

# The longest wait between two tries of a store that cannot be reached when the worker starts.
STORE_WAIT_MAX_S = 30.0


def add_parser(commands: Any) -> None:
    worker = commands.add_parser(
        "worker",
        help="take queued work from the store (pool tasks from any hub), serving no MCP client",
        description="Run the worker role of the loaded plugins: the pool's slots take tasks queued by "
        "any hub sharing the store (on other machines too, with a PostgreSQL state_url). Runs until "
        "SIGTERM or Ctrl-C.",
    )
    worker.add_argument(
        "--slots",
        type=int,
        metavar="N",
        help="how many pieces of work at once (the pool's slots; default: [plugins.pool] slots)",
    )
    add_common(worker, suppress=True)


def run(args: argparse.Namespace) -> int:
    import anyio

    from hub.log import configure_logging

    if args.slots is not None and args.slots < 1:
        raise SystemExit("hub worker: --slots must be at least 1")
    config = config_from(args)
    configure_logging(config.log_format, config.log_level)
    anyio.run(work, config, args.slots)
    return 0


async def work(config: HubConfig, slots: int | None) -> None:
    """Run the plugins' worker roles until a signal comes; a store that cannot be reached yet
    (`StoreUnavailable`: a server down or starting, the network not up) is waited for, as a
    worker started with its machine or by a service manager before the database expects."""
    from contextlib import AsyncExitStack

    async with AsyncExitStack() as stack:
        hub = await _open_hub(config)
        stack.push_async_exit(hub)
        await _serve(hub, slots)


async def _serve(hub: Hub, slots: int | None) -> None:
    import anyio

    async with anyio.create_task_group() as tg:

        async def stop_on_signal() -> None:
            with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
                async for _ in signals:
                    tg.cancel_scope.cancel()
                    return

        tg.start_soon(stop_on_signal)
        await hub.run_workers(slots)


async def _open_hub(config: HubConfig) -> Hub:
    """A hub opened on the store, trying again (1 s, then up to `STORE_WAIT_MAX_S` apart) while
    the store cannot be reached; a store that refuses for good (a wrong password, no such
    database) is raised at once, and the command exits with its line."""
    import anyio
    import structlog

    from hub.errors import StoreUnavailable
    from hub.host import Hub

    delay = 1.0
    while True:
        hub = Hub(config, role="worker")
        try:
            await hub.__aenter__()
        except StoreUnavailable as exc:
            structlog.get_logger("hub").warning(
                "the store cannot be reached yet; the worker waits for it", problem=str(exc), retry_in_s=delay
            )
            await anyio.sleep(delay)
            delay = min(delay * 2, STORE_WAIT_MAX_S)
            continue
        return hub
