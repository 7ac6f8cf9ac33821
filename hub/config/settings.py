"""The hub's typed configuration: `hub.toml` (user and project scopes), `HUB_*` variables and the
command line, as one `pydantic_settings.BaseSettings`.

Sources, lowest precedence first (pydantic-settings merges them table by table, key by key):

1. the user's `~/.config/hub/hub.toml` (`$XDG_CONFIG_HOME`), then the project's `./hub.toml`
   (or `--config` / `HUB_CONFIG`): `TomlConfigSettingsSource`, one per file;
2. the environment: `HUB_<KEY>` with `__` between nested keys (`HUB_BUDGET__LIMIT_USD`,
   `HUB_SERVERS__FS__COMMAND`), plus the short names `HUB_PLUGINS` (a comma list),
   `HUB_BUDGET_USD` and `HUB_HTTP_TOKEN` (`HubEnvSource`);
3. the command line: `--set dotted.key=VALUE` and the dedicated flags (init values).

Every problem is reported as ``SOURCE: dotted.key: problem`` where SOURCE is the file, the
variable or the option that set the key (`origins`). `[plugins.NAME]` tables are kept raw here and
validated by each plugin's own model when it loads (see `hub.plugin.manager`); so are the keys a
plugin adds to `[servers.NAME]` (`hub_server_config_model`, checked by
`hub.config.load.check_server_keys`). Loading is `hub.config.load.load_config`.
"""

from __future__ import annotations

import builtins
import difflib
import json
import os
import re
import tomllib
from collections.abc import Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from hub.config.paths import default_state_dir, parse_value
from hub.errors import ConfigError

__all__ = [
    "SERVER_NAME",
    "BudgetConfig",
    "DaemonConfig",
    "HttpConfig",
    "HubConfig",
    "LimitsConfig",
    "LivenessConfig",
    "OAuthConfig",
    "PluginsConfig",
    "ServerConfig",
    "TelemetryConfig",
    "ToolsConfig",
    "mask_secrets",
    "origin_of",
]

SECRET_MASK = "***"
# A `[servers.NAME]` name: what Claude Code's `mcp__NAME__` prefixes and TOML keys take without quoting.
SERVER_NAME = re.compile(r"[A-Za-z0-9_-]{1,32}")
SERVER_NAME_RULE = "1-32 letters, digits, '_' or '-'"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BudgetConfig(_Strict):
    """`[budget]`: the one spending cap shared by every plugin."""

    limit_usd: float | None = Field(
        default=None,
        ge=0,
        le=1_000_000_000,
        description="USD cap per period (at most $1e9); unset means no cap.",
    )
    period: Literal["total", "day", "week", "month"] = Field(
        default="total",
        description="When the cap starts again: never (total), or each local day, week (Monday) or month.",
    )


class HttpConfig(_Strict):
    """`[http]`: settings for `hub serve --transport http`."""

    host: str = "127.0.0.1"
    port: int = Field(default=8765, ge=0, le=65535)
    path: str = "/mcp"
    token: SecretStr | None = Field(
        default=None, description="Bearer token clients must send; required for a non-loopback host."
    )


class DaemonConfig(_Strict):
    """`[daemon]`: the shared hub process that `hub serve` bridges to over stdio (`hub.launch.bridge`)."""

    idle_exit_s: float = Field(
        default=600.0,
        ge=0,
        le=7 * 24 * 3600,
        description="Exit after this long with no session connected and no work in progress.",
    )


class LimitsConfig(_Strict):
    """`[limits]`: what one client or one burst may take of the hub."""

    max_line_bytes: int = Field(
        default=4 * 1024 * 1024,
        ge=1024,
        le=1 << 31,
        description="Largest request message read over stdio or the shared process's socket (bytes); "
        "a longer one is answered with an error, never held in memory (the MCP SDK caps HTTP bodies "
        "at 4 MB, the default here too).",
    )
    starting_servers: int = Field(
        default=8,
        ge=1,
        le=10_000,
        description="Downstream servers started at once (to learn their tools, or on first use); "
        "the others wait their turn.",
    )


class ToolsConfig(_Strict):
    """`[tools]`: which tools the hub lists to its clients (`hub.server.discovery`). Every tool
    stays callable whatever is listed."""

    expose: Literal["all", "search", "auto"] = Field(
        default="all",
        description="all: list every tool; search: list find_tools, call_tool and `always` only; "
        "auto: all while the whole list stays under max_list_bytes, else search.",
    )
    always: list[str] = Field(
        default_factory=list,
        description="Tools listed in search mode too, marked for Claude Code to load on every turn "
        "(anthropic/alwaysLoad).",
    )
    max_list_bytes: int = Field(
        default=16_384,
        ge=0,
        le=100_000_000,
        description="auto: the size of the whole tools/list (compact JSON) above which it is search.",
    )


class LivenessConfig(_Strict):
    """`[liveness]`: how hubs and pool workers sharing one store tell who is alive. On one machine
    a dead process is seen at once (its pid); on another, by a heartbeat that stopped."""

    heartbeat_s: float = Field(
        default=2.0, ge=0.1, le=60, description="How often each hub and worker writes its heartbeat."
    )
    dead_after_s: float = Field(
        default=30.0,
        ge=1,
        le=3600,
        description="A hub or worker on another machine whose heartbeat is older than this is taken "
        "for dead, and its live work is settled (pool tasks interrupted and charged).",
    )


class TelemetryConfig(_Strict):
    """`[telemetry]`: OpenTelemetry traces and metrics, exported by OTLP (`hub.telemetry`)."""

    enabled: bool | None = Field(
        default=None,
        description="true: export; false: never, whatever OTEL_* says; unset: export when the standard "
        "OTEL_EXPORTER_OTLP_*ENDPOINT or OTEL_TRACES_EXPORTER / OTEL_METRICS_EXPORTER=otlp variables ask.",
    )
    endpoint: str | None = Field(
        default=None,
        description="OTLP/HTTP base URL (e.g. http://127.0.0.1:4318); default: OTEL_EXPORTER_OTLP_ENDPOINT, "
        "else the OTLP default.",
    )
    service_name: str = Field(default="hub", min_length=1, description="The service.name resource attribute.")
    metrics_interval_s: float = Field(
        default=60.0, ge=1, le=86_400, description="How often metrics are exported."
    )


_M = TypeVar("_M", bound=BaseModel)


def _either(name: str, camel: str) -> Any:
    """A key spelt the hub's way or as Claude Code's `.mcp.json` spells it."""
    return AliasChoices(name, camel)


class OAuthConfig(_Strict):
    """`[servers.NAME.oauth]`: how the hub signs in to a remote server with OAuth 2.1 (`hub servers
    login NAME`). Optional: a server that answers 401 with a Bearer challenge is signed in to by
    discovery and registration alone. Claude Code's `.mcp.json` names (`clientId`, `callbackPort`,
    `scopes`) are accepted, so `hub servers import` carries them over."""

    scopes: str | None = Field(
        default=None,
        description="Scopes to ask for, space-separated (default: what the server's metadata says).",
    )
    client_id: str | None = Field(
        default=None,
        validation_alias=_either("client_id", "clientId"),
        description="A client registered with the authorization server by hand, for servers without "
        "dynamic registration.",
    )
    client_secret: SecretStr | None = Field(
        default=None,
        validation_alias=_either("client_secret", "clientSecret"),
        description="That client's secret, if it has one (write ${VAR} rather than the secret).",
    )
    client_metadata_url: str | None = Field(
        default=None,
        validation_alias=_either("client_metadata_url", "clientMetadataUrl"),
        pattern=r"^https://[^/]+/.+",
        description="An https URL of a Client ID Metadata Document to use as client_id where the "
        "authorization server supports it.",
    )
    callback_port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        validation_alias=_either("callback_port", "callbackPort"),
        description="A fixed loopback port for the sign-in redirect (http://127.0.0.1:PORT/callback); "
        "default: any free port.",
    )
    callback_timeout_s: float = Field(
        default=300.0, gt=0, le=3600, description="How long a sign-in waits for the browser."
    )

    @field_validator("scopes", mode="before")
    @classmethod
    def _scope_list(cls, value: Any) -> Any:
        return " ".join(str(v) for v in value) if isinstance(value, list) else value


# The transports of `type`, as `.mcp.json` spells them.
ServerType = Literal["stdio", "http", "streamable-http", "sse"]


class ServerConfig(BaseModel):
    """`[servers.NAME]`: a downstream MCP server, in the shape of an `.mcp.json` entry (`type`,
    `command`, `args`, `env`, `cwd`, `url`, `headers`, `timeout`), plus the hub's keys.

    Strings may use ``${VAR}`` and ``${VAR:-default}``; they are expanded when the server is
    started, never stored expanded, so `hub config` shows what the user wrote.

    Keys a plugin declares with `hub_server_config_model` (the proxy's `expose`, `prefix`, ...)
    are kept as extras and checked against the loaded plugins' models by `check_server_keys`;
    read them with `plugin_settings(Model)`.
    """

    model_config = ConfigDict(extra="allow")

    type: ServerType | None = Field(
        default=None,
        description="stdio, http (= streamable-http) or sse; default: stdio with a command, http with a url.",
    )
    command: str | None = None
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    cwd: str | None = None
    url: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    timeout: float | None = Field(
        default=None,
        gt=0,
        description="Milliseconds, as .mcp.json files carry it: how long the server may take to start "
        "(startup_timeout_s in seconds, which it overrides).",
    )
    idle_timeout_s: float = Field(
        default=300.0, gt=0, le=31_536_000, description="Close the connection after this long unused."
    )
    startup_timeout_s: float = Field(
        default=30.0, gt=0, le=86_400, description="Give up on a server that takes longer to start."
    )
    protocol: Literal["handshake", "auto"] = Field(
        default="handshake",
        description="The protocol era the hub speaks to this server: handshake (initialize, 2025-11-25), "
        "or auto (2026-07-28 when the server answers server/discover, else the handshake).",
    )
    validate_output: bool = Field(
        default=False,
        description="Check this server's tool results against their output schema (default: passed through as is).",
    )
    oauth: OAuthConfig | None = Field(
        default=None, description="OAuth sign-in settings of a remote server (`hub servers login`)."
    )
    headers_helper: str | None = Field(
        default=None,
        validation_alias=_either("headers_helper", "headersHelper"),
        description="A shell command whose output (a JSON object, or `Name: value` lines) gives "
        "headers for a remote server, as Claude Code's headersHelper.",
    )
    bearer_token_env_var: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="The environment variable holding a bearer token for a remote server.",
    )

    @model_validator(mode="after")
    def _one_transport(self) -> ServerConfig:
        if self.command is None and self.url is None:
            # A misspelt 'command' or 'url' is the likely cause: name that key, not the transport.
            for key in self.model_extra or {}:
                close = difflib.get_close_matches(key, ["command", "url"], n=1, cutoff=0.6)
                if close:
                    raise PydanticCustomError(
                        "unknown_key",
                        "unknown key (did you mean '{close}'?)",
                        {"key": key, "close": close[0]},
                    )
        if (self.command is None) == (self.url is None):
            raise ValueError("set exactly one of 'command' (stdio) or 'url' (streamable HTTP)")
        if self.url is not None and (self.args or self.env or self.cwd):
            raise ValueError("'args', 'env' and 'cwd' apply to stdio servers only; this one has a 'url'")
        if self.command is not None and self.headers:
            raise ValueError("'headers' apply to HTTP servers only; this one has a 'command'")
        self._one_way_to_sign_in()
        if self.type == "stdio" and self.command is None:
            raise ValueError("type 'stdio' needs a 'command'")
        if self.type in ("http", "streamable-http", "sse") and self.url is None:
            raise ValueError(f"type {self.type!r} needs a 'url'")
        if self.timeout is not None:
            self.startup_timeout_s = self.timeout / 1000
        return self

    def _one_way_to_sign_in(self) -> None:
        ways = [
            key
            for key, value in (
                ("oauth", self.oauth),
                ("headersHelper", self.headers_helper),
                ("bearer_token_env_var", self.bearer_token_env_var),
            )
            if value is not None
        ]
        if ways and self.command is not None:
            raise ValueError(f"{ways[0]!r} applies to remote (url) servers only; this one has a 'command'")
        if any(key.lower() == "authorization" for key in self.headers):
            ways.append("an Authorization header")
        if len(ways) > 1:
            raise ValueError(f"{' and '.join(ways)} both authenticate to the server; keep one")

    @property
    def signs_in_with_oauth(self) -> bool:
        """Whether the hub uses OAuth for this server: a remote server with no other credentials
        (headers helper, bearer variable or Authorization header) configured."""
        return (
            self.url is not None
            and self.headers_helper is None
            and self.bearer_token_env_var is None
            and not any(key.lower() == "authorization" for key in self.headers)
        )

    @property
    def transport(self) -> Literal["stdio", "http", "sse"]:
        if self.command is not None:
            return "stdio"
        return "sse" if self.type == "sse" else "http"

    def plugin_settings(self, model: builtins.type[_M]) -> _M:
        """This server's keys that `model` (a plugin's `hub_server_config_model`) declares, validated."""
        extra = self.model_extra or {}
        return model.model_validate({key: value for key, value in extra.items() if key in model.model_fields})

    @property
    def plugin_keys(self) -> dict[str, Any]:
        """The keys the core does not know (plugins' keys)."""
        return dict(self.model_extra or {})


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


class _Load:
    """What one `load_config` call reads: set for the duration of `HubConfig()`."""

    def __init__(
        self, files: list[tuple[str, Path]], environ: Mapping[str, str], cli: dict[str, Any]
    ) -> None:
        self.files = files
        self.environ = environ
        self.cli = cli


_LOADING: ContextVar[_Load | None] = ContextVar("hub_config_loading", default=None)


class HubConfig(BaseSettings):
    """The whole of `hub.toml`, with its variables and command-line values (see the module doc)."""

    model_config = SettingsConfigDict(
        extra="forbid",
        env_prefix="HUB_",
        env_nested_delimiter="__",
        env_ignore_empty=True,
        case_sensitive=False,
    )

    state_dir: Path = Field(
        default_factory=default_state_dir, description="Where hub.sqlite (the default store) and logs live."
    )
    state_url: str | None = Field(
        default=None,
        description="A PostgreSQL database for the store instead of hub.sqlite, shared by hubs and "
        "pool workers on several machines: postgresql://user:password@host:5432/db (${VAR} expands; "
        "HUB_STATE_URL).",
    )
    log_format: Literal["console", "json"] = "console"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    plugins: PluginsConfig = Field(default_factory=PluginsConfig)
    budget: BudgetConfig = Field(default_factory=BudgetConfig)
    context: dict[str, str] = Field(
        default_factory=dict, description="Context entries for this project, written at start."
    )
    servers: dict[str, ServerConfig] = Field(default_factory=dict)
    http: HttpConfig = Field(default_factory=HttpConfig)
    daemon: DaemonConfig = Field(default_factory=DaemonConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    tools: ToolsConfig = Field(default_factory=ToolsConfig)
    liveness: LivenessConfig = Field(default_factory=LivenessConfig)
    telemetry: TelemetryConfig = Field(default_factory=TelemetryConfig)
    source: str = Field(default="(defaults)", exclude=True, description="The highest-precedence file read.")
    origins: dict[str, str] = Field(
        default_factory=dict,
        exclude=True,
        description="What set each dotted key: a file, a variable or a command-line option.",
    )
    scopes: list[tuple[str, str]] = Field(
        default_factory=list, exclude=True, description="(scope, file) read, lowest precedence first."
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        loading = _LOADING.get()
        if loading is None:  # HubConfig() outside load_config: the process's environment and files
            return (init_settings, HubEnvSource(settings_cls, os.environ))
        return tuple(reversed(_sources(settings_cls, loading)))

    @field_validator("state_url")
    @classmethod
    def _a_postgresql_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        if not value.startswith(("postgresql://", "postgres://", "${")):
            raise ValueError(
                "must be a PostgreSQL URL, postgresql://user:password@host:5432/database "
                "(leave it unset for SQLite under state_dir)"
            )
        return value

    def store_url(self) -> str | None:
        """`state_url` with ${VAR} expanded (a password kept in a variable), or None: SQLite."""
        if not self.state_url:
            return None
        from hub.config.expand import expand_vars

        return expand_vars(self.state_url, os.environ, where="state_url") or None

    @field_validator("servers")
    @classmethod
    def _server_names(cls, value: dict[str, ServerConfig]) -> dict[str, ServerConfig]:
        for name in value:
            if not SERVER_NAME.fullmatch(name):
                raise ValueError(f"server name {name!r} must be {SERVER_NAME_RULE}")
        return value

    def masked(self) -> dict[str, Any]:
        """The effective config as JSON-ready data with every secret replaced by ``***``
        (`mask_secrets`)."""
        masked: dict[str, Any] = mask_secrets(self.model_dump(mode="json"))
        return masked

    def origin_of(self, key: str) -> str:
        """What set `key` (or the table holding it): a file, a variable, an option, or `(defaults)`."""
        return origin_of(key, "(defaults)", self.origins)


# --- secrets ---------------------------------------------------------------------------------

# A key whose value is a secret (`api_key`, `token`, `http_token`, `client_secret`, `password`...;
# not `max_tokens`), matched on the key's last word.
_SECRET_KEY = re.compile(
    r"(^|_)(api_?key|key|token|secret|password|passwd|passphrase|authorization|credentials?|cookie)$"
)
# Keys whose *values* are secrets whatever their names: a server's or worker's env and headers.
_SECRET_VALUES = {"env", "headers"}
# Token-like text anywhere (an API key in a server's args, a bearer token in a URL).
_SECRET_TEXT = re.compile(r"(sk-ant-[A-Za-z0-9_-]{8,}|sk-[A-Za-z0-9]{20,}|Bearer\s+[A-Za-z0-9._~+/=-]{8,})")
_PYDANTIC_MASK = "**********"  # how model_dump(mode="json") writes a SecretStr
# The password of a URL (postgresql://user:PASSWORD@host/db), and a `password=` parameter.
_URL_PASSWORD = re.compile(r"(://[^:/@?#\s]*:)[^@/?#\s]+@")
_PASSWORD_PARAM = re.compile(r"((?:^|[?&\s])password=)[^&\s]+")


def mask_secrets(value: Any, key: str = "") -> Any:
    """`value` (JSON-like data: a config dump, a plugin's table) with every secret as ``***``:
    SecretStr fields, values under secret-looking keys, every value of an `env` or `headers`
    table, token-like text, and the same inside a string holding a JSON object (an mcpServers
    table given as JSON text). Keys are kept, so what is set stays visible."""
    name = key.lower().replace("-", "_")
    if isinstance(value, SecretStr):
        return SECRET_MASK
    if key and _SECRET_KEY.search(name):
        if isinstance(value, dict):
            return {k: SECRET_MASK for k in value}
        return SECRET_MASK if value not in (None, "", [], False) else value
    if name in _SECRET_VALUES and isinstance(value, dict):
        return {k: SECRET_MASK if v not in (None, "") else v for k, v in value.items()}
    if isinstance(value, dict):
        return {k: mask_secrets(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [mask_secrets(v) for v in value]
    if isinstance(value, str):
        return _mask_text(value)
    return value


def _mask_text(text: str) -> str:
    if text == _PYDANTIC_MASK:
        return SECRET_MASK
    if text.lstrip().startswith("{"):
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict):
            return json.dumps(mask_secrets(parsed))
    text = _URL_PASSWORD.sub(rf"\1{SECRET_MASK}@", text)
    text = _PASSWORD_PARAM.sub(rf"\1{SECRET_MASK}", text)
    return _SECRET_TEXT.sub(SECRET_MASK, text)


# --- sources -------------------------------------------------------------------------------


def _normalise(data: dict[str, Any]) -> dict[str, Any]:
    """`plugins = [...]` means `[plugins] enabled = [...]`, so sources merge table by table."""
    if isinstance(data.get("plugins"), list):
        data = {**data, "plugins": {"enabled": data["plugins"]}}
    return data


class HubTomlSource(TomlConfigSettingsSource):
    """One hub.toml; a file that cannot be read or parsed is a `ConfigError` naming it."""

    def _read_file(self, file_path: Any) -> dict[str, Any]:
        try:
            with file_path.open(mode="rb") as f:
                return tomllib.load(f)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{file_path}: invalid TOML: {exc}") from None
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{file_path}: invalid TOML: {exc}") from None
        except OSError as exc:
            raise ConfigError(f"{file_path}: cannot read: {exc.strerror}") from None

    def __call__(self) -> dict[str, Any]:
        return _normalise(super().__call__())


# Short variables kept from before nested names existed: variable -> dotted key.
ENV_ALIASES = {
    "HUB_PLUGINS": "plugins.enabled",
    "HUB_BUDGET_USD": "budget.limit_usd",
    "HUB_HTTP_TOKEN": "http.token",
}
_NOT_FROM_ENV = {"source", "origins", "scopes"}


class HubEnvSource(EnvSettingsSource):
    """`HUB_*` variables from a given mapping: nested names (`HUB_BUDGET__LIMIT_USD`), the short
    aliases of `ENV_ALIASES` (`HUB_PLUGINS` is a comma list), and what set which key (`origins`)."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._environ = environ
        self.origins: dict[str, str] = {}
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        variables: dict[str, str | None] = {}
        fields = set(self.settings_cls.model_fields) - _NOT_FROM_ENV
        for name, value in self._environ.items():
            upper = name.upper()
            if upper in ENV_ALIASES:
                continue
            if not upper.startswith("HUB_") or value == "":
                continue
            dotted = upper[4:].lower().replace("__", ".")
            if dotted.split(".")[0] not in fields:
                continue
            variables[name.lower()] = value
            self.origins[dotted] = upper
        for name, dotted in ENV_ALIASES.items():
            raw = self._environ.get(name)
            if raw is None or (raw == "" and name != "HUB_PLUGINS"):
                continue
            if name == "HUB_PLUGINS":  # a comma list; set and empty means no plugin but the core
                raw = json.dumps([part.strip() for part in raw.split(",") if part.strip()])
            variables[f"hub_{dotted.replace('.', '__')}"] = raw
            self.origins[dotted] = name
        return variables

    def __call__(self) -> dict[str, Any]:
        data = _normalise(super().__call__())
        plugins = data.get("plugins")
        if isinstance(plugins, dict):  # plugin tables are untyped here: values read as TOML, like --set
            data["plugins"] = {
                name: _parse_leaves(table) if name != "enabled" else table for name, table in plugins.items()
            }
        return data


def _parse_leaves(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _parse_leaves(item) for key, item in value.items()}
    return parse_value(value) if isinstance(value, str) else value


def _sources(settings_cls: type[BaseSettings], loading: _Load) -> list[PydanticBaseSettingsSource]:
    """The sources of one load, lowest precedence first."""
    sources: list[PydanticBaseSettingsSource] = [
        HubTomlSource(settings_cls, toml_file=path) for _, path in loading.files
    ]
    sources.append(HubEnvSource(settings_cls, loading.environ))
    sources.append(InitSettingsSource(settings_cls, init_kwargs=_normalise(loading.cli)))
    return sources


def origin_of(key: str, source: str, origins: Mapping[str, str]) -> str:
    """What set `key`: the option, variable or file recorded for it or the table holding it, else
    for a key inside it (a table's own problem, e.g. a server missing its command), else `source`."""
    parts = key.split(".")
    for end in range(len(parts), 0, -1):
        origin = origins.get(".".join(parts[:end]))
        if origin is not None:
            return origin
    inside = [origin for dotted, origin in origins.items() if dotted.startswith(key + ".")]
    return inside[-1] if inside else source
