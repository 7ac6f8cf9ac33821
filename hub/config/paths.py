"""Where the hub looks for hub.toml and keeps its state (no heavy imports: `hub statusline` uses it).

Two config scopes, as Claude Code has user and project MCP scopes: the user's
`$XDG_CONFIG_HOME/hub/hub.toml` (default `~/.config/hub/hub.toml`) and the project's file
(`--config`, else `HUB_CONFIG`, else `./hub.toml`). Both are read; the project's wins key by key.

`resolve_state_dir` is the one place the state directory is decided, with one precedence, for
`hub statusline`, the fast-start cache and the full configuration alike.

What the hub keeps (the store with prompts and outputs, logs, results, sockets) is private to the
user whatever the umask: `private_dir` makes 0700 directories and `open_private` 0600 files. The
hub never sets a process umask, which its children (pool workers, downstream servers) would
inherit and apply to the files they write in the user's project.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "ConfigFiles",
    "config_files",
    "default_state_dir",
    "find_config_file",
    "open_private",
    "parse_value",
    "private_dir",
    "resolve_state_dir",
    "user_config_file",
]


def default_state_dir(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    base = env.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "hub"


def user_config_file(environ: Mapping[str, str]) -> Path:
    """The user scope: `$XDG_CONFIG_HOME/hub/hub.toml`, default `~/.config/hub/hub.toml`."""
    return Path(environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "hub" / "hub.toml"


class ConfigFiles:
    """The config files in effect, lowest precedence first: the user's, then the project's."""

    def __init__(self, user: Path | None, project: Path | None) -> None:
        self.user = user
        self.project = project

    def in_order(self) -> list[tuple[str, Path]]:
        """(scope, path) pairs, lowest precedence first."""
        pairs: list[tuple[str, Path]] = []
        if self.user is not None:
            pairs.append(("user", self.user))
        if self.project is not None:
            pairs.append(("project", self.project))
        return pairs

    @property
    def paths(self) -> list[Path]:
        return [path for _, path in self.in_order()]


def config_files(explicit: str | os.PathLike[str] | None, environ: Mapping[str, str]) -> ConfigFiles:
    """The project file (`--config`, else `HUB_CONFIG`, else `./hub.toml`; an explicit one need not
    exist, so that loading it says so) and the user file when it exists and is another file."""
    project: Path | None = None
    if explicit:
        project = Path(explicit).expanduser()
    elif environ.get("HUB_CONFIG"):
        project = Path(environ["HUB_CONFIG"]).expanduser()
    elif Path("hub.toml").is_file():
        project = Path("hub.toml")
    user = user_config_file(environ)
    if not user.is_file() or (project is not None and _same_file(user, project)):
        return ConfigFiles(None, project)
    return ConfigFiles(user, project)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


def find_config_file(explicit: str | os.PathLike[str] | None, environ: Mapping[str, str]) -> Path | None:
    """The file with the highest precedence: the project's, else the user's."""
    files = config_files(explicit, environ)
    return files.project or files.user


def parse_value(text: str) -> Any:
    """A `--set` value: any TOML value (`4`, `true`, `[\"a\"]`, `\"x\"`), else the bare string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def resolve_state_dir(
    *,
    flag: str | None,
    overrides: Sequence[str],
    environ: Mapping[str, str],
    files: ConfigFiles,
) -> tuple[Any, str]:
    """The state directory and what set it, by the hub's one precedence: `--state-dir`, then
    `--set state_dir=…` (the last one), then `HUB_STATE_DIR`, then the project's hub.toml, then the
    user's, then the default. A value of the wrong type is returned as is, for validation to name.

    Raises `ValueError` if a hub.toml cannot be read or parsed.
    """
    if flag:
        return Path(flag).expanduser(), "--state-dir"
    for override in reversed(overrides):
        key, sep, value = override.partition("=")
        if sep and key.strip() == "state_dir":
            parsed = parse_value(value.strip())
            return (Path(parsed).expanduser() if isinstance(parsed, str) else parsed), "--set"
    if environ.get("HUB_STATE_DIR"):
        return Path(environ["HUB_STATE_DIR"]).expanduser(), "HUB_STATE_DIR"
    for _, path in reversed(files.in_order()):
        try:
            data = tomllib.loads(path.read_text())
        except FileNotFoundError:
            continue
        except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"cannot read {path}: {exc}") from None
        if "state_dir" in data:
            value = data["state_dir"]
            return (Path(value).expanduser() if isinstance(value, str) else value), str(path)
    return default_state_dir(environ), "(defaults)"


def resolve_state_url(
    *, overrides: Sequence[str], environ: Mapping[str, str], files: ConfigFiles
) -> str | None:
    """The store's PostgreSQL URL (``${VAR}`` expanded) by the same precedence as the state
    directory: `--set state_url=…`, `HUB_STATE_URL`, the project's hub.toml, the user's; None:
    SQLite. Raises `ValueError` if a hub.toml cannot be read or a variable is unset."""
    from hub.config.expand import expand_vars
    from hub.errors import ConfigError

    found: Any = None
    for override in reversed(overrides):
        key, sep, value = override.partition("=")
        if sep and key.strip() == "state_url":
            found = parse_value(value.strip())
            break
    else:
        if environ.get("HUB_STATE_URL"):
            found = environ["HUB_STATE_URL"]
        else:
            for _, path in reversed(files.in_order()):
                try:
                    data = tomllib.loads(path.read_text())
                except FileNotFoundError:
                    continue
                except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
                    raise ValueError(f"cannot read {path}: {exc}") from None
                if "state_url" in data:
                    found = data["state_url"]
                    break
    if not isinstance(found, str) or not found.strip():
        return None
    try:
        return expand_vars(found, environ, where="state_url") or None
    except ConfigError as exc:
        raise ValueError(str(exc)) from None


def private_dir(path: Path) -> Path:
    """`path` as a directory only this user can enter (0700), created with its parents if missing;
    an existing one of this user's with wider permissions is narrowed. `OSError` if it cannot be."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = path.stat()
    if info.st_uid == os.getuid() and info.st_mode & 0o077:
        os.chmod(path, 0o700)
    return path


def open_private(path: Path, flags: int = os.O_WRONLY | os.O_CREAT | os.O_APPEND) -> int:
    """A descriptor of `path` opened with `flags`, created 0600 if missing, and narrowed to 0600
    if it is this user's and wider (a file an older hub made under umask 022)."""
    fd = os.open(path, flags | os.O_CLOEXEC, 0o600)
    try:
        info = os.fstat(fd)
        if info.st_uid == os.getuid() and info.st_mode & 0o077:
            os.fchmod(fd, 0o600)
    except OSError:
        os.close(fd)
        raise
    return fd
