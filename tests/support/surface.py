"""What plugins use of the services their `PluginContext` gives them, read from their source, and
what docs/plugins.md documents of them (`tests/plugin/test_service_surface.py`).

A use is an attribute of a service reached through the context or a name bound to it:
``hub.budget.reserve(...)``, ``self.hub.connections.status()``, ``self.store.execute(...)`` (a
service kept on an object), ``connections = hub.connections; connections.call_tool(...)``, and
of the objects services hand out (``reservation.commit``, ``instance.pid``). Documented means the
reference section of docs/plugins.md names it as `` `service.member` ``.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable

__all__ = ["SERVICES", "documented", "undocumented", "uses"]

#: Service name as plugins reach it -> the names code binds it to.
SERVICES: dict[str, tuple[str, ...]] = {
    "store": ("store",),
    "budget": ("budget",),
    "context": ("context",),
    "connections": ("connections",),
    "listings": ("listings",),
    "instances": ("instances",),
    "reservation": ("reservation",),
    "instance": ("instance",),
}
_ALIASES = {alias: service for service, aliases in SERVICES.items() for alias in aliases}


def uses(source: str) -> set[tuple[str, str, int]]:
    """(service, member, line) for each use of a service member in `source`."""
    tree = ast.parse(source)
    found: set[tuple[str, str, int]] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute):
            continue
        owner = node.value
        name = (
            owner.attr
            if isinstance(owner, ast.Attribute)
            else owner.id
            if isinstance(owner, ast.Name)
            else None
        )
        service = _ALIASES.get(name or "")
        if service is None or node.attr.startswith("__"):
            continue
        found.add((service, node.attr, node.lineno))
    return found


_DOC = re.compile(r"`(?:await |async with )?(" + "|".join(SERVICES) + r")\.([A-Za-z_][A-Za-z0-9_]*)")


def documented(markdown: str) -> set[tuple[str, str]]:
    """(service, member) named as `` `service.member` `` (or `` `service.member(...)` ``) anywhere in
    `markdown`."""
    return {(m.group(1), m.group(2)) for m in _DOC.finditer(markdown)}


def undocumented(
    found: Iterable[tuple[str, str, int]], docs: set[tuple[str, str]]
) -> list[tuple[str, str, int]]:
    return sorted(use for use in found if (use[0], use[1]) not in docs)
