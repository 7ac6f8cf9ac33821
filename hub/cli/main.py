"""`hub`: parse the command line and run one command (`hub.cli.<command>.run`), turning the
errors a user can fix into one line and an exit code: 2 for configuration and for a store that
cannot be used (full, read-only, damaged, gone), 1 for a plugin that cannot load or a port that
cannot be listened on, 130 for Ctrl-C.

Every command module has `add_parser(commands)` and `run(args) -> int`; heavy modules (the MCP
SDK, pydantic, anyio) are imported inside `run`, so `hub statusline`, which Claude Code runs on
every status-line refresh, starts fast.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from types import ModuleType

from hub import __version__
from hub.cli import (
    budget,
    config,
    dashboard,
    plugins,
    serve,
    servers,
    shared,
    status,
    statusline,
    stop,
    worker,
)
from hub.cli.options import add_common, indent

__all__ = ["build_parser", "main"]

COMMANDS: dict[str, ModuleType] = {
    "serve": serve,
    "status": status,
    "stop": stop,
    "plugins": plugins,
    "config": config,
    "servers": servers,
    "budget": budget,
    "statusline": statusline,
    "worker": worker,
    "dashboard": dashboard,
}

EPILOG = """\
commands:
  serve      run the MCP server (the default when no command is given); over stdio, a bridge to
             the one shared hub process of this launch (--no-share or HUB_SHARE=0: in-process)
  status     list the shared hub processes of this state directory: sessions, work, idle timer
  stop       stop the shared hub process of this launch (--all: every one; --force: even if busy)
  plugins    list installed plugins: version, distribution, what each registers
  config     print the effective configuration, secrets masked, and which file set each key
  servers    import (from .mcp.json), list and check the downstream servers
  budget     show the budget of this period (limit, spent, reserved, by plugin); `budget reset`
  statusline print one line for Claude Code's status line (e.g. "batch: 1 pending, 4 done, 0 failed")
  worker     take queued work from the store (pool tasks queued by any hub), serving no MCP client;
             with a PostgreSQL state_url, on any machine (--slots N)
  dashboard  serve a live page: pool slots and queue, batch jobs, budget and spend chart, servers

configuration, lowest precedence first: defaults, the user's hub.toml ($XDG_CONFIG_HOME/hub/hub.toml,
default ~/.config/hub/hub.toml), the project's (--config, HUB_CONFIG, else ./hub.toml; tables
merged key by key, the project winning), HUB_* variables (HUB_PLUGINS, HUB_STATE_DIR, HUB_STATE_URL,
HUB_LOG_FORMAT, HUB_LOG_LEVEL, HUB_BUDGET_USD, HUB_HTTP_TOKEN, or any key as HUB_TABLE__KEY),
then --set and the flags. Any key can be set with --set, e.g. --set plugins.pool.slots=4
--set budget.limit_usd=10. `hub config` shows which file, variable or option set each key.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hub",
        description="One MCP server hosting plugins: slot pool, batch jobs, batch_execute and proxied servers.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", "-V", action="version", version=f"hub {__version__}")
    add_common(parser, suppress=False)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMANDS.values():
        module.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["shared"]:  # started by a bridge: a parser of its own, not listed in --help
        args = shared.build_parser().parse_args(argv[1:])
        command = shared
    else:
        args = build_parser().parse_args(argv)
        command = COMMANDS[args.command or "serve"]
    return run(command, args)


def run(command: ModuleType, args: argparse.Namespace) -> int:
    """`command.run(args)`, with the errors a user can fix said in one line."""
    from hub.errors import ConfigError, ListenError, PluginLoadError, StoreError

    user_facing = ConfigError | PluginLoadError | ListenError | StoreError

    try:
        try:
            code: int = command.run(args)
            return code
        except BaseExceptionGroup as group:
            # Errors raised inside task groups arrive wrapped; report the user-facing one plainly.
            match = group.subgroup(lambda e: isinstance(e, user_facing))
            if match is None:
                raise
            raise _first_leaf(match) from group
    except ConfigError as exc:
        print(f"hub: config error:\n{indent(str(exc))}", file=sys.stderr)
        return 2
    except StoreError as exc:
        print(f"hub: {exc}", file=sys.stderr)
        return 2
    except (PluginLoadError, ListenError) as exc:
        print(f"hub: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _first_leaf(group: BaseException) -> BaseException:
    while isinstance(group, BaseExceptionGroup):
        group = group.exceptions[0]
    return group


if __name__ == "__main__":
    raise SystemExit(main())
