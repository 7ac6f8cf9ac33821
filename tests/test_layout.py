"""The layout of hub/ (issue: the core in rooms): which room imports which, no import cycle with
type-checking imports counted, the SDK's private internals in one module per side, every module
saying what it is, and functions that fit on a screen. Each check is also shown to catch a
violation planted in a small source of its own."""

from __future__ import annotations

import ast
from pathlib import Path

import layout
import pytest

ROOT = Path(__file__).resolve().parents[1]
HUB = ROOT / "hub"
CODE = [HUB, *sorted((ROOT / "plugins").glob("*/hub_*"))]


@pytest.fixture(scope="module")
def graph() -> dict[str, list[layout.Import]]:
    return layout.module_graph(ROOT)


def test_every_module_of_hub_is_in_a_room_of_the_layout(graph):
    rooms = {layout.room_of(module) for module in graph} - {"hub"}
    assert rooms <= set(layout.ROOMS), sorted(rooms - set(layout.ROOMS))


def test_rooms_import_only_what_the_layout_allows(graph):
    assert layout.room_violations(graph) == []


def test_no_import_cycle_type_checking_imports_included(graph):
    assert layout.cycles(graph) == []


def test_the_sdks_private_internals_are_used_in_one_module_per_side():
    found = []
    for path in sorted(HUB.rglob("*.py")):
        module = layout.module_name(ROOT, path)
        found += [f"{module} {use}" for use in layout.private_sdk_uses(path.read_text(), module)]
    assert found == [], "use hub/client/sdk.py or hub/server/sdk.py:\n" + "\n".join(found)


def test_every_file_says_what_it_is_and_a_room_imports_nothing_itself():
    for folder in CODE:
        for path in sorted(folder.rglob("*.py")):
            tree = ast.parse(path.read_text())
            assert ast.get_docstring(tree), f"{path.relative_to(ROOT)} has no docstring saying what it is"
    for init in sorted(HUB.glob("*/__init__.py")):
        body = ast.parse(init.read_text()).body
        assert all(isinstance(node, ast.Expr) for node in body), (
            f"{init.relative_to(ROOT)} does more than say"
        )


def test_no_function_is_longer_than_a_screen_without_saying_why():
    found = [
        f"{path.relative_to(ROOT)}:{line} {name} ({length} lines)"
        for folder in CODE
        for path in sorted(folder.rglob("*.py"))
        for name, line, length in layout.long_functions(path.read_text())
    ]
    assert found == [], "split these into named steps, or say '# one piece: why' above them:\n" + "\n".join(
        found
    )


# -- each check catches a planted violation ----------------------------------------------------


def _graph(**sources: str) -> dict[str, list[layout.Import]]:
    return {module: layout.imports_of(source, module) for module, source in sources.items()}


def test_a_server_module_importing_the_client_is_caught():
    graph = _graph(
        **{"hub.server.app": "from hub.client.cache import ConnectionCache\n", "hub.client.cache": ""}
    )
    assert layout.room_violations(graph) == [
        "hub.server.app line 1: hub.server may not import hub.client (hub.client.cache)"
    ]


def test_a_service_importing_up_into_the_plugin_contract_is_caught_even_for_type_checking():
    source = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from hub.plugin.context import PluginContext\n"
    graph = _graph(**{"hub.services.store": source, "hub.plugin.context": ""})
    assert layout.room_violations(graph) == [
        "hub.services.store line 3: hub.services may not import hub.plugin (hub.plugin.context)"
    ]


def test_a_core_module_using_the_public_package_and_a_plugin_using_a_module_are_caught():
    graph = _graph(
        **{
            "hub.host": "from hub import Tool, __version__\n",
            "hub.builtin.core": "from hub.plugin.items import Tool\n",
        }
    )
    problems = layout.room_violations(graph)
    assert any("hub.host line 1: imports Tool from the public `hub`" in p for p in problems), problems
    assert any("hub.builtin.core line 1: a built-in plugin imports hub.plugin.items" in p for p in problems)


def test_a_cycle_through_a_function_level_or_type_checking_import_is_caught():
    graph = _graph(
        **{
            "hub.plugin.registry": "def f():\n    from hub.plugin.context import PluginContext\n",
            "hub.plugin.context": "if TYPE_CHECKING:\n    from hub.plugin.registry import Registry\n",
        }
    )
    assert layout.cycles(graph) == [["hub.plugin.context", "hub.plugin.registry"]]


def test_private_sdk_use_outside_the_sdk_modules_is_caught():
    source = "from mcp.shared._context_streams import x\nsession._dispatcher.send(1)\n"
    assert layout.private_sdk_uses(source, "hub.client.cache") == [
        "line 1: from mcp.shared._context_streams import ...",
        "line 2: ._dispatcher",
    ]
    assert layout.private_sdk_uses(source, "hub.client.sdk") == []


def test_a_long_function_is_caught_unless_it_says_why():
    body = "".join(f"    x = {i}\n" for i in range(70))
    assert layout.long_functions(f"def long():\n{body}") == [("long", 1, 71)]
    assert (
        layout.long_functions(f"# one piece: a state machine read top to bottom\ndef long():\n{body}") == []
    )
