"""`hub config`: the effective configuration as JSON, secrets masked, with which file, variable
or option set each key."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from hub.cli.options import add_common, config_from

if TYPE_CHECKING:
    from hub.config.settings import HubConfig

__all__ = ["add_parser", "run"]


def add_parser(commands: Any) -> None:
    parser = commands.add_parser("config", help="print the effective configuration (secrets masked)")
    add_common(parser, suppress=True)


def run(args: argparse.Namespace) -> int:
    print_config(config_from(args))
    return 0


def store_in_use(config: HubConfig) -> dict[str, Any]:
    """Which store the hub uses: PostgreSQL at `state_url` (password masked), or the SQLite file."""
    from hub.config.settings import mask_secrets

    if config.state_url:
        return {
            "backend": "postgresql",
            "url": mask_secrets(config.state_url),
            "set_by": config.origin_of("state_url"),
        }
    return {"backend": "sqlite", "path": str(config.state_dir / "hub.sqlite")}


def print_config(config: HubConfig) -> None:
    """The configuration as JSON, each plugin's table included, every secret in it masked by one
    rule (`hub.config.settings.mask_secrets`: SecretStr fields, secret-looking keys, the values
    of every `env` and `headers` table, token-like text)."""
    from hub.config.settings import mask_secrets
    from hub.plugin.manager import load_plugins

    data = config.masked()
    _, infos = load_plugins(config, extra={})
    tables: dict[str, Any] = {}
    for name, info in infos.items():
        if info.config is not None:
            tables[name] = mask_secrets(info.config.model_dump(mode="json"))
    data["plugins"] = {"enabled": config.plugins.enabled, **tables}
    data["store"] = store_in_use(config)
    data["source"] = config.source
    data["files"] = {scope: path for scope, path in config.scopes}
    data["set_by"] = dict(sorted(config.origins.items()))  # which file, variable or option set each key
    print(json.dumps(data, indent=2))
