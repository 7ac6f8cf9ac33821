"""Loading the configuration (`load_config`) and checking it, every problem at once, each as
``SOURCE: dotted.key: problem`` (`format_validation_error`, `check_server_keys`)."""

from __future__ import annotations

import difflib
import os
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from hub.config.paths import ConfigFiles, config_files, parse_value, resolve_state_dir
from hub.config.settings import (
    _LOADING,
    HubConfig,
    HubEnvSource,
    HubTomlSource,
    PluginsConfig,
    ServerConfig,
    _Load,
    _normalise,
    _sources,
    mask_secrets,
    origin_of,
)
from hub.errors import ConfigError

__all__ = ["check_server_keys", "format_validation_error", "load_config", "set_dotted"]


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


def _leaf_keys(data: Mapping[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for key, value in data.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping) and value:
            keys += _leaf_keys(value, dotted)
        else:
            keys.append(dotted)
    return keys


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    overrides: list[str] | None = None,
    plugins: str | None = None,
    budget_usd: float | None = None,
    environ: Mapping[str, str] | None = None,
    flags: Mapping[str, tuple[str, Any]] | None = None,
) -> HubConfig:
    """Build the effective config. Raises `ConfigError` naming the source, key and problem.

    `path` is the project file (`--config`); `overrides` are ``dotted.key=value`` strings
    (`--set`); `plugins` is a comma list (`--plugins`); `budget_usd` is `--budget-usd`; `flags`
    maps other dotted keys to (option, value), e.g. ``{"http.port": ("--port", 0)}``.
    """
    env = os.environ if environ is None else environ
    files = config_files(path, env)
    origins = _file_origins(files)
    items = _command_line(overrides, plugins, budget_usd, flags)
    items += _state_dir_item(files, overrides, env, flags)
    env_source = HubEnvSource(HubConfig, env)
    env_source()
    origins.update(env_source.origins)
    # The command line: --set, then the dedicated options (which win over --set).
    cli: dict[str, Any] = {}
    for key, value, origin in items:
        set_dotted(cli, key, value)
        for dotted in _leaf_keys({key: value}) if isinstance(value, Mapping) else [key]:
            origins[dotted] = origin
    source = str(files.paths[-1]) if files.paths else "(defaults)"
    loading = _Load(files.in_order(), env, cli)
    token = _LOADING.set(loading)
    try:
        config = HubConfig()
    except ValidationError as exc:
        error = ConfigError(format_validation_error(exc, source, origins=origins, model=HubConfig))
        error.partial = _partial(loading, source, origins)  # type: ignore[attr-defined]
        raise error from None
    finally:
        _LOADING.reset(token)
    config.source = source
    config.origins = origins
    config.scopes = [(scope, str(file)) for scope, file in files.in_order()]
    return config


def _partial(loading: _Load, source: str, origins: dict[str, str]) -> HubConfig | None:
    """What can be read of a configuration that is not valid as a whole: its plugin selection and
    tables and its valid servers, so the plugins' own problems are reported with the rest, all
    at once (`hub.cli.options.config_from`). None when even that cannot be read."""
    merged: dict[str, Any] = {}
    try:
        for settings_source in _sources(HubConfig, loading):
            merged = _deep_merge(merged, settings_source())
        plugins = PluginsConfig.model_validate(merged.get("plugins") or {})
    except Exception:  # a source or the selection itself is broken: reported already
        return None
    servers = {}
    for name, table in (merged.get("servers") or {}).items():
        try:
            servers[name] = ServerConfig.model_validate(table)
        except Exception:
            continue  # reported already
    return HubConfig.model_construct(plugins=plugins, servers=servers, source=source, origins=origins)


def _deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _file_origins(files: ConfigFiles) -> dict[str, str]:
    """Which file set each key (`ConfigError` for a project file that is missing)."""
    for scope, file in files.in_order():
        if scope == "project" and not file.is_file():
            if not file.exists():
                raise ConfigError(f"{file}: config file not found")
            raise ConfigError(f"{file}: not a file")
    origins: dict[str, str] = {}
    for _, file in files.in_order():
        data = _normalise(HubTomlSource(HubConfig, toml_file=file).toml_data)
        origins.update(dict.fromkeys(_leaf_keys(data), str(file)))
    return origins


def _command_line(
    overrides: list[str] | None,
    plugins: str | None,
    budget_usd: float | None,
    flags: Mapping[str, tuple[str, Any]] | None,
) -> list[tuple[str, Any, str]]:
    """(dotted key, value, option) for each value the command line gives, in precedence order."""
    items: list[tuple[str, Any, str]] = []
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ConfigError(f"--set {item}: expected KEY=VALUE, e.g. --set plugins.pool.slots=4")
        items.append((key.strip(), parse_value(raw.strip()), "--set"))
    if plugins is not None:
        items.append(("plugins.enabled", [p.strip() for p in plugins.split(",") if p.strip()], "--plugins"))
    if budget_usd is not None:
        items.append(("budget.limit_usd", budget_usd, "--budget-usd"))
    for key, (option, value) in (flags or {}).items():
        if key != "state_dir":
            items.append((key, value, option))
    return items


def _state_dir_item(
    files: ConfigFiles,
    overrides: list[str] | None,
    environ: Mapping[str, str],
    flags: Mapping[str, tuple[str, Any]] | None,
) -> list[tuple[str, Any, str]]:
    """The state directory by the one precedence shared with `hub statusline` and the fast start."""
    state_flag = (flags or {}).get("state_dir", (None, None))[1]
    try:
        state_dir, origin = resolve_state_dir(
            flag=state_flag, overrides=list(overrides or []), environ=environ, files=files
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if origin == "(defaults)":
        return []
    return [("state_dir", str(state_dir) if isinstance(state_dir, Path) else state_dir, origin)]


def check_server_keys(config: HubConfig, models: Mapping[str, type[BaseModel]]) -> None:
    """Check `[servers.NAME]` keys the core does not know against the loaded plugins' server models
    (`hub_server_config_model`, by plugin name): each must be declared by one, and is validated by
    it. `ConfigError` with one ``SOURCE: servers.NAME.key: problem`` line per problem."""
    known = set(ServerConfig.model_fields)
    for model in models.values():
        known |= set(model.model_fields)
    lines: list[str] = []
    for name, server in config.servers.items():
        extra = server.model_extra or {}
        claimed: set[str] = set()
        for model in models.values():
            mine = {key: value for key, value in extra.items() if key in model.model_fields}
            claimed |= set(mine)
            try:
                model.model_validate(mine)
            except ValidationError as exc:
                text = format_validation_error(
                    exc, config.source, prefix=f"servers.{name}", origins=config.origins
                )
                lines += text.splitlines()
        for key in extra:
            if key in claimed:
                continue
            close = difflib.get_close_matches(key, sorted(known), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            if not close and not models:
                hint = " (no loaded plugin declares server keys)"
            dotted = f"servers.{name}.{key}"
            lines.append(f"{origin_of(dotted, config.source, config.origins)}: {dotted}: unknown key{hint}")
    if lines:
        raise ConfigError("\n".join(lines))


def format_validation_error(
    exc: ValidationError,
    source: str,
    prefix: str = "",
    origins: Mapping[str, str] | None = None,
    model: type[BaseModel] | None = None,
) -> str:
    """One line per problem: ``FILE: dotted.key: message (got VALUE)`` (FILE is ``--set`` or the
    variable's name when that is what set the key). With the `model` that was validated, an
    unknown key says which known one it is close to."""
    lines = []
    for error in exc.errors():
        loc = ".".join(str(part) for part in error["loc"] if not str(part).startswith("function-"))
        key = ".".join(part for part in (prefix, loc) if part) or "(top level)"
        if error["type"] == "unknown_key":  # raised by a model for one of its keys
            key = f"{key}.{(error.get('ctx') or {}).get('key')}"
            message = error["msg"]
        elif error["type"] == "extra_forbidden":
            message = "unknown key" + _did_you_mean(model, error["loc"])
        else:
            message = error["msg"].removeprefix("Value error, ")
            if (
                error["type"] not in ("missing",)
                and "input" in error
                and not isinstance(error["input"], dict)
            ):
                # Masked: a wrong value may still hold a secret (a URL's password, a token).
                shown = repr(mask_secrets(error["input"], str(error["loc"][-1]) if error["loc"] else ""))
                message += f" (got {shown[:60]}{'...' if len(shown) > 60 else ''})"
        lines.append(f"{origin_of(key, source, origins or {})}: {key}: {message}")
    return "\n".join(lines)


def _did_you_mean(model: type[BaseModel] | None, loc: tuple[Any, ...]) -> str:
    """`` (did you mean 'x'?)`` for the key at `loc`, among the fields of the model it sits in."""
    fields = _fields_at(model, loc[:-1]) if model is not None else None
    if not fields:
        return ""
    close = difflib.get_close_matches(str(loc[-1]), sorted(fields), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _fields_at(model: type[BaseModel], path: tuple[Any, ...]) -> set[str] | None:
    """The field names of the model found by following `path` from `model`, through nested
    models and through the values of `dict[str, Model]` fields; None when it leads elsewhere."""
    current: Any = model
    key_next = False  # the part after a dict field is a key of that dict
    for part in path:
        if key_next:
            key_next = False
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        field = current.model_fields.get(str(part))
        if field is None:
            return None
        current, key_next = _model_in(field.annotation)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return set(current.model_fields)
    return None


def _model_in(annotation: Any) -> tuple[Any, bool]:
    """(the model an annotation holds, whether it is a dict's value): `Model`, `Model | None`,
    `dict[str, Model]`."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, False
    if typing.get_origin(annotation) is dict:
        return _model_in(typing.get_args(annotation)[-1])[0], True
    for arg in typing.get_args(annotation):
        found, in_dict = _model_in(arg)
        if found is not None:
            return found, in_dict
    return None, False
