"""The shared context: key/value entries every plugin can read (the pool puts them in system prompts).

Entries are persisted in the store. Keys are short identifiers; values are text with a size
limit, so a runaway caller cannot fill every later prompt.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Mapping

from hub.errors import ToolError
from hub.store import Store

__all__ = ["MAX_KEY_LENGTH", "MAX_VALUE_LENGTH", "ContextStore"]

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
]


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
    """Persistent shared key/value entries."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def setup(self, initial: Mapping[str, str]) -> None:
        """Create the table and write `[context]` entries from hub.toml (they win over older values)."""
        await self.store.migrate("context", MIGRATIONS)
        for key, value in initial.items():
            await self.set(key, value)

    async def set(self, key: str, value: str) -> None:
        check_value(check_key(key), value)
        await self.store.execute(
            "INSERT INTO context_entries (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE "
            "SET value = excluded.value, updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')",
            (key, value),
        )

    async def get(self, key: str) -> str | None:
        row = await self.store.fetchone("SELECT value FROM context_entries WHERE key = ?", (key,))
        return None if row is None else str(row["value"])

    async def delete(self, key: str) -> bool:
        return await self.store.execute("DELETE FROM context_entries WHERE key = ?", (key,)) > 0

    async def all(self) -> dict[str, str]:
        def read(conn: sqlite3.Connection) -> dict[str, str]:
            return {
                row[0]: row[1] for row in conn.execute("SELECT key, value FROM context_entries ORDER BY key")
            }

        return await self.store.run(read)

    async def as_prompt(self) -> str:
        """The entries as a block to append to a system prompt ('' when there are none)."""
        entries = await self.all()
        if not entries:
            return ""
        lines = "\n".join(f"- {key}: {value}" for key, value in entries.items())
        return f"Shared context:\n{lines}"
