"""What the plugin API tests check a plugin's source for: imports of a `hub.<module>` (a plugin
imports only from the top-level `hub` package)."""

from __future__ import annotations

import ast


def private_hub_imports(source: str) -> list[str]:
    """`hub.<module>` imports in `source` (a built-in plugin may import only from `hub`)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("hub."):
            names = ", ".join(alias.name for alias in node.names)
            found.append(f"line {node.lineno}: from {node.module} import {names}")
        elif isinstance(node, ast.Import):
            found += [f"line {node.lineno}: import {a.name}" for a in node.names if a.name.startswith("hub.")]
    return found
