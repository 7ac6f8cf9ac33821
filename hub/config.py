"""The hub's typed configuration: `hub.toml`, `HUB_*` variables and command-line overrides.

Layers, lowest first: built-in defaults, the TOML file, environment variables, `--set` and the
dedicated flags. Each layer is a plain dict merged into the one below; the result is validated
once by pydantic, and every problem is reported as ``FILE: dotted.key: problem``.

`[plugins.NAME]` tables are kept raw here and validated by each plugin's own model when the
plugin loads (see `hub.plugins`), because only the plugin knows its settings.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from hub.paths import default_state_dir, find_config_file

__all__ = [
    "BudgetConfig",
    "ConfigError",
    "HttpConfig",
    "HubConfig",
    "ServerConfig",
    "expand_vars",
    "find_config_file",
    "format_validation_error",
    "load_config",
]

SECRET_MASK = "***"


class ConfigError(Exception):
    """A configuration problem the user must fix; the message names file, key and problem."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BudgetConfig(_Strict):
    """`[budget]`: the one spending cap shared by every plugin."""

    limit_usd: float | None = Field(default=None, ge=0, description="Total USD cap; unset means no cap.")


class HttpConfig(_Strict):
    """`[http]`: settings for `hub serve --transport http`."""

    host: str = "127.0.0.1"
    port: int = Field(default=8765, ge=0, le=65535)
    path: str = "/mcp"
    token: SecretStr | None = Field(
        default=None, description="Bearer token clients must send; required for a non-loopback host."
    )


class ServerConfig(_Strict):
    """`[servers.NAME]`: a downstream MCP server, reached over stdio or streamable HTTP.

    Strings may use ``${VAR}`` and ``${VAR:-default}``; they are expanded when the server is
    started, never stored expanded, so `hub config` shows what the user wrote.
    """

    command: str | None = None
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    cwd: str | None = None
    url: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    idle_timeout_s: float = Field(
        default=300.0, gt=0, description="Close the connection after this long unused."
    )
    startup_timeout_s: float = Field(
        default=30.0, gt=0, description="Give up on a server that takes longer to start."
    )
    # How the proxy plugin serves this server (ignored when the proxy plugin is not loaded).
    expose: bool = Field(default=True, description="Serve this server's tools through the hub.")
    eager: bool = Field(
        default=False,
        description="Start at hub start instead of on first use, and restart (with backoff) when it dies.",
    )
    prefix: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9_-]{1,50}$",
        description="Tool name prefix; default: the server name.",
    )
    include: list[str] | None = Field(default=None, description="Serve only these downstream tools.")
    exclude: list[str] = Field(default_factory=list, description="Never serve these downstream tools.")
    validate_output: bool = Field(
        default=False,
        description="Check this server's tool results against their output schema (default: passed through as is).",
    )

    @model_validator(mode="after")
    def _one_transport(self) -> ServerConfig:
        if (self.command is None) == (self.url is None):
            raise ValueError("set exactly one of 'command' (stdio) or 'url' (streamable HTTP)")
        if self.url is not None and (self.args or self.env or self.cwd):
            raise ValueError("'args', 'env' and 'cwd' apply to stdio servers only; this one has a 'url'")
        if self.command is not None and self.headers:
            raise ValueError("'headers' apply to HTTP servers only; this one has a 'command'")
        return self

    @property
    def transport(self) -> Literal["stdio", "http"]:
        return "stdio" if self.command is not None else "http"


class PluginsConfig(BaseModel):
    """`plugins = [...]`, or `[plugins]` with `enabled = [...]` and one `[plugins.NAME]` table each.

    TOML cannot hold both `plugins = [...]` and `[plugins.pool]`, so a file with plugin tables
    selects plugins with `enabled` inside the `[plugins]` table instead.
    """

    model_config = ConfigDict(extra="allow")

    enabled: list[str] | None = None

    @model_validator(mode="before")
    @classmethod
    def _list_means_enabled(cls, value: Any) -> Any:
        if isinstance(value, list):
            return {"enabled": value}
        return value

    @field_validator("enabled")
    @classmethod
    def _names(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        return [name.strip() for name in value if name.strip()]

    def tables(self) -> dict[str, Any]:
        """The raw `[plugins.NAME]` tables, keyed by plugin name."""
        return dict(self.model_extra or {})


class HubConfig(_Strict):
    """The whole of `hub.toml`."""

    state_dir: Path = Field(default_factory=default_state_dir, description="Where hub.sqlite lives.")
    log_format: Literal["console", "json"] = "console"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    plugins: PluginsConfig = Field(default_factory=PluginsConfig)
    budget: BudgetConfig = Field(default_factory=BudgetConfig)
    context: dict[str, str] = Field(default_factory=dict, description="Context entries written at start.")
    servers: dict[str, ServerConfig] = Field(default_factory=dict)
    http: HttpConfig = Field(default_factory=HttpConfig)
    source: str = Field(default="(defaults)", exclude=True, description="Where this config came from.")
    origins: dict[str, str] = Field(
        default_factory=dict,
        exclude=True,
        description="Keys set by the environment or command line, and by what.",
    )

    @field_validator("servers")
    @classmethod
    def _server_names(cls, value: dict[str, ServerConfig]) -> dict[str, ServerConfig]:
        for name in value:
            if not re.fullmatch(r"[A-Za-z0-9_-]{1,32}", name):
                raise ValueError(f"server name {name!r} must be 1-32 letters, digits, '_' or '-'")
        return value

    def masked(self) -> dict[str, Any]:
        """The effective config as JSON-ready data with every secret replaced by ``***``."""
        data = self.model_dump(mode="json")
        data["http"]["token"] = SECRET_MASK if self.http.token else None
        for server in data["servers"].values():
            server["env"] = {key: SECRET_MASK for key in server["env"]}
            server["headers"] = {key: SECRET_MASK for key in server["headers"]}
        return data


# --- ${VAR} expansion, as Claude Code does for .mcp.json -------------------------------------

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-(.*?))?\}")


def expand_vars(text: str, environ: Mapping[str, str], *, where: str) -> str:
    """Expand ``${VAR}`` and ``${VAR:-default}`` in `text`; an unset VAR without default is an error."""

    def substitute(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        value = environ.get(name)
        if value is None or (value == "" and default is not None):
            if default is None:
                raise ConfigError(
                    f"{where}: environment variable {name} is not set (write ${{{name}:-default}})"
                )
            return default
        return value

    return _VAR.sub(substitute, text)


# --- loading -----------------------------------------------------------------------------------


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None


def parse_value(text: str) -> Any:
    """A `--set` value: any TOML value (`4`, `true`, `[\"a\"]`, `\"x\"`), else the bare string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    """Set `a.b.c = value` inside nested dicts, creating tables on the way."""
    keys = dotted.split(".")
    if not all(keys):
        raise ConfigError(f"--set {dotted}: empty key")
    node = data
    for i, key in enumerate(keys[:-1]):
        child = node.setdefault(key, {})
        if key == "plugins" and i == 0 and isinstance(child, list):
            child = node["plugins"] = {"enabled": child}
        if not isinstance(child, dict):
            raise ConfigError(f"--set {dotted}: {'.'.join(keys[: i + 1])} is not a table")
        node = child
    node[keys[-1]] = value


def _split_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    overrides: list[str] | None = None,
    plugins: str | None = None,
    budget_usd: float | None = None,
    environ: Mapping[str, str] | None = None,
) -> HubConfig:
    """Build the effective config. Raises `ConfigError` naming the file, key and problem.

    `overrides` are ``dotted.key=value`` strings (`--set`); `plugins` is a comma list
    (`--plugins`); `budget_usd` is `--budget-usd`.
    """
    env = os.environ if environ is None else environ
    file = find_config_file(path, env)
    data: dict[str, Any] = _read_toml(file) if file else {}
    source = str(file) if file else "(defaults)"
    origins: dict[str, str] = {}

    def put(key: str, value: Any, origin: str) -> None:
        set_dotted(data, key, value)
        origins[key] = origin

    # Environment layer.
    for var, key in (
        ("HUB_STATE_DIR", "state_dir"),
        ("HUB_LOG_FORMAT", "log_format"),
        ("HUB_LOG_LEVEL", "log_level"),
    ):
        if env.get(var):
            put(key, env[var], var)
    if env.get("HUB_BUDGET_USD"):
        put("budget.limit_usd", parse_value(env["HUB_BUDGET_USD"]), "HUB_BUDGET_USD")
    if env.get("HUB_PLUGINS") is not None and plugins is None:
        put("plugins.enabled", _split_list(env["HUB_PLUGINS"]), "HUB_PLUGINS")

    # Command-line layer.
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ConfigError(f"--set {item}: expected KEY=VALUE, e.g. --set plugins.pool.slots=4")
        put(key.strip(), parse_value(raw.strip()), "--set")
    if plugins is not None:
        put("plugins.enabled", _split_list(plugins), "--plugins")
    if budget_usd is not None:
        put("budget.limit_usd", budget_usd, "--budget-usd")

    try:
        config = HubConfig.model_validate({**data, "source": source, "origins": origins})
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source, origins=origins)) from None
    return config


def _origin(key: str, source: str, origins: Mapping[str, str]) -> str:
    """What set `key` (or the table holding it): a command-line option, a variable, or the file."""
    parts = key.split(".")
    for end in range(len(parts), 0, -1):
        origin = origins.get(".".join(parts[:end]))
        if origin is not None:
            return origin
    return source


def format_validation_error(
    exc: ValidationError, source: str, prefix: str = "", origins: Mapping[str, str] | None = None
) -> str:
    """One line per problem: ``FILE: dotted.key: message (got VALUE)`` (FILE is ``--set`` or the
    variable's name when that is what set the key)."""
    lines = []
    for error in exc.errors():
        loc = ".".join(str(part) for part in error["loc"] if not str(part).startswith("function-"))
        key = ".".join(part for part in (prefix, loc) if part) or "(top level)"
        if error["type"] == "extra_forbidden":
            message = "unknown key"
        else:
            message = error["msg"].removeprefix("Value error, ")
            if (
                error["type"] not in ("missing",)
                and "input" in error
                and not isinstance(error["input"], dict)
            ):
                shown = repr(error["input"])
                message += f" (got {shown[:60]}{'...' if len(shown) > 60 else ''})"
        lines.append(f"{_origin(key, source, origins or {})}: {key}: {message}")
    return "\n".join(lines)
