"""The `hub` command: serve over stdio (the default) or streamable HTTP, list plugins, show config,
print the status line.

Heavy modules (the MCP SDK, pydantic, anyio) are imported inside the commands that need them,
so `hub statusline`, which Claude Code runs on every status-line refresh, starts fast.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hub import __version__

if TYPE_CHECKING:
    from hub.config import HubConfig

__all__ = ["main"]

EPILOG = """\
commands:
  serve      run the MCP server (the default when no command is given); over stdio, a bridge to
             the one shared hub process of this launch (--no-share or HUB_SHARE=0: in-process)
  status     list the shared hub processes of this state directory
  plugins    list installed plugins: version, distribution, what each registers
  config     print the effective configuration, secrets masked, and which file set each key
  servers    import (from .mcp.json), list and check the downstream servers
  budget     show the budget of this period (limit, spent, reserved, by plugin); `budget reset`
  statusline print one line for Claude Code's status line (e.g. "batch: 1 pending, 4 done, 0 failed")

configuration, lowest precedence first: defaults, the user's hub.toml ($XDG_CONFIG_HOME/hub/hub.toml,
default ~/.config/hub/hub.toml), the project's (--config, HUB_CONFIG, else ./hub.toml; tables
merged key by key, the project winning), HUB_* variables (HUB_PLUGINS, HUB_STATE_DIR,
HUB_LOG_FORMAT, HUB_LOG_LEVEL, HUB_BUDGET_USD, HUB_HTTP_TOKEN, or any key as HUB_TABLE__KEY),
then --set and the flags. Any key can be set with --set, e.g. --set plugins.pool.slots=4
--set budget.limit_usd=10. `hub config` shows which file, variable or option set each key.
"""


def _add_common(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    default = argparse.SUPPRESS if suppress else None
    group = parser.add_argument_group("configuration")
    group.add_argument("--config", "-c", metavar="PATH", default=default, help="hub.toml to read")
    group.add_argument(
        "--plugins",
        "-p",
        metavar="A,B",
        default=default,
        help="comma-separated plugins to load (default: all installed)",
    )
    group.add_argument(
        "--budget-usd", type=float, metavar="USD", default=default, help="shared spending cap in USD"
    )
    group.add_argument(
        "--set",
        "-s",
        dest="overrides",
        action="append",
        metavar="KEY=VALUE",
        default=argparse.SUPPRESS if suppress else [],
        help="override any hub.toml key (repeatable), e.g. plugins.pool.slots=4",
    )
    group.add_argument("--state-dir", metavar="DIR", default=default, help="where hub.sqlite and logs live")
    group.add_argument("--log-format", choices=["console", "json"], default=default)
    group.add_argument("--log-level", choices=["debug", "info", "warning", "error"], default=default)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hub",
        description="One MCP server hosting plugins: slot pool, batch jobs, batch_execute and proxied servers.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", "-V", action="version", version=f"hub {__version__}")
    _add_common(parser, suppress=False)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = commands.add_parser(
        "serve", help="run the MCP server (default)", description="Run the MCP server."
    )
    serve.add_argument("--transport", "-t", choices=["stdio", "http"], default="stdio")
    serve.add_argument("--host", help="HTTP host (default from [http] host: 127.0.0.1)")
    serve.add_argument("--port", type=int, help="HTTP port (default from [http] port: 8765; 0 picks one)")
    serve.add_argument("--path", help="HTTP endpoint path (default /mcp)")
    serve.add_argument(
        "--no-share",
        action="store_true",
        help="stdio: host the plugins in this process instead of bridging to the shared hub process "
        "for this launch (also HUB_SHARE=0)",
    )
    _add_common(serve, suppress=True)

    status = commands.add_parser(
        "status",
        help="list the shared hub processes of this state directory",
        description="The shared hub processes (one per launch, behind `hub serve`) of this state "
        "directory: pid, key, sessions, uptime, memory, working directory.",
    )
    status.add_argument("--json", action="store_true", help="print JSON")
    _add_common(status, suppress=True)

    shared = commands.add_parser("shared", help=argparse.SUPPRESS)  # started by a bridge, not by hand
    shared.add_argument("--key", required=True)
    shared.add_argument("--socket", required=True)
    _add_common(shared, suppress=True)

    plugins = commands.add_parser("plugins", help="list installed plugins and what they register")
    plugins.add_argument("--json", action="store_true", help="print JSON")
    _add_common(plugins, suppress=True)

    config = commands.add_parser("config", help="print the effective configuration (secrets masked)")
    _add_common(config, suppress=True)

    servers = commands.add_parser(
        "servers",
        help="import servers from .mcp.json, list them, check that they start",
        description="Manage the downstream MCP servers of [servers.NAME] in hub.toml.",
    )
    _add_common(servers, suppress=True)
    actions = servers.add_subparsers(dest="servers_command", metavar="ACTION", required=True)
    imp = actions.add_parser(
        "import",
        help="write an .mcp.json's servers into hub.toml (comments kept; the hub's own entry left out)",
        description="Read mcpServers from PATH (an .mcp.json, Claude Desktop's config or ~/.claude.json; "
        "default ./.mcp.json) and add one [servers.NAME] table each to the project's hub.toml "
        "(--config, HUB_CONFIG, else ./hub.toml, created if missing).",
    )
    imp.add_argument("path", nargs="?", metavar="PATH", help="default: ./.mcp.json")
    imp.add_argument("--replace", action="store_true", help="overwrite servers already in hub.toml")
    imp.add_argument(
        "--user",
        action="store_true",
        help="write into the user's ~/.config/hub/hub.toml instead of the project's",
    )
    _add_common(imp, suppress=True)
    lst = actions.add_parser("list", help="configured servers, whether running, tools count (from the store)")
    lst.add_argument("--json", action="store_true", help="print JSON")
    _add_common(lst, suppress=True)
    chk = actions.add_parser("check", help="start each server, list its tools, report errors with its stderr")
    chk.add_argument("names", nargs="*", metavar="NAME", help="default: every configured server")
    chk.add_argument("--json", action="store_true", help="print JSON")
    _add_common(chk, suppress=True)

    budget = commands.add_parser(
        "budget",
        help="show the shared budget of this period; `hub budget reset` starts a new period",
        description="Show the limit, the period ([budget] period: total, day, week, month), what was "
        "spent in it and what running work holds, by plugin. `reset` starts a new period now; the "
        "ledger keeps every earlier spend.",
    )
    budget.add_argument("action", nargs="?", choices=["show", "reset"], default="show")
    budget.add_argument("--json", action="store_true", help="print JSON")
    _add_common(budget, suppress=True)

    statusline = commands.add_parser(
        "statusline",
        help="print the plugins' status line (for Claude Code's statusLine setting)",
        description="Print each plugin's status text, joined by ' | ', from the store; prints "
        "nothing when there is none. Reads --state-dir, HUB_STATE_DIR or hub.toml's state_dir.",
    )
    _add_common(statusline, suppress=True)
    return parser


def _config_from(args: argparse.Namespace) -> HubConfig:
    from hub.config import load_config

    flags: dict[str, tuple[str, Any]] = {}
    for flag, key in (
        ("state_dir", "state_dir"),
        ("log_format", "log_format"),
        ("log_level", "log_level"),
        ("host", "http.host"),
        ("port", "http.port"),
        ("path", "http.path"),
    ):
        value = getattr(args, flag, None)
        if value is not None:
            flags[key] = (f"--{flag.replace('_', '-')}", value)
    return load_config(
        args.config,
        overrides=list(args.overrides),
        plugins=args.plugins,
        budget_usd=args.budget_usd,
        flags=flags,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    command = args.command or "serve"
    if command == "serve" and not hasattr(args, "transport"):
        args.transport, args.host, args.port, args.path, args.no_share = "stdio", None, None, None, False
    if command == "statusline":
        return _statusline(args)
    if command == "status":
        return _status(args)
    if command == "serve":
        _ensure_stdin()
    if command == "serve" and args.transport == "stdio":
        from hub.bridge import sharing_enabled

        if sharing_enabled(args.no_share, os.environ):
            return _bridge(args)
    try:
        fast = _fast_start(args) if command == "serve" and args.transport == "stdio" else None
    except KeyboardInterrupt:  # Claude Code stops its servers with SIGINT, even one still starting
        return 130
    if fast is not None and fast[1] is not None and fast[1].ended and not fast[1].held.strip():
        return 0  # the client left before the hub was up, and nothing it sent waits for an answer
    import anyio

    from hub.config import ConfigError
    from hub.errors import ListenError
    from hub.log import configure_logging
    from hub.plugins import PluginLoadError

    try:
        if command == "servers":
            from hub import servers_cmd

            configure_logging("console", "error")
            return servers_cmd.run(args, _config_from)
        config = _config_from(args)
        configure_logging(config.log_format, config.log_level)
        try:
            if command == "serve":
                _check_http(config, args.transport)
                anyio.run(_serve, config, args.transport, fast)
            elif command == "shared":
                from hub.shared import serve_shared

                anyio.run(serve_shared, config, args.key, Path(args.socket))
            elif command == "plugins":
                anyio.run(_plugins, config, args.json)
            elif command == "config":
                _print_config(config)
            elif command == "budget":
                anyio.run(_budget, config, args.action, args.json)
        except BaseExceptionGroup as group:
            # Errors raised inside task groups arrive wrapped; report the user-facing one plainly.
            match = group.subgroup(lambda e: isinstance(e, ConfigError | PluginLoadError | ListenError))
            if match is None:
                raise
            raise _first_leaf(match) from group
    except ConfigError as exc:
        print(f"hub: config error:\n{_indent(str(exc))}", file=sys.stderr)
        return 2
    except (PluginLoadError, ListenError) as exc:
        print(f"hub: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


def _no_input() -> bool:
    """Whether stdin can never carry a request: closed, /dev/null, or an empty regular file."""
    import stat

    try:
        info = os.fstat(0)
    except OSError:
        return True
    if stat.S_ISREG(info.st_mode):
        return info.st_size == 0
    if stat.S_ISCHR(info.st_mode):
        try:
            return info.st_rdev == os.stat(os.devnull).st_rdev
        except OSError:
            return False
    return False


def _ensure_stdin() -> None:
    """A closed stdin reads as empty: /dev/null goes on fd 0, so the next file the hub opens (the
    event loop's epoll) cannot land there; the hub then sees end of input and exits quietly."""
    try:
        os.fstat(0)
    except OSError:
        fd = os.open(os.devnull, os.O_RDONLY)
        if fd != 0:
            os.dup2(fd, 0)
            os.close(fd)


def _first_leaf(group: BaseException) -> BaseException:
    while isinstance(group, BaseExceptionGroup):
        group = group.exceptions[0]
    return group


def _check_http(config: HubConfig, transport: str) -> None:
    """Refuse an unprotected public listener, or a port in use, before starting anything."""
    if transport == "http":
        from hub.transport.http import check_http_exposure

        token = config.http.token.get_secret_value() if config.http.token else None
        check_http_exposure(config.http.host, token)
        if config.http.port:  # a port in use is said in one line before any plugin starts
            from hub.transport.http import bind_socket

            bind_socket(config.http.host, config.http.port).close()


def _indent(text: str) -> str:
    return "\n".join(f"  {line}" for line in text.splitlines())


def _fast_start(args: argparse.Namespace) -> tuple[Any, Any] | None:
    """While the SDK imports in a thread, answer list requests from the last run (`hub.fastfront`).

    Returns (answer cache, early answers or None), or None when stdin is not a pipe or socket or
    HUB_FAST_START=0.
    """
    import stat
    import threading

    from hub import fastfront
    from hub.paths import config_files

    if os.environ.get("HUB_FAST_START", "1") == "0":
        return None
    try:
        mode = os.fstat(0).st_mode
        state_dir = _light_state_dir(args)
    except (OSError, ValueError):
        return None
    if not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)):
        return None
    files = config_files(args.config, os.environ).paths
    fingerprint = fastfront.fingerprint(__version__, sys.argv[1:], os.environ, files)
    cache = fastfront.AnswerCache(state_dir / fastfront.FILE_NAME, fingerprint)
    if not cache.answers:
        return cache, None  # nothing to answer with yet: record this run's answers for the next
    ready = threading.Event()

    def load() -> None:
        try:
            import hub.host
            import hub.server  # noqa: F401
        finally:
            ready.set()

    threading.Thread(target=load, name="hub-import", daemon=True).start()
    early = fastfront.answer_until(ready, cache)
    if early.ended and early.held.strip():
        ready.wait()  # input ended early, but requests wait for answers: let the imports finish first
    return cache, early


async def _serve(config: HubConfig, transport: str, fast: tuple[Any, Any] | None = None) -> None:
    import signal

    import anyio
    import structlog

    from hub.host import Hub

    async with Hub(config) as hub, anyio.create_task_group() as tg:

        async def stop_on_signal() -> None:
            with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
                async for signum in signals:
                    structlog.get_logger("hub").info("signal received; shutting down", signal=signum.name)
                    tg.cancel_scope.cancel()
                    return

        tg.start_soon(stop_on_signal)
        if transport == "stdio":
            cache, early = fast if fast is not None else (None, None)
            from hub.transport.stdio import serve_stdio

            await serve_stdio(hub.server, cache=cache, early=early)
        else:
            http = config.http
            token = http.token.get_secret_value() if http.token else None
            from hub.transport.http import serve_http

            await serve_http(
                hub.server, host=http.host, port=http.port, path=http.path, token=token, ready=_announce_port
            )
        tg.cancel_scope.cancel()


def _announce_port(port: int) -> None:
    # Machine-readable, on stderr (stdout is reserved for the protocol in stdio mode).
    print(f"hub: listening on port {port}", file=sys.stderr, flush=True)


async def _plugins(config: HubConfig, as_json: bool) -> None:
    """Start every installed plugin against a throwaway state dir and report what it registers."""
    import tempfile

    from hub.host import Hub
    from hub.plugins import check_plugin_names, discover

    check_plugin_names(config)  # a misspelt name in HUB_PLUGINS or hub.toml is an error here too
    selected = config.plugins.enabled
    everything = config.model_copy(deep=True)
    everything.plugins.enabled = None
    with tempfile.TemporaryDirectory(prefix="hub-plugins-") as tmp:
        everything.state_dir = Path(tmp)
        everything.context = {}
        async with Hub(everything) as hub:
            rows = []
            for name, info in hub.plugins.items():
                row: dict[str, Any] = info.describe()
                row["selected"] = selected is None or name in selected or name == "core"
                row.update(hub.registry.contributions(name))
                rows.append(row)
    if not discover():
        print("hub: no plugins installed besides the core (entry-point group hub.plugins)", file=sys.stderr)
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    for row in rows:
        head = f"{row['name']} {row.get('version') or ''}".strip()
        origin = row.get("distribution") or "built in"
        flags = [] if row.get("selected", True) else ["not selected"]
        if row.get("status") == "failed":
            flags.append(f"FAILED: {row['error']}")
        print(f"{head}  ({origin}){'  [' + '; '.join(flags) + ']' if flags else ''}")
        for kind in ("tools", "resources", "prompts"):
            if row.get(kind):
                print(f"  {kind}: {', '.join(row[kind])}")


async def _budget(config: HubConfig, action: str, as_json: bool) -> None:
    """`hub budget [show|reset]`: read (or reset) the ledger in the store, no plugin loaded."""
    from hub.budget import Budget
    from hub.store import Store

    config.state_dir.mkdir(parents=True, exist_ok=True)
    store = Store(config.state_dir / "hub.sqlite")
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
    limit = "no limit" if summary["limit_usd"] is None else f"${summary['limit_usd']:,.2f}"
    since = summary["period_started"] or "the beginning"
    print(f"limit: {limit} per {summary['period'] if summary['period'] != 'total' else 'all time'}")
    print(
        f"period: {summary['period']}, counting since {since}"
        + (f", next from {summary['next_period']}" if summary["next_period"] else "")
    )
    print(
        f"spent: ${summary['spent_usd']:,.4f}   reserved: ${summary['reserved_usd']:,.4f}"
        + ("" if summary["remaining_usd"] is None else f"   remaining: ${summary['remaining_usd']:,.4f}")
    )
    for plugin in sorted(set(summary["spent_by_plugin"]) | set(summary["reserved_by_plugin"])):
        spent = summary["spent_by_plugin"].get(plugin, 0.0)
        held = summary["reserved_by_plugin"].get(plugin, 0.0)
        print(f"  {plugin}: spent ${spent:,.4f}, reserved ${held:,.4f}")
    print(f"spent in all periods: ${summary['spent_all_time_usd']:,.4f}")


def _print_config(config: HubConfig) -> None:
    from hub.plugins import load_plugins

    data = config.masked()
    _, infos = load_plugins(config, extra={})
    tables: dict[str, Any] = {}
    for name, info in infos.items():
        if info.config is not None:
            tables[name] = info.config.model_dump(mode="json")
    data["plugins"] = {"enabled": config.plugins.enabled, **tables}
    data["source"] = config.source
    data["files"] = {scope: path for scope, path in config.scopes}
    data["set_by"] = dict(sorted(config.origins.items()))  # which file, variable or option set each key
    print(json.dumps(data, indent=2))


def _light_state_dir(args: argparse.Namespace) -> Path:
    """The state directory, found without pydantic, by the one precedence the full configuration
    uses too (`hub.paths.resolve_state_dir`). `ValueError` if a hub.toml cannot be read."""
    from hub.paths import config_files, resolve_state_dir

    state_dir, _ = resolve_state_dir(
        flag=getattr(args, "state_dir", None),
        overrides=list(args.overrides),
        environ=os.environ,
        files=config_files(args.config, os.environ),
    )
    if not isinstance(state_dir, Path):
        raise ValueError(f"state_dir must be a path (got {state_dir!r})")
    return state_dir


def _common_argv(args: argparse.Namespace) -> list[str]:
    """The configuration options given, as arguments again (for the shared process)."""
    argv: list[str] = []
    for flag, attr in (
        ("--config", "config"),
        ("--plugins", "plugins"),
        ("--budget-usd", "budget_usd"),
        ("--state-dir", "state_dir"),
        ("--log-format", "log_format"),
        ("--log-level", "log_level"),
    ):
        value = getattr(args, attr, None)
        if value is not None:
            argv += [flag, str(Path(value).resolve()) if attr in ("config", "state_dir") else str(value)]
    for override in getattr(args, "overrides", []):
        argv += ["--set", override]
    return argv


def _bridge(args: argparse.Namespace) -> int:
    """`hub serve` over stdio: bridge to the shared hub process of this launch (hub.bridge)."""
    from hub.bridge import Launch, run_bridge
    from hub.paths import config_files

    if _no_input():
        return 0  # no client: nothing to serve, and no reason to start a shared process
    if os.isatty(0):
        from hub.transport import TTY_HINT

        print(TTY_HINT, file=sys.stderr, flush=True)
    try:
        state_dir = _light_state_dir(args)
        files = config_files(args.config, os.environ).paths
        launch = Launch(_common_argv(args), os.environ, state_dir, files)
    except (OSError, ValueError) as exc:
        print(f"hub: {exc}", file=sys.stderr)
        return 2
    daemon_argv = ["shared", "--key", launch.key, "--socket", str(launch.socket_path), *launch.argv]
    cache = None
    if os.environ.get("HUB_FAST_START", "1") != "0":
        from hub import fastfront

        fingerprint = fastfront.fingerprint(__version__, ["bridge", *launch.argv], os.environ, files)
        cache = fastfront.AnswerCache(state_dir / fastfront.FILE_NAME, fingerprint)
    return run_bridge(launch, daemon_argv, cache)


def _status(args: argparse.Namespace) -> int:
    """`hub status`: the shared processes of this state directory, from the store."""
    import sqlite3

    from hub.instances import Instance
    from hub.shared import describe

    try:
        database = _light_state_dir(args) / "hub.sqlite"
    except ValueError as exc:
        print(f"hub status: {exc}", file=sys.stderr)
        return 2
    rows: list[Any] = []
    if database.exists():
        try:
            conn = sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=2)
            conn.row_factory = sqlite3.Row
            try:
                rows = conn.execute(
                    "SELECT * FROM hub_instances WHERE share_key IS NOT NULL AND stopped_at IS NULL"
                ).fetchall()
            finally:
                conn.close()
        except sqlite3.Error:
            rows = []
    shared = [describe(i) for i in (Instance.from_row(r) for r in rows) if i.alive()]
    if args.json:
        print(json.dumps(shared, indent=2))
    elif not shared:
        print("no shared hub process is running for this state directory")
    else:
        for entry in shared:
            print(
                f"pid {entry['pid']}  key {entry['key']}  sessions {entry['sessions']}  "
                f"up {entry['uptime_s']:.0f} s  rss {entry['rss_mb']} MB  cwd {entry['cwd']}"
            )
    return 0


def _statusline(args: argparse.Namespace) -> int:
    """The status line, without loading the SDK, pydantic or any plugin (a SQLite read)."""
    from hub.statusline import read_lines

    try:
        path = _light_state_dir(args)
    except ValueError as exc:
        print(f"hub statusline: {exc}", file=sys.stderr)
        return 2
    lines = read_lines(path / "hub.sqlite")
    if lines:
        print(" | ".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
