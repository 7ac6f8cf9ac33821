"""The store under faults, with real processes and real filesystems: a corrupted database file, a
read-only bind mount, a tmpfs that fills up (before start and while serving), and the database
deleted under running hubs. Every fault is one line naming the file, the cause and the fix, exit
2 at start and an `isError` for a tool while serving; nothing is half-written; a hub never keeps
writing to a database no other hub can see."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from hubtests import HubProcess, StdioPeer, gone, hub_env, stop_shared_hubs, wait_for
from mounts import fill, read_only, tmpfs

pytestmark = pytest.mark.timeout(120)


def hub(tmp_path: Path, *args: str, share: bool = False, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = hub_env(tmp_path, HUB_SHARE="1" if share else "0", HUB_FAST_START="0")
    return subprocess.run(
        [sys.executable, "-m", "hub", "--plugins", "", *args],
        env=env,
        cwd=tmp_path,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def one_line(done: subprocess.CompletedProcess[str], *words: str) -> str:
    """The command failed with exit 2 and said one line (no traceback) holding every word."""
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


# A request on stdin so that `hub serve` starts its hub (an empty stdin ends it at once).
LIST = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "ping"}) + "\n"


def test_a_corrupted_database_is_named_with_the_fix(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    database = state / "hub.sqlite"
    database.write_bytes(b"this is not a database, it is a note someone saved here\n" * 20)
    before = database.read_bytes()
    for args, share in ((["budget"], False), (["serve"], False), (["serve"], True)):
        done = hub(tmp_path, "--state-dir", str(state), *args, share=share, stdin=LIST)
        one_line(done, str(database), "not a SQLite database", f"mv {database} {database}.broken")
    assert database.read_bytes() == before  # never "repaired" over the user's file


def test_a_read_only_state_directory_is_named_with_the_fix(tmp_path):
    state = tmp_path / "state"
    assert hub(tmp_path, "--state-dir", str(state), "budget").returncode == 0  # a store exists
    with read_only(state):
        done = hub(tmp_path, "--state-dir", str(state), "budget")
        one_line(done, str(state / "hub.sqlite"), "read-only filesystem", "--state-dir")
        done = hub(tmp_path, "--state-dir", str(state), "serve", stdin=LIST)
        one_line(done, "read-only filesystem")
        # Shared mode: the bridge cannot even make logs/ there, and says so instead of a traceback.
        done = hub(tmp_path, "--state-dir", str(state), "serve", share=True, stdin=LIST)
        one_line(done, str(state / "logs"), "Read-only file system", "--state-dir")


def test_a_full_filesystem_at_start_is_named_and_leaves_nothing(tmp_path):
    with tmpfs(tmp_path / "disk", "256k") as disk:
        fill(disk)
        for args, share in ((["budget"], False), (["serve"], False), (["serve"], True)):
            state = disk / f"state-{args[0]}-{share}"
            done = hub(tmp_path, "--state-dir", str(state), *args, share=share, stdin=LIST)
            # Shared: the process could not even write its log; the bridge still says why.
            one_line(done, str(state), "is full", "free space")
            assert not (state / "hub.sqlite").exists()  # nothing half-made for the next start


def test_a_filesystem_that_fills_while_serving(tmp_path):
    """Writes fail with the reason as a tool error, the hub goes on, and writes work again once
    there is room; what was written before is intact."""
    with tmpfs(tmp_path / "disk", "8m") as disk:
        env = hub_env(tmp_path, HUB_STATE_DIR=str(disk / "state"))
        peer = HubProcess(tmp_path, "a", env, "--plugins", "")
        try:
            peer.call("context_set", key="before", value="kept")
            filler = fill(disk)
            # The WAL may hold a few free pages: write until the disk's fullness shows.
            results = (
                peer._call("context_set", {"key": f"big{i}", "value": "x" * 60_000}) for i in range(50)
            )
            failed = next(r for r in results if r.get("isError"))
            error = failed["content"][0]["text"]
            assert str(disk / "state" / "hub.sqlite") in error and "is full" in error, error
            assert peer.call("context_get", key="before")["value"] == "kept"
            filler.unlink()
            peer.call("context_set", key="after", value="room again")
            assert peer.call("context_get", key="after")["value"] == "room again"
        finally:
            peer.close()


def _keys(database: Path) -> set[str]:
    with sqlite3.connect(database) as conn:
        return {row[0] for row in conn.execute("SELECT key FROM context_scoped")}


def _delete(database: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        database.with_name(database.name + suffix).unlink(missing_ok=True)


def test_a_database_deleted_under_running_hubs_stops_their_writes(tmp_path):
    """No split brain: hub A, whose database was deleted, refuses to write (naming the file and
    the fix) instead of writing into a file no other hub sees; hub B, started after, has the new
    file to itself; A's `hub://status` says what happened."""
    env = hub_env(tmp_path)
    database = tmp_path / "state" / "hub.sqlite"
    a = HubProcess(tmp_path, "a", env, "--plugins", "")
    b = None
    try:
        a.call("context_set", key="from_a", value="1")
        _delete(database)
        b = HubProcess(tmp_path, "b", env, "--plugins", "")
        b.call("context_set", key="from_b", value="2")
        error = a.call_error("context_set", key="from_a_later", value="3")
        assert str(database) in error and "deleted or replaced" in error and "restart" in error, error
        assert "problem" in a.resource("hub://status")["store"]  # type: ignore[index]
        assert a.resource("hub://status")["store"]["problem"]  # type: ignore[index]
        assert _keys(database) == {"from_b"}
    finally:
        a.close()
        if b is not None:
            b.close()


def test_the_shared_process_exits_when_its_database_is_deleted_and_the_session_goes_on(tmp_path):
    env = hub_env(tmp_path, HUB_SHARE="1", HUB_FAST_START="0")
    database = tmp_path / "state" / "hub.sqlite"
    (tmp_path / "s").mkdir()
    session = StdioPeer(["--plugins", "", "serve"], env, tmp_path / "s")
    try:
        session.initialize()
        assert "result" in session.request(
            "tools/call", {"name": "context_set", "arguments": {"key": "k1", "value": "1"}}
        )  # type: ignore[operator]
        (first,) = wait_for(lambda: psutil.Process(session.proc.pid).children(), what="the shared process")
        _delete(database)
        wait_for(lambda: gone(first.pid), what="the shared process to notice and exit")
        reply = session.request(
            "tools/call", {"name": "context_set", "arguments": {"key": "k2", "value": "2"}}
        )
        assert isinstance(reply, dict) and not reply["result"].get("isError"), reply
        assert _keys(database) == {"k2"}  # the new process writes to the file now at the path
        logs = "".join(p.read_text() for p in (tmp_path / "state" / "logs").glob("shared-*.log"))
        assert "the store was deleted or replaced" in logs, logs
    finally:
        stop_shared_hubs(env, tmp_path / "s")
        session.close()
