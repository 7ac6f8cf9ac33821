"""Which store a hub opens (`open_store`), and reading one without opening it as a hub does
(`read_only_rows`, for the quick commands). The store's interface is `hub.services.store`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from hub.services.store import Store

if TYPE_CHECKING:
    from hub.config.settings import HubConfig

__all__ = ["open_store", "read_only_rows", "sqlite_path"]


def open_store(config: HubConfig) -> Store:
    """The store `config` names: PostgreSQL for a `state_url`, else SQLite under `state_dir`.
    Raises `StoreError` (one line) when it cannot be opened."""
    url = config.store_url()
    if url:
        from hub.services.postgres_store import PostgresStore

        return PostgresStore(url)
    from hub.services.sqlite_store import SQLiteStore

    return SQLiteStore.in_state_dir(config.state_dir)


def sqlite_path(config: HubConfig) -> Path | None:
    """The SQLite file of `config`'s store, or None when its store is PostgreSQL."""
    return None if config.store_url() else config.state_dir / "hub.sqlite"


def read_only_rows(
    state_dir: Path, url: str | None, sql: str, *, quiet: bool = True, timeout_s: float = 2.0
) -> list[dict[str, Any]]:
    """The rows of `sql` as dicts, read without opening the store as a hub does (no migration,
    nothing written), for commands that must be quick (`hub statusline`, `hub status`, `hub servers
    list`): from `state_dir`'s SQLite file, or the PostgreSQL database at `url`. [] when there is
    no store or table yet; a store that cannot be read gives [] too when `quiet`, else `StoreError`."""
    if url:
        return _postgres_rows(url, sql, quiet=quiet, timeout_s=timeout_s)
    import sqlite3

    database = state_dir / "hub.sqlite"
    if not database.exists():
        return []
    try:
        conn = sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=timeout_s)
        conn.row_factory = sqlite3.Row
        try:
            return [dict(row) for row in conn.execute(sql).fetchall()]
        finally:
            conn.close()
    except sqlite3.Error:
        return []


def _postgres_rows(url: str, sql: str, *, quiet: bool, timeout_s: float) -> list[dict[str, Any]]:
    try:
        import psycopg
        from psycopg.rows import dict_row
    except ImportError:
        if quiet:
            return []
        from hub.services.postgres_store import PostgresStore

        PostgresStore(url)  # raises the one-line StoreError naming the fix
        raise
    try:
        with psycopg.connect(
            url, connect_timeout=max(1, round(timeout_s)), row_factory=dict_row, application_name="hub"
        ) as conn:
            return list(conn.execute(sql).fetchall())  # type: ignore[arg-type]
    except psycopg.errors.UndefinedTable:
        return []
    except psycopg.Error as exc:
        if quiet:
            return []
        from hub.services.postgres_store import describe_fault

        raise describe_fault(url, exc, opening=True) from None
