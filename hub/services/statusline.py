"""One line of text per plugin for Claude Code's status line (`hub statusline`).

A plugin calls ``await hub.set_status_line("batch: 2 pending, 5 done, 0 failed")`` whenever its
state changes; the text is kept in the store, so `hub statusline` prints it with one read (of the
SQLite file, or of the PostgreSQL database of `state_url`) and no plugin import, fast enough to run
on every status-line refresh.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hub.services.store import Store

MIGRATIONS = [
    """
    CREATE TABLE status_lines (
        component TEXT PRIMARY KEY,
        text TEXT NOT NULL,
        updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
    );
    """,
]


async def setup(store: Store) -> None:
    await store.migrate("statusline", MIGRATIONS)


async def set_line(store: Store, component: str, text: str | None) -> None:
    """Show `text` for `component` (None or "" removes its line)."""
    if text:
        await store.execute(
            "INSERT INTO status_lines (component, text) VALUES (?, ?) ON CONFLICT (component) DO UPDATE "
            "SET text = excluded.text, updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')",
            (component, text),
        )
    else:
        await store.execute("DELETE FROM status_lines WHERE component = ?", (component,))


def read_lines(database: Path) -> list[str]:
    """The lines, by component name, read-only; none if there is no database or table yet."""
    if not database.exists():
        return []
    try:
        conn = sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=2)
        try:
            rows = conn.execute("SELECT text FROM status_lines ORDER BY component").fetchall()
        finally:
            conn.close()
    except sqlite3.Error:
        return []
    return [row[0] for row in rows]


def read_lines_url(url: str) -> list[str]:
    """The lines from the PostgreSQL store at `url`; none if it cannot be read (the status line
    must never fail) or has no table yet."""
    try:
        import psycopg

        with psycopg.connect(url, connect_timeout=2, application_name="hub statusline") as conn:
            rows = conn.execute("SELECT text FROM status_lines ORDER BY component").fetchall()
    except Exception:
        return []
    return [str(row[0]) for row in rows]
