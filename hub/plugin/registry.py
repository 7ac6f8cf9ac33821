"""The live registry: everything the hub serves, with the plugin that contributed each item.

It refuses duplicates and bad names with a message naming both plugins, applies the user's
choice of each plugin's tools (`[plugins.NAME] tools` / `hide`), and tells its listeners after
every change (`add_listener`), so the server's caches are dropped and connected clients get
`list_changed`.

It also keeps what plugins add to the hub's instructions (`set_instructions`), and their holds
on list answers (`hold`): a plugin about to change what the hub lists (the proxy, while servers
it has never listed start) makes list requests wait for it, each for at most the hold's
`wait_s`.
"""

from __future__ import annotations

import difflib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

import anyio

from hub.plugin.items import (
    CLAUDE_PREFIX,
    TOOL_NAME,
    Prompt,
    RegistrationError,
    Resource,
    ResourceTemplate,
    Tool,
)

__all__ = ["HoldKind", "ListHold", "ListKind", "Registry", "ToolSelection"]

ListKind = Literal["tools", "resources", "prompts"]
#: What a hold delays: a list, or "instructions" (`initialize` and `server/discover`).
HoldKind = Literal["tools", "resources", "prompts", "instructions"]
HOLD_KINDS: tuple[HoldKind, ...] = ("tools", "resources", "prompts", "instructions")

Registrable = Tool | Resource | ResourceTemplate | Prompt


@dataclass(frozen=True)
class ToolSelection:
    """`[plugins.NAME] tools = [...]` and/or `hide = [...]`: which of a plugin's tools are served."""

    keep: frozenset[str] | None = None
    hide: frozenset[str] = frozenset()

    def allows(self, name: str) -> bool:
        return (self.keep is None or name in self.keep) and name not in self.hide

    def named(self) -> dict[str, frozenset[str]]:
        """The names the user wrote, by key."""
        return {"tools": self.keep or frozenset(), "hide": self.hide}


class ListHold:
    """A plugin's hold on the hub's answers (`PluginContext.hold_lists`): requests for its
    `kinds` wait until `release()`, each for at most `wait_s`. A hold that a request waited out
    is `missed`: no later request waits for it (release it anyway when done)."""

    def __init__(
        self, registry: Registry, reason: str, plugin: str, wait_s: float, kinds: Iterable[HoldKind]
    ) -> None:
        self._registry = registry
        self.reason = reason
        self.plugin = plugin
        self.wait_s = wait_s
        self.kinds = frozenset(kinds)
        self.created = time.monotonic()
        self.missed = False
        self._released = anyio.Event()

    @property
    def released(self) -> bool:
        return self._released.is_set()

    def release(self) -> None:
        """The work is done (or given up): requests waiting for it go on. Safe to call twice."""
        self._released.set()
        self._registry._release(self)

    def __repr__(self) -> str:
        return f"ListHold({self.reason!r}, plugin={self.plugin!r})"


class Registry:
    """Everything the hub serves, with the plugin that contributed each item.

    Every listener (`add_listener`) is called with the kind of list after each change, in the
    order they were added.
    """

    def __init__(
        self,
        *,
        warn: Callable[[str], None] | None = None,
        selection: Callable[[str], ToolSelection | None] | None = None,
    ) -> None:
        self.tools: dict[str, Tool] = {}
        # The user's choice of each plugin's tools, and every tool name each plugin offered
        # (served or not), so a misspelt name in `tools`/`hide` can be found.
        self.selection: Callable[[str], ToolSelection | None] = selection or (lambda plugin: None)
        self.offered: dict[str, set[str]] = {}
        self.resources: dict[str, Resource] = {}
        self.templates: dict[str, ResourceTemplate] = {}
        self.prompts: dict[str, Prompt] = {}
        self._listeners: list[Callable[[ListKind], None]] = []
        self._warn = warn or (lambda message: None)
        self.instructions: dict[str, str] = {}  # plugin -> its part of the hub's instructions
        self._holds: list[ListHold] = []
        self.waiting = 0  # requests waiting for holds now
        # What each group of tools (`Tool.group`: the proxy's servers) is about, in words.
        self.notes: dict[str, str] = {}

    # -- instructions and holds --------------------------------------------------------------

    def set_instructions(self, plugin: str, text: str | None) -> None:
        """`plugin`'s part of the hub's instructions (None or "" removes it)."""
        if text:
            self.instructions[plugin] = text
        else:
            self.instructions.pop(plugin, None)

    def composed_instructions(self, base: str) -> str:
        """The hub's instructions: `base`, then each plugin's part, in the order they came."""
        return "\n\n".join([base, *self.instructions.values()])

    def hold(
        self, reason: str, plugin: str, wait_s: float, kinds: Iterable[HoldKind] = HOLD_KINDS
    ) -> ListHold:
        """A new hold of `plugin`'s on the answers of `kinds` (see `ListHold`)."""
        hold = ListHold(self, reason, plugin, wait_s, kinds)
        self._holds.append(hold)
        return hold

    def held(self, kind: HoldKind) -> bool:
        """Whether a request for `kind` would wait (cheap: the common answer is no)."""
        return bool(self._holds) and any(kind in h.kinds and not h.missed for h in self._holds)

    async def wait_for_holds(self, kind: HoldKind) -> list[ListHold]:
        """Wait until every hold on `kind` is released, each for at most its `wait_s`; returns
        those that were not (now `missed`)."""
        started = time.monotonic()
        holds = sorted((h for h in self._holds if kind in h.kinds and not h.missed), key=lambda h: h.wait_s)
        missed = []
        self.waiting += 1
        try:
            for hold in holds:
                with anyio.move_on_after(max(0.0, started + hold.wait_s - time.monotonic())):
                    await hold._released.wait()
                if not hold.released and not hold.missed:
                    hold.missed = True
                    missed.append(hold)
        finally:
            self.waiting -= 1
        return missed

    def _release(self, hold: ListHold) -> None:
        if hold in self._holds:
            self._holds.remove(hold)

    def add_listener(self, listener: Callable[[ListKind], None]) -> None:
        """Call `listener(kind)` after every change to the `kind` list ("tools", "resources" or
        "prompts"); a listener must not raise."""
        self._listeners.append(listener)

    def changed(self, kind: ListKind) -> None:
        """Tell every listener that the `kind` list changed (also for a change made elsewhere,
        such as answers found out of date after a fast start)."""
        for listener in list(self._listeners):
            listener(kind)

    def describe_group(self, group: str, text: str | None) -> None:
        """What the tools of `group` are about (None or "" forgets it); the tools list changes
        with it (it is part of their search hints)."""
        text = (text or "").strip()
        if self.notes.get(group, "") == text:
            return
        if text:
            self.notes[group] = text
        else:
            self.notes.pop(group, None)
        self.changed("tools")

    def add(self, item: Registrable, plugin: str) -> None:
        """Register `item` for `plugin`; `RegistrationError` if its name is bad or taken."""
        item.plugin = plugin
        if isinstance(item, Tool):
            self._check_tool_name(item.name)
            self.offered.setdefault(plugin, set()).add(item.name)
            selection = self.selection(plugin)
            if selection is not None and not selection.allows(item.name):
                return  # left out by the user's [plugins.NAME] tools / hide
            self._claim(self.tools, item.name, item, "tool")
            self.changed("tools")
        elif isinstance(item, Resource):
            self._claim(self.resources, item.uri, item, "resource")
            self.changed("resources")
        elif isinstance(item, ResourceTemplate):
            self._claim(self.templates, item.uri_template, item, "resource template")
            self.changed("resources")
        elif isinstance(item, Prompt):
            self._claim(self.prompts, item.name, item, "prompt")
            self.changed("prompts")
        else:
            raise RegistrationError(
                f"cannot register {item!r}: expected Tool, Resource, ResourceTemplate or Prompt"
            )

    def _check_tool_name(self, name: str) -> None:
        if not TOOL_NAME.fullmatch(name):
            raise RegistrationError(
                f"tool name {name!r} is not allowed: use 1-64 letters, digits, '_' or '-' "
                "(the Anthropic API accepts nothing else)"
            )
        if len(CLAUDE_PREFIX) + len(name) > 64:
            self._warn(
                f"tool {name!r}: Claude Code will call it {CLAUDE_PREFIX}{name} "
                f"({len(CLAUDE_PREFIX) + len(name)} characters), over the 64 the API accepts; give it a shorter name"
            )

    @staticmethod
    def _claim(table: dict[str, Any], key: str, item: Registrable, what: str) -> None:
        existing = table.get(key)
        if existing is not None:
            raise RegistrationError(
                f"{what} {key!r} from plugin {item.plugin!r} clashes with the one from plugin {existing.plugin!r}"
            )
        table[key] = item

    def remove(self, kind: ListKind, key: str) -> bool:
        table: dict[str, Any]
        if kind == "tools":
            table = self.tools
        elif kind == "prompts":
            table = self.prompts
        else:
            table = self.resources if key in self.resources else self.templates
        if table.pop(key, None) is None:
            return False
        self.changed(kind)
        return True

    def remove_plugin(self, plugin: str) -> None:
        """Drop everything `plugin` registered."""
        groups: list[tuple[ListKind, list[dict[str, Any]]]] = [
            ("tools", [self.tools]),
            ("resources", [self.resources, self.templates]),
            ("prompts", [self.prompts]),
        ]
        for kind, tables in groups:
            changed = False
            for table in tables:
                for key in [k for k, v in table.items() if v.plugin == plugin]:
                    del table[key]
                    changed = True
            if changed:
                self.changed(kind)

    def selection_problems(self, plugin: str) -> list[tuple[str, str]]:
        """(key, message) for each name in `plugin`'s `tools` / `hide` that it never offered."""
        selection = self.selection(plugin)
        if selection is None:
            return []
        offered = sorted(self.offered.get(plugin, ()))
        problems = []
        for key, names in selection.named().items():
            for name in sorted(names - set(offered)):
                close = difflib.get_close_matches(name, offered, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                problems.append((key, f"plugin {plugin!r} has no tool {name!r}{hint}"))
        return problems

    def hidden(self, plugin: str) -> list[str]:
        """`plugin`'s tools left out by the user's `tools` / `hide`."""
        return sorted(
            name
            for name in self.offered.get(plugin, ())
            if name not in self.tools or self.tools[name].plugin != plugin
        )

    def contributions(self, plugin: str) -> dict[str, Any]:
        """What `plugin` serves, by kind (and its tools by `Tool.group`, when they have one)."""
        hidden = self.hidden(plugin)
        groups: dict[str, list[str]] = {}
        for name, tool in sorted(self.tools.items()):
            if tool.plugin == plugin and tool.group is not None:
                groups.setdefault(tool.group, []).append(name)
        return {
            **({"hidden_tools": hidden} if hidden else {}),
            **({"tool_groups": groups} if groups else {}),
            "tools": sorted(k for k, v in self.tools.items() if v.plugin == plugin),
            "resources": sorted(
                [k for k, v in self.resources.items() if v.plugin == plugin]
                + [k for k, v in self.templates.items() if v.plugin == plugin]
            ),
            "prompts": sorted(k for k, v in self.prompts.items() if v.plugin == plugin),
        }

    def find_resource(self, uri: str) -> tuple[Resource | ResourceTemplate, dict[str, str]] | None:
        if uri in self.resources:
            return self.resources[uri], {}
        for template in self.templates.values():
            params = template.match(uri)
            if params is not None:
                return template, params
        return None
