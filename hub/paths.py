"""Where the hub looks for hub.toml and keeps its state (no heavy imports: `hub statusline` uses it)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path


def default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "hub"


def find_config_file(explicit: str | os.PathLike[str] | None, environ: Mapping[str, str]) -> Path | None:
    """`--config`, else `HUB_CONFIG`, else `./hub.toml`, else `$XDG_CONFIG_HOME/hub/hub.toml`."""
    if explicit:
        return Path(explicit).expanduser()
    if environ.get("HUB_CONFIG"):
        return Path(environ["HUB_CONFIG"]).expanduser()
    local = Path("hub.toml")
    if local.is_file():
        return local
    xdg = Path(environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "hub" / "hub.toml"
    return xdg if xdg.is_file() else None
