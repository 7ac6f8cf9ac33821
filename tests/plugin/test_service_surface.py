"""Every service member a built-in plugin uses is documented in docs/plugins.md ("Service
reference"), and every member documented there exists (datasette's habit: documented and
tested). A planted use of an undocumented member is caught."""

from __future__ import annotations

from pathlib import Path

import pytest
import surface

import hub

ROOT = Path(__file__).resolve().parents[2]
BUILTINS = [ROOT / "hub" / "builtin", *sorted((ROOT / "plugins").glob("*/hub_*"))]
DOCS = (ROOT / "docs" / "plugins.md").read_text()

# The class each documented service name stands for.
CLASSES = {
    "store": lambda: hub.Store,
    "budget": lambda: hub.PluginBudget,
    "reservation": lambda: hub.Reservation,
    "context": lambda: hub.ContextStore,
    "connections": lambda: hub.ConnectionCache,
    "listings": lambda: hub.Listings,
    "instances": lambda: __import__("hub.services.instances", fromlist=["Instances"]).Instances,
    "instance": lambda: hub.Instance,
}


def _builtin_uses() -> set[tuple[str, str, str]]:
    found = set()
    for folder in BUILTINS:
        for path in sorted(folder.rglob("*.py")):
            for service, member, line in surface.uses(path.read_text()):
                found.add((service, member, f"{path.relative_to(ROOT)}:{line}"))
    return found


def test_every_service_member_a_builtin_uses_is_documented():
    uses = _builtin_uses()
    assert len({(s, m) for s, m, _ in uses}) > 20, "the reader found too few uses; is it still working?"
    documented = surface.documented(DOCS)
    missing = sorted({(s, m): where for s, m, where in uses if (s, m) not in documented}.items())
    assert missing == [], (
        "document these in docs/plugins.md (Service reference), or make them private:\n"
        + "\n".join(f"{s}.{m}  (used at {where})" for (s, m), where in missing)
    )


@pytest.mark.parametrize("service", sorted(CLASSES))
def test_every_documented_member_exists(service):
    cls = CLASSES[service]()
    fields = getattr(cls, "__dataclass_fields__", {})
    for name, member in sorted(surface.documented(DOCS)):
        if name == service:
            assert hasattr(cls, member) or member in fields or member in _instance_attributes(cls), (
                f"docs/plugins.md documents {service}.{member}, which {cls.__name__} does not have"
            )


def _instance_attributes(cls: type) -> set[str]:
    """Attributes set in __init__ (`self.x = ...`)."""
    import ast
    import inspect

    try:
        tree = ast.parse(inspect.getsource(cls))
    except (OSError, TypeError):
        return set()
    return {
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self"
    }


def test_a_planted_use_of_an_undocumented_member_is_caught():
    source = "async def f(hub):\n    await hub.connections._conns['x'].stop.set()\n    hub.budget.abandon('x', 'y')\n"
    found = surface.uses(source)
    assert ("connections", "_conns", 2) in found
    assert surface.undocumented(found, surface.documented(DOCS)) == [
        ("budget", "abandon", 3),
        ("connections", "_conns", 2),
    ]
