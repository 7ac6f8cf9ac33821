"""`hub dashboard`: serve a live page of the shared hub processes of this state directory (the
pool's slots and queue, batch jobs, the budget and its chart, downstream servers, sessions) on
loopback, print its URL and open it in a browser when there is one (`hub.dashboard`)."""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from typing import TYPE_CHECKING, Any

from hub.cli.options import add_common, config_from

if TYPE_CHECKING:
    from hub.config.settings import HubConfig

__all__ = ["add_parser", "run"]


def add_parser(commands: Any) -> None:
    dashboard = commands.add_parser(
        "dashboard",
        help="serve a live page of the pool, batch jobs, budget, servers and sessions",
        description="Serve a live page (server-sent events, no reload) of what the shared hub process "
        "of this launch (or any on this state directory) is doing: pool slots and queue, batch jobs, "
        "the budget and a chart of spend, downstream servers with per-tool latency, sessions. Listens "
        "on loopback on a free port; the printed URL carries the page's token.",
    )
    dashboard.add_argument("--no-browser", action="store_true", help="only print the URL")
    dashboard.add_argument(
        "--host",
        dest="dashboard_host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1; another needs [http] token or --token)",
    )
    dashboard.add_argument(
        "--port", dest="dashboard_port", type=int, default=0, help="port (default 0: a free one)"
    )
    dashboard.add_argument("--token", help="the page's token (default: [http] token, else a new random one)")
    dashboard.add_argument("--hub", metavar="INSTANCE", help="show this shared process (an instance id)")
    dashboard.add_argument(
        "--interval", type=float, default=1.0, help="seconds between refreshes (default 1)"
    )
    add_common(dashboard, suppress=True)


def run(args: argparse.Namespace) -> int:
    import anyio

    from hub.log import configure_logging
    from hub.server.http import bind_socket, is_loopback

    config = config_from(args)
    configure_logging(config.log_format, config.log_level)
    configured = config.http.token.get_secret_value() if config.http.token else None
    token = args.token or configured
    host = args.dashboard_host
    if not is_loopback(host) and not token:
        print(
            f"hub dashboard: refusing to listen on {host} without a token: give one with --token T "
            "([http] token in hub.toml or HUB_HTTP_TOKEN also do), or leave --host out for loopback only",
            file=sys.stderr,
        )
        return 2
    token = token or secrets.token_urlsafe(24)
    sock = bind_socket(host, args.dashboard_port, choose="--port N, or no --port for a free one")
    url = page_url(host, sock.getsockname()[1], token, args.hub)
    print(f"hub dashboard: {url}", flush=True)
    print("(Ctrl-C stops it)", file=sys.stderr, flush=True)
    if not args.no_browser:
        _open_browser(url)
    anyio.run(_serve, config, args, sock, token, not is_loopback(host))
    return 0


def page_url(host: str, port: int, token: str, hub: str | None = None) -> str:
    """The URL to print: a wildcard address (every interface) is shown as this machine's name."""
    import socket
    from urllib.parse import urlencode

    if host in ("", "0.0.0.0", "::"):
        host = socket.gethostname()
    shown = f"[{host}]" if ":" in host else host
    query = urlencode({"token": token, **({"hub": hub} if hub else {})})
    return f"http://{shown}:{port}/?{query}"


def _open_browser(url: str) -> None:
    """Open `url` where a graphical browser can be (a display, or macOS / Windows)."""
    if sys.platform.startswith("linux") and not (
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    ):
        return
    import contextlib
    import webbrowser

    with contextlib.suppress(webbrowser.Error):
        webbrowser.open(url)


async def _serve(config: HubConfig, args: argparse.Namespace, sock: Any, token: str, any_host: bool) -> None:
    import uvicorn

    from hub.cli.status import shared_processes
    from hub.cli.stop import launch_key
    from hub.dashboard.app import dashboard_app
    from hub.dashboard.source import Source

    state_dir, state_url = config.state_dir, config.store_url()
    source = Source(
        lambda: shared_processes(state_dir, state_url),
        launch_key=launch_key(args, state_dir),
        interval_s=max(0.2, args.interval),
        store_view=_store_view(config),
    )
    app = dashboard_app(source, token, any_host=any_host)
    server = uvicorn.Server(
        uvicorn.Config(
            app, log_level="warning", lifespan="off", access_log=False, timeout_graceful_shutdown=1
        )
    )
    await server.serve(sockets=[sock])


def _store_view(config: HubConfig) -> Any:
    """What the page shows from the store alone, when no shared process answers: the budget, the
    ledger for the chart, the hubs alive."""

    async def view() -> dict[str, Any]:
        from datetime import datetime

        from hub import __version__
        from hub.dashboard.spend import since
        from hub.errors import StoreError
        from hub.services.backends import open_store
        from hub.services.budget import Budget
        from hub.services.instances import MIGRATIONS as INSTANCE_TABLES
        from hub.services.instances import Instances

        try:
            store = open_store(config)
        except StoreError as exc:
            return {"store_problem": str(exc)}
        try:
            budget = Budget(store, config.budget.limit_usd, period=config.budget.period)
            await budget.setup()
            await store.migrate("instances", INSTANCE_TABLES)  # a state directory no hub used yet
            live = await Instances(
                store, version=__version__, dead_after_s=config.liveness.dead_after_s
            ).live()
            return {
                "budget": await budget.summary(),
                "spend_rows": await budget.spend_by_hour(since(datetime.now().astimezone())),
                "instances": [
                    {
                        **i.describe(),
                        "version": i.version,
                        "started_at": i.started_at,
                        "shared": bool(i.share_key),
                        "work": i.work,
                    }
                    for i in live
                ],
            }
        except Exception as exc:  # a store no hub has used yet, or one that cannot be read now
            return {
                "store_problem": str(exc) if isinstance(exc, StoreError) else f"{type(exc).__name__}: {exc}"
            }
        finally:
            store.close()

    return view
