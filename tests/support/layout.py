"""The hub's import graph, read from the source (type-checking imports included), and the rules
its layout keeps: which room may import which, no cycle, the SDK's private internals in one
module per side. `tests/test_layout.py` checks the real tree; its own tests plant violations."""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "ROOMS",
    "Import",
    "cycles",
    "imports_of",
    "module_graph",
    "private_sdk_uses",
    "room_of",
    "room_violations",
]

#: Each room of hub/ and the rooms it may import. A module at the top of hub/ is its own room.
#: `hub` (the package itself) is the public plugin API: only plugins import names from it.
ROOMS: dict[str, set[str]] = {
    "hub.errors": set(),
    "hub.log": set(),
    "hub.wire": {"hub.errors"},
    "hub.config": {"hub.errors"},
    # OpenTelemetry (the API only, the SDK when on): the hot paths of server, client and services
    # read its one flag.
    "hub.telemetry": {"hub.config"},
    "hub.services": {"hub.errors", "hub.config", "hub.telemetry"},
    "hub.client": {"hub.errors", "hub.wire", "hub.config", "hub.telemetry"},
    "hub.plugin": {"hub.errors", "hub.wire", "hub.config", "hub.services", "hub.client", "hub.telemetry"},
    "hub.server": {"hub.errors", "hub.wire", "hub.plugin", "hub.telemetry"},
    "hub.host": {
        "hub.errors",
        "hub.config",
        "hub.telemetry",
        "hub.services",
        "hub.client",
        "hub.plugin",
        "hub.server",
        "hub.builtin",
    },
    "hub.launch": {"hub.errors", "hub.wire", "hub.config", "hub.services", "hub.server", "hub.host"},
    # `hub dashboard`'s page: asks shared processes (hub.launch.control), reads the store.
    "hub.dashboard": {"hub.errors", "hub.config", "hub.services", "hub.launch"},
    "hub.builtin": set(),  # a plugin: the public `hub` API only
    "hub.testing": {"hub.config", "hub.host"},
    "hub.__main__": {"hub.cli"},
    "hub.cli": {
        "hub.errors",
        "hub.log",
        "hub.wire",
        "hub.config",
        "hub.services",
        "hub.client",
        "hub.plugin",
        "hub.server",
        "hub.host",
        "hub.launch",
        "hub.dashboard",
    },
}
#: Names of the top-level package any module may import (it is not the plugin API).
PACKAGE_NAMES = {"__version__"}
#: The SDK's private modules and attributes, allowed only in these modules.
SDK_MODULES = {
    "hub.client.sdk",
    "hub.server.sdk",
    # The SDK's OAuth client has no public hooks for what the hub needs (tokens restored with their
    # expiry, leased refreshes, a provider that never opens a browser): its private steps are
    # overridden in this one module (`HubOAuthProvider`).
    "hub.client.sdk_oauth",
}


@dataclass(frozen=True)
class Import:
    module: str  # the importing module
    target: str  # the imported module (or `hub` for a name of the package)
    names: tuple[str, ...]
    line: int
    type_checking: bool


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(source: str, module: str) -> list[Import]:
    """Every `hub...` import of a module, at any depth (inside functions and `if TYPE_CHECKING`)."""
    tree = ast.parse(source)
    found: list[Import] = []
    checking: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            checking.update(id(child) for stmt in node.body for child in ast.walk(stmt))
    package = module.rsplit(".", 1)[0] if "." in module else module
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            if base != "hub" and not base.startswith("hub."):
                continue
            names = tuple(alias.name for alias in node.names)
            if base == "hub" or base in (
                "hub.client",
                "hub.server",
                "hub.plugin",
                "hub.services",
                "hub.launch",
                "hub.cli",
                "hub.wire",
                "hub.config",
                "hub.builtin",
            ):
                # `from hub.plugin import spec`: a module of the package, or a name of it
                for name in names:
                    found.append(
                        Import(
                            module,
                            f"{base}.{name}" if base != "hub" else "hub",
                            (name,),
                            node.lineno,
                            id(node) in checking,
                        )
                    )
            else:
                found.append(Import(module, base, names, node.lineno, id(node) in checking))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "hub" or alias.name.startswith("hub."):
                    found.append(Import(module, alias.name, (), node.lineno, id(node) in checking))
    return found


def module_graph(root: Path) -> dict[str, list[Import]]:
    """Module name -> its hub imports, for every module under `root/hub`."""
    graph: dict[str, list[Import]] = {}
    for path in sorted((root / "hub").rglob("*.py")):
        name = module_name(root, path)
        graph[name] = imports_of(path.read_text(), name)
    return graph


def room_of(module: str) -> str:
    """`hub.client.cache` -> `hub.client`; `hub.host` -> `hub.host`; `hub` -> `hub`."""
    parts = module.split(".")
    return ".".join(parts[:2])


def _resolve(target: str, modules: Iterable[str]) -> str:
    """An imported module name as a module of the tree (`hub.plugin.spec`), else as given."""
    known = set(modules)
    while target not in known and "." in target:
        target = target.rsplit(".", 1)[0]
    return target


def room_violations(graph: Mapping[str, list[Import]]) -> list[str]:
    """Imports that break `ROOMS`, one line each."""
    problems: list[str] = []
    for module, imports in graph.items():
        room = room_of(module)
        if room == "hub":
            continue  # the package's lazy exports
        allowed = ROOMS.get(room)
        if allowed is None:
            problems.append(f"{module}: room {room} is not in the layout (tests/support/layout.py ROOMS)")
            continue
        for imp in imports:
            if imp.target == "hub":
                if room != "hub.builtin" and not set(imp.names) <= PACKAGE_NAMES:
                    problems.append(
                        f"{module} line {imp.line}: imports {', '.join(imp.names)} from the public `hub` "
                        "package, which only plugins use; import the module that defines it"
                    )
                continue
            if room == "hub.builtin":
                problems.append(
                    f"{module} line {imp.line}: a built-in plugin imports {imp.target}; use `hub`"
                )
                continue
            target_room = room_of(_resolve(imp.target, graph))
            if target_room != room and target_room not in allowed:
                problems.append(
                    f"{module} line {imp.line}: {room} may not import {target_room} ({imp.target})"
                )
    return problems


def cycles(graph: Mapping[str, list[Import]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan), type-checking imports counted."""
    edges = {
        module: sorted({_resolve(imp.target, graph) for imp in imports if imp.target != "hub"} & set(graph))
        for module, imports in graph.items()
    }
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []
    counter = [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in edges.get(node, []):
            if nxt == node:
                continue
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                item = stack.pop()
                on_stack.discard(item)
                group.append(item)
                if item == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return groups


PRIVATE_SDK = (
    "mcp.shared._",
    "mcp.client._",
    "mcp.server._",
    "._dispatcher",
    "._stamp",
    "._connection",
    "._server_instances",
    "._session_owners",
    "._admit_session",
    "._requests_in_flight",
    "._idle_timeout",
)


def private_sdk_uses(source: str, module: str) -> list[str]:
    """Uses of the SDK's private modules or attributes in `source` (lines), for a module that is not
    one of `SDK_MODULES`."""
    if module in SDK_MODULES:
        return []
    tree = ast.parse(source)
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("mcp"):
            if any(part.startswith("_") for part in (node.module or "").split(".")):
                found.append(f"line {node.lineno}: from {node.module} import ...")
        elif isinstance(node, ast.Attribute) and f".{node.attr}" in PRIVATE_SDK:
            found.append(f"line {node.lineno}: .{node.attr}")
    return found


#: A function longer than this must say why it is one piece: a comment starting `# one piece:`
#: on the line above its `def` (or its decorators) or in its first lines.
MAX_FUNCTION_LINES = 60


def long_functions(source: str) -> list[tuple[str, int, int]]:
    """(name, first line, length) of each function over `MAX_FUNCTION_LINES` lines that does not
    say why it must be one piece."""
    tree = ast.parse(source)
    lines = source.splitlines()
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        length = (node.end_lineno or node.lineno) - node.lineno + 1
        if length <= MAX_FUNCTION_LINES:
            continue
        first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
        window = lines[max(0, first - 3) : node.lineno + 6]
        if any(line.strip().startswith("# one piece:") for line in window):
            continue
        found.append((node.name, node.lineno, length))
    return found
