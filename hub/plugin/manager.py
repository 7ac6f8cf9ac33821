"""Finding, choosing and loading plugins.

Plugins come from the ``hub.plugin.manager`` entry-point group (built-in ones too, so the path a
third-party package takes is the one we use every day). Which load: `--plugins`, else
`HUB_PLUGINS`, else `plugins` in hub.toml, else every installed one. A plugin that fails to
import, has a misspelt hook or a hook with wrong arguments is reported by name and skipped -
unless the user named it, in which case the hub refuses to start and says why.
"""

from __future__ import annotations

import difflib
import importlib.metadata
import inspect
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import pluggy
import structlog
from pydantic import BaseModel, ValidationError

from hub.config.load import check_server_keys, format_validation_error
from hub.config.settings import HubConfig
from hub.errors import ConfigError, PluginLoadError
from hub.plugin import spec
from hub.plugin.registry import Registry, ToolSelection

__all__ = [
    "ENTRY_POINT_GROUP",
    "HubPluginManager",
    "PluginInfo",
    "PluginLoadError",
    "check_plugin_names",
    "check_tool_selections",
    "discover",
    "load_plugins",
    "tool_selection",
]

# Keys of any `[plugins.NAME]` table that belong to the hub, not to the plugin's own settings.
CORE_KEYS = ("tools", "hide")

ENTRY_POINT_GROUP = "hub.plugins"
log = structlog.get_logger("hub.plugins")

Status = Literal["loaded", "failed", "not selected"]


@dataclass
class PluginInfo:
    """What `hub plugins` and `hub://status` report about one plugin."""

    name: str
    module: str
    distribution: str | None = None
    version: str | None = None
    builtin: bool = False
    status: Status = "not selected"
    error: str | None = None
    warnings: list[str] = field(default_factory=list)
    config: BaseModel | None = field(default=None, repr=False)
    plugin: Any = field(default=None, repr=False)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "distribution": self.distribution,
            "module": self.module,
            "status": self.status,
            "error": self.error,
            "warnings": self.warnings,
        }


class HubPluginManager(pluggy.PluginManager):
    """A pluggy manager that also treats unmarked ``hub_*`` functions as hook implementations,
    so a misspelt hook name is caught whether or not it carries ``@hookimpl``."""

    def __init__(self) -> None:
        super().__init__(spec.PROJECT)
        self.add_hookspecs(spec)

    def parse_hookimpl_opts(self, plugin: Any, name: str) -> pluggy.HookimplOpts | None:
        opts = super().parse_hookimpl_opts(plugin, name)
        if opts is None and name.startswith("hub_") and callable(getattr(plugin, name, None)):
            return {
                "wrapper": False,
                "hookwrapper": False,
                "optionalhook": False,
                "tryfirst": False,
                "trylast": False,
                "specname": None,
            }
        return opts

    def unknown_hooks(self, plugin: Any) -> list[str]:
        """Hook implementations of `plugin` that match no hook the hub defines."""
        return sorted(caller.name for caller in (self.get_hookcallers(plugin) or []) if caller.spec is None)

    def async_hooks(self, plugin: Any) -> list[str]:
        """Hooks `plugin` implements with ``async def`` (refused: hooks are plain functions)."""
        return sorted(
            caller.name
            for caller in (self.get_hookcallers(plugin) or [])
            for impl in caller.get_hookimpls()
            if impl.plugin is plugin
            and (inspect.iscoroutinefunction(impl.function) or inspect.isasyncgenfunction(impl.function))
        )

    def impls(self, hook_name: str) -> Iterator[tuple[str, Any]]:
        """Each plugin's implementation of `hook_name`, in load order, as (plugin name, function)."""
        caller = getattr(self.hook, hook_name)
        for impl in caller.get_hookimpls():
            yield impl.plugin_name, impl


LIFECYCLE_HOOKS = ("hub_startup", "hub_shutdown", "hub_recover")


def async_hook_error(hooks: list[str]) -> str:
    """Why a plugin with ``async def`` hooks is refused, and what to write instead."""
    named = ", ".join(f"{hook!r}" for hook in hooks)
    if all(hook in LIFECYCLE_HOOKS for hook in hooks):
        fix = "make it a plain `def` that returns a coroutine (or an async function) for the hub to await"
    else:
        fix = (
            "make it a plain `def`: lifecycle hooks (hub_startup, hub_shutdown, hub_recover) return "
            "a coroutine for the hub to await, the others run synchronously (do async work in hub_startup)"
        )
    return f"hook {named} is `async def`, but hooks are plain functions: {fix} (see docs/plugins.md)"


def known_hooks() -> list[str]:
    return sorted(name for name in dir(spec) if name.startswith("hub_"))


@dataclass
class _Candidate:
    name: str
    module: str
    load: Any
    distribution: str | None
    version: str | None
    builtin: bool


def discover() -> dict[str, _Candidate]:
    """Installed plugins by entry-point name (the first distribution wins a duplicate name)."""
    found: dict[str, _Candidate] = {}
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in found:
            log.warning("two packages provide plugin; using the first", plugin=ep.name, ignored=ep.value)
            continue
        dist = ep.dist
        found[ep.name] = _Candidate(
            ep.name,
            ep.value,
            ep.load,
            dist.name if dist else None,
            dist.version if dist else None,
            builtin=bool(dist and dist.name in ("mcp-plugin-hub", "mcp_plugin_hub")),
        )
    return found


def _describe_error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def load_plugins(
    config: HubConfig, *, extra: dict[str, Any] | None = None
) -> tuple[HubPluginManager, dict[str, PluginInfo]]:
    """Load the selected plugins and validate their `[plugins.NAME]` tables.

    `extra` are plugin objects registered in addition to the discovered ones, always loaded
    (the hub's own core plugin, and example plugins in tests). Raises `ConfigError` for an
    unknown name or invalid plugin settings (every problem of every table at once),
    `PluginLoadError` for a named plugin that fails.
    """
    pm = HubPluginManager()
    candidates = _candidates(extra or {})
    always = set(extra or {})
    problems: list[str] = []
    try:
        check_plugin_names(config, candidates, hidden=always)
    except ConfigError as exc:
        problems.append(str(exc))
    infos: dict[str, PluginInfo] = {
        name: PluginInfo(name, c.module, c.distribution, c.version, c.builtin)
        for name, c in candidates.items()
    }
    wanted = _wanted(config, candidates, always)
    for name in wanted:
        named = config.plugins.enabled is not None or name in always
        _load_one(pm, candidates[name], infos[name], config, named=named, problems=problems)
    # Settings of installed plugins that are not selected are checked too: a typo there would
    # otherwise surface only on the day the plugin is turned on.
    for name in config.plugins.tables():
        if name in candidates and name not in wanted:
            problems.extend(_unselected_problems(name, candidates[name], config))
    server_models = {n: impl.function() for n, impl in pm.impls("hub_server_config_model")}
    try:
        check_server_keys(config, {n: model for n, model in server_models.items() if model is not None})
    except ConfigError as exc:
        problems.append(str(exc))
    if problems:
        raise ConfigError("\n".join(problems))
    return pm, infos


def _candidates(extra: dict[str, Any]) -> dict[str, _Candidate]:
    """Every plugin that could load: the hub's own (and test plugins) first, so the core loads
    and registers first, then the installed ones."""
    candidates: dict[str, _Candidate] = {
        name: _Candidate(
            name, getattr(obj, "__name__", type(obj).__name__), lambda o=obj: o, "hub", None, True
        )
        for name, obj in extra.items()
    }
    for name, candidate in discover().items():
        candidates.setdefault(name, candidate)
    return candidates


def _wanted(config: HubConfig, candidates: dict[str, _Candidate], always: set[str]) -> list[str]:
    """The plugins to load, in load order: the selection (with the always-loaded ones), or all."""
    selected = config.plugins.enabled
    if selected is None:
        return list(candidates)
    return [name for name in candidates if name in always] + [
        n for n in selected if n not in always and n in candidates
    ]


def _load_one(
    pm: HubPluginManager,
    candidate: _Candidate,
    info: PluginInfo,
    config: HubConfig,
    *,
    named: bool,
    problems: list[str],
) -> None:
    """Register one plugin and validate its settings; a plugin that fails is reported and
    skipped, unless the user `named` it (`PluginLoadError`)."""
    name = candidate.name
    try:
        register_plugin(pm, name, candidate.load(), info)
    except Exception as exc:
        info.status = "failed"
        info.error = str(exc) if isinstance(exc, PluginLoadError) else _describe_error(exc)
        if named:
            raise PluginLoadError(f"plugin {name!r} failed to load: {info.error}") from exc
        log.error("plugin failed to load; serving the others", plugin=name, error=info.error)
        return
    try:
        info.config = plugin_config(pm, name, config)
    except ConfigError as exc:  # every plugin's problems at once, not only the first's
        problems.append(str(exc))


def _unselected_problems(name: str, candidate: _Candidate, config: HubConfig) -> list[str]:
    try:
        plugin = candidate.load()
        if isinstance(plugin, type):  # a `hub.Plugin` class: its hooks are methods
            plugin = plugin()
        model = plugin.hub_config_model() if hasattr(plugin, "hub_config_model") else None
    except Exception:  # it is not selected: its import problems are reported when it is
        return []
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        return []
    table = config.plugins.tables().get(name)
    if not isinstance(table, dict):
        return []
    try:
        model.model_validate(table)
    except ValidationError as exc:
        return [
            format_validation_error(
                exc, config.source, prefix=f"plugins.{name}", origins=config.origins, model=model
            )
        ]
    return []


def _did_you_mean(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    return f"did you mean {close[0]!r}? " if close else ""


def check_plugin_names(
    config: HubConfig, candidates: dict[str, Any] | None = None, hidden: set[str] | None = None
) -> None:
    """`ConfigError` for every plugin the user named that is not installed: in the selection
    (--plugins, HUB_PLUGINS, plugins = [...]) or as a `[plugins.NAME]` table, with the nearest
    installed name."""
    candidates = discover() if candidates is None else candidates
    known = sorted(set(candidates) - (hidden or set()))
    installed = ", ".join(known) or "none"
    lines = []
    for name in config.plugins.enabled or []:
        if name not in candidates:
            origin = config.origins.get("plugins.enabled") or config.source
            lines.append(
                f"{origin}: plugins: unknown plugin {name!r} ({_did_you_mean(name, known)}installed: {installed})"
            )
    for table in config.plugins.tables():
        if table not in candidates:
            lines.append(
                f"{config.source}: plugins.{table}: no plugin {table!r} is installed "
                f"({_did_you_mean(table, known)}installed: {installed})"
            )
    if lines:
        raise ConfigError("\n".join(lines))


def register_plugin(pm: HubPluginManager, name: str, plugin: Any, info: PluginInfo) -> None:
    """Register `plugin` under `name`, refusing hooks that do not exist (with a suggestion) and
    ``async def`` hooks. A class (a `hub.Plugin`) is instantiated: one object per hub run."""
    if isinstance(plugin, type):
        plugin = plugin()
    pm.register(plugin, name=name)
    unknown_hooks = pm.unknown_hooks(plugin)
    if unknown_hooks:
        pm.unregister(plugin)
        hints = []
        for hook in unknown_hooks:
            close = difflib.get_close_matches(hook, known_hooks(), n=1)
            hints.append(f"{hook!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise PluginLoadError(f"unknown hook {', '.join(hints)}; see docs/plugins.md for the hooks")
    async_hooks = pm.async_hooks(plugin)
    if async_hooks:
        pm.unregister(plugin)
        raise PluginLoadError(async_hook_error(async_hooks))
    info.plugin = plugin
    info.status = "loaded"


def tool_selection(name: str, config: HubConfig) -> ToolSelection | None:
    """`[plugins.NAME] tools = [...]` / `hide = [...]`, checked; None when neither is set."""
    table = config.plugins.tables().get(name)
    if not isinstance(table, dict) or not any(key in table for key in CORE_KEYS):
        return None
    lists: dict[str, frozenset[str]] = {}
    for key in CORE_KEYS:
        value = table.get(key)
        if value is None:
            continue
        if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
            shown = repr(value)
            raise ConfigError(
                f"{config.source}: plugins.{name}.{key}: expected a list of tool names, e.g. "
                f'{key} = ["{name}_tool"] (got {shown[:60]}{"..." if len(shown) > 60 else ""})'
            )
        lists[key] = frozenset(v.strip() for v in value)
    return ToolSelection(keep=lists.get("tools"), hide=lists.get("hide", frozenset()))


def check_tool_selections(registry: Registry, plugins: list[str], config: HubConfig) -> None:
    """After registration: every name in a loaded plugin's `tools` / `hide` must be one of its
    tools; `ConfigError` lists each one that is not, with a suggestion."""
    lines = []
    for name in plugins:
        mine = [
            f"{config.source}: plugins.{name}.{key}: {problem}"
            for key, problem in registry.selection_problems(name)
        ]
        if mine:
            offered = ", ".join(sorted(registry.offered.get(name, ()))) or "none"
            mine[-1] += f"; its tools: {offered}"
        lines += mine
    if lines:
        lines.append("(a downstream server's tools are chosen with [servers.NAME] include / exclude instead)")
        raise ConfigError("\n".join(lines))


def plugin_config(pm: HubPluginManager, name: str, config: HubConfig) -> BaseModel | None:
    """Validate `[plugins.NAME]` against the plugin's `hub_config_model`; `ConfigError` names the key.

    `tools` and `hide` are the hub's keys (see `tool_selection`), not the plugin's."""
    tool_selection(name, config)
    table = config.plugins.tables().get(name)
    if isinstance(table, dict):
        table = {key: value for key, value in table.items() if key not in CORE_KEYS}
    model: type[BaseModel] | None = None
    for plugin_name, impl in pm.impls("hub_config_model"):
        if plugin_name == name:
            model = impl.function()
    if model is None:
        if table:
            raise ConfigError(f"{config.source}: plugins.{name}: plugin {name!r} takes no settings")
        return None
    if table is not None and not isinstance(table, dict):
        raise ConfigError(f"{config.source}: plugins.{name}: expected a table ([plugins.{name}])")
    try:
        return model.model_validate(table or {})
    except ValidationError as exc:
        raise ConfigError(
            format_validation_error(
                exc, config.source, prefix=f"plugins.{name}", origins=config.origins, model=model
            )
        ) from None
