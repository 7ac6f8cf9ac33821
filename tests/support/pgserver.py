"""A real PostgreSQL server for the tests: Debian's `postgresql` package, one server per session.

The server refuses to run as root, so `initdb` and `pg_ctl` run as the `postgres` user
(`runuser`) on a temporary directory that user owns, on a free port, with durability off (a test
server: fsync, synchronous commit and full-page writes off). It listens on loopback, and on the
root side of the veth pair `netns_host` makes (169.254.77.1), so a process in that network
namespace reaches it over TCP as another machine would.

Each test gets a schema of its own (`PostgresServer.new_url`: ``options=-csearch_path=...``), so
tests never see each other's tables, channels or locks, at the cost of a `CREATE SCHEMA`.
Fixtures (registered by the root conftest.py): `pg` (the session's server, started on first use),
`pg_url` (a fresh schema's URL), `store_env` (parametrized: the environment that puts a hub
subprocess's state in SQLite or in PostgreSQL).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

__all__ = ["PostgresServer", "netns_host", "pg", "pg_url", "store_env"]

BIN = Path("/usr/lib/postgresql")
VETH_HOST = "169.254.77.1"
VETH_GUEST = "169.254.77.2"
PASSWORD_USER = "hub_pw"
PASSWORD = "s3cret-pw"


def pg_bin(name: str) -> str:
    found = sorted(BIN.glob(f"*/bin/{name}"))
    if found:
        return str(found[-1])
    path = shutil.which(name)
    if path is None:
        raise FileNotFoundError(
            f"PostgreSQL's {name} is missing: run `python3 dev.py test` (it installs Debian's postgresql), "
            "or apt-get install -y postgresql"
        )
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


ROOT = os.geteuid() == 0


def as_postgres(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a PostgreSQL program as the postgres user (the server refuses root); as is when this
    is not root."""
    command = ["runuser", "-u", "postgres", "--", *argv] if ROOT else list(argv)
    done = subprocess.run(command, capture_output=True, text=True)
    if check and done.returncode:
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}): {done.stderr.strip()}")
    return done


class PostgresServer:
    """One PostgreSQL cluster in a temporary directory (see the module doc)."""

    def __init__(self) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="hub-pg-"))
        self.data = self.base / "data"
        self.log = self.base / "server.log"
        self.port = free_port()
        if ROOT:
            shutil.chown(self.base, "postgres", "postgres")
        os.chmod(self.base, 0o755)
        as_postgres(
            pg_bin("initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8"
        )
        hba = self.data / "pg_hba.conf"
        hba.write_text(
            "local all all trust\n"
            f"host all {PASSWORD_USER} 0.0.0.0/0 scram-sha-256\n"
            "host all all 127.0.0.1/32 trust\n"
            f"host all all {VETH_GUEST}/32 trust\n"
        )
        self.start()
        self.psql(f"CREATE ROLE {PASSWORD_USER} LOGIN PASSWORD '{PASSWORD}' SUPERUSER")
        self.psql("CREATE DATABASE hub")

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.base} -c listen_addresses='*' -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=300"
        )
        as_postgres(pg_bin("pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        as_postgres(pg_bin("pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop", check=False)

    def psql(self, sql: str, db: str = "postgres") -> str:
        out = as_postgres(
            pg_bin("psql"), "-h", str(self.base), "-p", str(self.port), "-U", "postgres", "-d", db,
            "-v", "ON_ERROR_STOP=1", "-At", "-c", sql,
        )  # fmt: skip
        return out.stdout

    def url(self, *, host: str = "127.0.0.1", schema: str | None = None, user: str = "postgres") -> str:
        url = f"postgresql://{user}@{host}:{self.port}/hub"
        return url + (f"?options=-csearch_path%3D{schema}" if schema else "")

    def new_schema(self) -> str:
        schema = "t_" + secrets.token_hex(6)
        self.psql(f"CREATE SCHEMA {schema}", db="hub")
        return schema

    def new_url(self, host: str = "127.0.0.1") -> str:
        return self.url(host=host, schema=self.new_schema())

    def query(self, schema: str, sql: str) -> str:
        return self.psql(f"SET search_path TO {schema}; {sql}", db="hub").strip().splitlines()[-1]

    def close(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.base, ignore_errors=True)


@pytest.fixture(scope="session")
def pg() -> Iterator[PostgresServer]:
    server = PostgresServer()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def pg_url(pg: PostgresServer) -> str:
    return pg.new_url()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_env(request: pytest.FixtureRequest) -> dict[str, str]:
    """The environment for a hub subprocess whose store is SQLite (its state directory) or a
    fresh PostgreSQL schema: `HUB_STATE_URL`."""
    if request.param == "sqlite":
        return {}
    server = request.getfixturevalue("pg")
    return {"HUB_STATE_URL": server.new_url()}


@contextlib.contextmanager
def netns_host(name: str | None = None) -> Iterator[str]:
    """A network namespace joined to this one by a veth pair: the namespace's name, for
    ``ip netns exec NAME ...``; inside it, PostgreSQL is at `VETH_HOST`. Removed afterwards."""
    name = name or f"hubw{secrets.token_hex(3)}"
    outer, inner = f"{name}a", f"{name}b"

    def ip(*args: str, check: bool = True) -> None:
        done = subprocess.run(["ip", *args], capture_output=True, text=True)
        if check and done.returncode:
            raise RuntimeError(
                f"ip {' '.join(args)} failed: {done.stderr.strip()} (a network namespace needs root "
                "with CAP_NET_ADMIN, and iproute2: `python3 dev.py test` installs it)"
            )

    ip("netns", "add", name)
    try:
        ip("link", "add", outer, "type", "veth", "peer", "name", inner)
        ip("link", "set", inner, "netns", name)
        ip("addr", "add", f"{VETH_HOST}/30", "dev", outer)
        ip("link", "set", outer, "up")
        ip("netns", "exec", name, "ip", "addr", "add", f"{VETH_GUEST}/30", "dev", inner)
        ip("netns", "exec", name, "ip", "link", "set", inner, "up")
        ip("netns", "exec", name, "ip", "link", "set", "lo", "up")
        yield name
    finally:
        ip("link", "del", outer, check=False)
        ip("netns", "del", name, check=False)
