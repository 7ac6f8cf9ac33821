"""The shared context: key/value entries every plugin can read (the pool puts them in system prompts).

Entries are persisted in the store. Keys are short identifiers; values are text with a size
limit, so a runaway caller cannot fill every later prompt.

Each entry has a scope: the project it was set in (its git top level, else the hub's working
directory), by default, or `global`, shared by every project. A hub sees its project's entries
and the global ones; where both have a key, the project's wins. So `language = rust` set in one
repository is not appended to the workers' prompts of another.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from hub.errors import ToolError
from hub.services.store import Connection, Store

__all__ = ["GLOBAL", "MAX_KEY_LENGTH", "MAX_VALUE_LENGTH", "ContextStore", "Scope", "project_root"]

MAX_KEY_LENGTH = 128
MAX_VALUE_LENGTH = 64 * 1024
_KEY = re.compile(r"[A-Za-z0-9_.:/-]+")

MIGRATIONS = [
    """
    CREATE TABLE context_entries (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL,
        updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
    );
    """,
    # Scopes: entries of before are kept as global ones (which project set them is not known).
    """
    CREATE TABLE context_scoped (
        scope TEXT NOT NULL,
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
        PRIMARY KEY (scope, key)
    );
    INSERT INTO context_scoped (scope, key, value, updated_at)
        SELECT 'global', key, value, updated_at FROM context_entries;
    DROP TABLE context_entries;
    """,
]

GLOBAL = "global"
Scope = Literal["project", "global"]


def project_root(start: Path | None = None) -> Path:
    """The project a hub serves: the git top level above `start` (a `.git` directory or file),
    else `start` itself (default: the working directory)."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / ".git").exists():
            return folder
    return here


def check_key(key: str) -> str:
    if not key or len(key) > MAX_KEY_LENGTH or not _KEY.fullmatch(key):
        shown = key if len(key) <= 40 else key[:40] + "..."
        raise ToolError(f"invalid context key {shown!r}: use 1-{MAX_KEY_LENGTH} letters, digits or _ . : / -")
    return key


def check_value(key: str, value: str) -> str:
    if len(value) > MAX_VALUE_LENGTH:
        raise ToolError(
            f"context value for {key!r} is {len(value):,} characters; the limit is {MAX_VALUE_LENGTH:,}. "
            "Put large material in a file and store its path."
        )
    return value


class ContextStore:
    """Persistent shared key/value entries, per project and global."""

    def __init__(self, store: Store, project: Path | str | None = None) -> None:
        self.store = store
        self.project = str(project if project is not None else project_root())

    def _scope(self, scope: Scope) -> str:
        return GLOBAL if scope == "global" else self.project

    async def setup(self, initial: Mapping[str, str]) -> None:
        """Create the table and write `[context]` entries from hub.toml as this project's (they
        win over older values)."""
        await self.store.migrate("context", MIGRATIONS)
        for key, value in initial.items():
            await self.set(key, value)

    async def set(self, key: str, value: str, scope: Scope = "project") -> None:
        check_value(check_key(key), value)
        await self.store.execute(
            "INSERT INTO context_scoped (scope, key, value) VALUES (?, ?, ?) ON CONFLICT (scope, key) "
            "DO UPDATE SET value = excluded.value, updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')",
            (self._scope(scope), key, value),
        )

    async def get(self, key: str) -> str | None:
        """The value this project sees: its own, else the global one."""
        found = await self.lookup(key)
        return None if found is None else found[0]

    async def lookup(self, key: str) -> tuple[str, Scope] | None:
        """(value, scope) of what this project sees for `key`, or None."""
        row = await self.store.fetchone(
            "SELECT value, scope FROM context_scoped WHERE key = ? AND scope IN (?, ?) "
            "ORDER BY CASE WHEN scope = ? THEN 1 ELSE 0 END LIMIT 1",
            (key, self.project, GLOBAL, GLOBAL),
        )
        if row is None:
            return None
        return str(row["value"]), ("global" if row["scope"] == GLOBAL else "project")

    async def delete(self, key: str, scope: Scope = "project") -> bool:
        return (
            await self.store.execute(
                "DELETE FROM context_scoped WHERE scope = ? AND key = ?", (self._scope(scope), key)
            )
            > 0
        )

    async def entries(self) -> dict[str, tuple[str, Scope]]:
        """What this project sees, by key: (value, scope), the project's winning over global."""

        def read(conn: Connection) -> dict[str, tuple[str, Scope]]:
            seen: dict[str, tuple[str, Scope]] = {}
            rows = conn.execute(
                "SELECT key, value, scope FROM context_scoped WHERE scope IN (?, ?) "
                "ORDER BY key, CASE WHEN scope = ? THEN 1 ELSE 0 END",
                (self.project, GLOBAL, GLOBAL),
            )
            for key, value, scope in rows:
                if key not in seen:
                    seen[key] = (value, "global" if scope == GLOBAL else "project")
            return seen

        return await self.store.run(read)

    async def all(self) -> dict[str, str]:
        """What this project sees as {key: value}, the project's entries winning."""
        return {key: value for key, (value, _) in (await self.entries()).items()}

    async def as_prompt(self) -> str:
        """The entries as a block to append to a system prompt ('' when there are none)."""
        entries = await self.all()
        if not entries:
            return ""
        lines = "\n".join(f"- {key}: {value}" for key, value in entries.items())
        return f"Shared context:\n{lines}"
