"""What every command shares: the configuration options (`add_common`), the configuration they
give (`config_from`), the state directory found without pydantic (`light_state_dir`) and the
options again as arguments for a process the command starts (`common_argv`)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hub.errors import ConfigError

if TYPE_CHECKING:
    from hub.config.settings import HubConfig

__all__ = ["add_common", "common_argv", "config_from", "indent", "light_state_dir", "light_state_url"]


def add_common(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    """The configuration options, on the top-level parser and (`suppress`: not overriding what
    was given before the command) on each command's."""
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


def config_from(args: argparse.Namespace) -> HubConfig:
    """The effective configuration for the options given (`ConfigError` names what is wrong)."""
    from hub.config.load import load_config

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
    try:
        return load_config(
            args.config,
            overrides=list(args.overrides),
            plugins=args.plugins,
            budget_usd=args.budget_usd,
            flags=flags,
        )
    except ConfigError as exc:
        raise ConfigError(_with_plugin_problems(exc)) from None


def _with_plugin_problems(exc: ConfigError) -> str:
    """The configuration's problems, and the plugins' own (their tables, their server keys), all
    at once: a typo under [budget] must not hide one under [plugins.pool]."""
    partial = getattr(exc, "partial", None)
    if partial is None:
        return str(exc)
    from hub.plugin.manager import load_plugins

    try:
        load_plugins(partial, extra={})
    except ConfigError as more:
        return f"{exc}\n{more}"
    except Exception:  # a plugin that cannot even load is reported once the configuration is fixed
        pass
    return str(exc)


def light_state_dir(args: argparse.Namespace) -> Path:
    """The state directory, found without pydantic, by the one precedence the full configuration
    uses too (`hub.config.paths.resolve_state_dir`). `ValueError` if a hub.toml cannot be read."""
    from hub.config.paths import config_files, resolve_state_dir

    state_dir, _ = resolve_state_dir(
        flag=getattr(args, "state_dir", None),
        overrides=list(args.overrides),
        environ=os.environ,
        files=config_files(args.config, os.environ),
    )
    if not isinstance(state_dir, Path):
        raise ValueError(f"state_dir must be a path (got {state_dir!r})")
    return state_dir


def light_state_url(args: argparse.Namespace) -> str | None:
    """The PostgreSQL URL of the store, found without pydantic (None: SQLite under the state
    directory). `ValueError` if a hub.toml cannot be read or a ${VAR} in the URL is unset."""
    from hub.config.paths import config_files, resolve_state_url

    return resolve_state_url(
        overrides=list(getattr(args, "overrides", [])),
        environ=os.environ,
        files=config_files(args.config, os.environ),
    )


def common_argv(args: argparse.Namespace) -> list[str]:
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


def indent(text: str) -> str:
    return "\n".join(f"  {line}" for line in text.splitlines())
