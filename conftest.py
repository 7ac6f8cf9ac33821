"""Fixtures for every test folder (tests/ and plugins/*/tests): the session's PostgreSQL server
(`tests/support/pgserver.py`: `pg`, `pg_url`, `store_env`)."""

from pgserver import pg, pg_url, store_env

__all__ = ["pg", "pg_url", "store_env"]
