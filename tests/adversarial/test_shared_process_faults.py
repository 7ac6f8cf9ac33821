"""Faults of the shared hub process behind `hub serve` bridges: kill -9 under a burst, a process
that deletes its successor's socket, a listener that never answers, over-long request lines,
hostile socket directories. Real processes throughout (bridges, the shared process, the test
downstream server)."""

from __future__ import annotations

import os
import random
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from bridges import Bridge, shared_pids
from hubtests import DOWNSTREAM, hub_env, wait_for

pytestmark = pytest.mark.timeout(240)

RESTARTED = "the hub restarted while this request was running"


@pytest.fixture
def shared_env(tmp_path) -> Iterator[dict[str, str]]:
    """Sharing on, the proxy and the test downstream server, and no process left afterwards."""
    env = hub_env(tmp_path, HUB_SHARE="1", HUB_PLUGINS="proxy", HUB_FAST_START="0")
    (tmp_path / "hub.toml").write_text(
        f'[daemon]\nidle_exit_s = 2\n[servers.d]\ncommand = "{sys.executable}"\nargs = ["{DOWNSTREAM}"]\n'
    )
    env["HUB_CONFIG"] = str(tmp_path / "hub.toml")
    yield env
    for pid in shared_pids(tmp_path):
        os.kill(pid, signal.SIGKILL)


def _burst(session: int, trial: int) -> tuple[bytes, list[str]]:
    """20 calls: a 1 s downstream sleep, a context_set and an echo, in turn; one write."""
    lines, ids = [], []
    for n in range(20):
        request_id = f"s{session}-t{trial}-{n}"
        if n % 3 == 0:
            call = {"name": "d__sleep", "arguments": {"seconds": 1}}
        elif n % 3 == 1:
            call = {"name": "context_set", "arguments": {"key": f"k{session}", "value": request_id}}
        else:
            call = {"name": "d__echo", "arguments": {"text": request_id}}
        lines.append(
            f'{{"jsonrpc":"2.0","id":"{request_id}","method":"tools/call","params":{_json(call)}}}\n'
        )
        ids.append(request_id)
    return "".join(lines).encode(), ids


def _json(value: object) -> str:
    import json

    return json.dumps(value)


@pytest.mark.parametrize(("stdio", "trials"), [("pipes", 4), ("sockets", 2)])
def test_kill_9_under_a_burst_answers_every_request_exactly_once(shared_env, tmp_path, stdio, trials):
    """Found by a hostile test: three sessions send 20 calls at once and the shared process is
    killed 10-20 ms into the burst; the lines it had read but not yet reported to the bridges
    got no reply at all. Every request must get exactly one: its result, or the error saying the
    hub restarted. With pipes (tee(2) peeks them) and sockets (MSG_PEEK), as Node gives them."""
    sessions = [Bridge(shared_env, tmp_path, sockets=stdio == "sockets") for _ in range(3)]
    try:
        for bridge in sessions:
            bridge.initialize()
        wait_for(  # the proxy learns the downstream's tools once, in the background
            lambda: (
                "d__sleep"
                in [
                    t["name"]
                    for t in sessions[0].request(f"l{time.monotonic_ns()}", "tools/list")["result"]["tools"]
                ]
            ),
            what="the downstream server's tools",
        )
        rng = random.Random(27)
        sent: list[list[str]] = [[] for _ in sessions]
        restarted = 0
        for trial in range(trials):
            (pid,) = wait_for(lambda: shared_pids(tmp_path), what="the shared process")
            for i, bridge in enumerate(sessions):  # each session served by the live process
                bridge.request(f"p{i}-{trial}", "ping")
            bursts = [_burst(i, trial) for i in range(len(sessions))]
            delay = rng.uniform(0.010, 0.020)
            start = time.monotonic()
            for bridge, (data, _ids) in zip(sessions, bursts, strict=True):
                bridge.write(data)
            time.sleep(max(0.0, start + delay - time.monotonic()))
            os.kill(pid, signal.SIGKILL)
            for i, (bridge, (_, ids)) in enumerate(zip(sessions, bursts, strict=True)):
                sent[i] += ids
                bridge.wait_replies(ids)
            restarted += sum(
                RESTARTED in str(r.get("error", {}).get("message", ""))
                for b, s in zip(sessions, sent, strict=True)
                for rid in s[-20:]
                for r in b.replies(rid)
            )
        assert restarted > 0  # the kills did land on requests in flight
    finally:
        codes = [bridge.finish() for bridge in sessions]  # every answer written, then the end
    assert codes == [0, 0, 0]
    for bridge, ids in zip(sessions, sent, strict=True):
        counts = bridge.answer_counts()
        twice = {rid: counts[rid] for rid in ids if counts[rid] != 1}
        assert twice == {}, f"answered other than once: {twice}"
        # Where a process died mid-answer, the line it began is spoiled (the client drops it).
        assert all(line.strip() in (b"", b"#") or line.rstrip().endswith(b"#") for line in bridge.garbage)


def _socket_of(env: dict[str, str], cwd: Path) -> tuple[int, Path]:
    """Start the launch's shared process with one session, and give its pid and socket path."""
    bridge = Bridge(env, cwd)
    try:
        bridge.initialize()
        (pid,) = shared_pids(cwd)
    finally:
        bridge.finish()
    (socket_path,) = [Path(p) for p in _open_unix_sockets(pid)]
    return pid, socket_path


def _open_unix_sockets(pid: int) -> list[str]:
    import psutil

    return sorted({c.laddr for c in psutil.Process(pid).net_connections(kind="unix") if c.laddr})


def test_a_listener_that_never_answers_costs_a_new_bridge_seconds_not_minutes(shared_env, tmp_path):
    """Found by a hostile test: a process listening on the launch's socket that takes the
    connection and never answers held every new bridge for 91 s (three 30 s pings), longer
    than MCP clients wait for a server to start. The probe is bounded; the listener is replaced."""
    import socket

    pid, socket_path = _socket_of(shared_env, tmp_path)
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not shared_pids(tmp_path), what="the shared process to die")
    socket_path.unlink()
    squatter = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    squatter.bind(str(socket_path))
    squatter.listen(16)  # connections queue in the kernel; nothing ever answers them
    bridge = Bridge(shared_env, tmp_path)
    try:
        bridge.send({"jsonrpc": "2.0", "id": "init", "method": "initialize", "params": _init()})
        bridge.wait_replies(["init"], timeout=30)  # a bound for a hung test: it was 91 s
        assert "result" in bridge.replies("init")[0]
        assert "hub: " not in bridge.stderr_path.read_text()
    finally:
        bridge.finish()
        squatter.close()


def _init() -> dict[str, object]:
    from bridges import INIT

    return INIT


def test_an_old_process_never_removes_its_successors_socket(shared_env, tmp_path):
    """Found by a hostile test: with its socket path deleted (or the process stopped long enough
    for a new bridge to replace it), a shared process removed the path when it exited, though
    a new process listened there by then: the live process became unreachable and the next
    bridge started a third."""
    old = Bridge(shared_env, tmp_path)
    old.initialize()
    (first,) = shared_pids(tmp_path)
    (socket_path,) = _open_unix_sockets(first)
    os.unlink(socket_path)
    new = Bridge(shared_env, tmp_path)  # finds no socket: starts a second process at the path
    try:
        new.initialize()
        (second,) = [pid for pid in shared_pids(tmp_path) if pid != first]
        assert old.finish() == 0  # its session ends; the old process exits once idle
        wait_for(lambda: first not in shared_pids(tmp_path), what="the old process to exit")
        third = Bridge(shared_env, tmp_path)
        try:
            third.initialize()
            assert shared_pids(tmp_path) == [second]  # reached, not replaced by a third process
        finally:
            third.finish()
    finally:
        new.finish()


def test_a_directory_at_the_socket_path_is_stepped_around(shared_env, tmp_path):
    """Found by a hostile test: a directory where the socket goes crashed the bridge with a
    traceback. The socket goes to the next name instead; the directory is left alone."""
    pid, socket_path = _socket_of(shared_env, tmp_path)
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not shared_pids(tmp_path), what="the shared process to die")
    socket_path.unlink()
    socket_path.mkdir()
    (socket_path / "keep").write_text("the user's")
    bridge = Bridge(shared_env, tmp_path)
    try:
        assert "result" in bridge.initialize()
        (pid,) = shared_pids(tmp_path)
        assert _open_unix_sockets(pid) == [str(socket_path.with_name(socket_path.stem + "-1.sock"))]
    finally:
        bridge.finish()
    assert (socket_path / "keep").read_text() == "the user's"
    assert "Traceback" not in bridge.stderr_path.read_text()


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to plant another user's files")
def test_the_tmp_fallback_never_follows_or_chmods_another_users_directory(shared_env, tmp_path):
    """Found by a hostile test: with no XDG_RUNTIME_DIR and a state directory too deep for a
    socket path, the bridge falls back to /tmp/hub-<uid>; another user's symlink there made it
    chmod the link's target to 0700 and put the socket in it, and a squatted directory stopped
    the hub from starting. Both are passed over; when every name is taken, it says what to fix."""
    import shutil
    import stat
    import tempfile

    nobody = 65534
    tmp = Path(tempfile.mkdtemp(prefix="h", dir="/tmp"))  # short: a socket path has 108 bytes
    try:
        victim = tmp_path / "victim"
        victim.mkdir(mode=0o755)
        os.chmod(victim, 0o755)
        (tmp / f"hub-{os.getuid()}").symlink_to(victim)
        os.lchown(tmp / f"hub-{os.getuid()}", nobody, nobody)
        (tmp / f"hub-{os.getuid()}-1").mkdir()
        os.chown(tmp / f"hub-{os.getuid()}-1", nobody, nobody)
        env = {**shared_env, "TMPDIR": str(tmp), "HUB_STATE_DIR": str(tmp_path / ("deep" * 30))}
        env.pop("XDG_RUNTIME_DIR", None)
        bridge = Bridge(env, tmp_path)
        try:
            assert "result" in bridge.initialize()
            (pid,) = shared_pids(tmp_path)
            (used,) = _open_unix_sockets(pid)
            assert Path(used).parent == tmp / f"hub-{os.getuid()}-2"
        finally:
            bridge.finish()
        assert stat.S_IMODE(victim.stat().st_mode) == 0o755 and list(victim.iterdir()) == []
        for n in (2, 3):  # every name taken: a clear error, not a traceback
            shutil.rmtree(tmp / f"hub-{os.getuid()}-{n}", ignore_errors=True)
            (tmp / f"hub-{os.getuid()}-{n}").mkdir()
            os.chown(tmp / f"hub-{os.getuid()}-{n}", nobody, nobody)
        refused = Bridge(
            {**env, "HUB_CONFIG": str(tmp_path / "hub.toml")}, tmp_path, "--set", "log_level=debug"
        )
        assert refused.finish() == 2
        said = refused.stderr_path.read_text()
        assert "no private directory for the hub's socket" in said and "belongs to uid 65534" in said
        assert "Traceback" not in said
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def _long_line(bridge: Bridge, request_id: str, megabytes: int, *, id_last: bool) -> None:
    """A `context_set` request with a value of `megabytes` MB, written 1 MB at a time (never
    whole in memory); its id first, or last as the TypeScript SDK (Claude Code) writes it."""
    head = b'{"jsonrpc":"2.0",' + (b"" if id_last else f'"id":"{request_id}",'.encode())
    bridge.write(
        head + b'"method":"tools/call","params":{"name":"context_set","arguments":{"key":"k","value":"'
    )
    chunk = b"x" * (1 << 20)
    for _ in range(megabytes):
        bridge.write(chunk)
    bridge.write(b'"}}' + (f',"id":"{request_id}"' if id_last else "").encode() + b"}\n")


def test_a_400_mb_request_line_is_refused_with_flat_memory_and_the_session_goes_on(shared_env, tmp_path):
    """Found by a hostile test: a 400 MB request line on stdio took the shared process to
    1.29 GB (HTTP caps bodies at 4 MB; stdio had no cap): one session could take memory from
    all. A line over `[limits] max_line_bytes` is read past, answered with an error naming the
    limit (with its id, found at its start or its end), and the session goes on."""
    bridge, other = Bridge(shared_env, tmp_path), Bridge(shared_env, tmp_path)
    try:
        bridge.initialize()
        other.initialize()
        (pid,) = shared_pids(tmp_path)
        before = _peak_rss(pid)
        _long_line(bridge, "big", 400, id_last=True)
        bridge.wait_replies(["big"], timeout=120)
        (refused,) = bridge.replies("big")
        assert refused["error"]["code"] == -32600
        assert "over the hub's limit of 4,194,304 bytes" in refused["error"]["message"]
        assert "max_line_bytes" in refused["error"]["message"]
        assert _peak_rss(pid) - before < 64 << 20  # it was 1.2 GB more
        ok = bridge.request("after", "tools/call", {"name": "context_get", "arguments": {"key": "k"}})
        assert "result" in ok
        assert "result" in other.request("other", "ping")
    finally:
        bridge.finish()
        other.finish()


def test_an_over_long_line_in_process_is_refused_and_the_session_goes_on(shared_env, tmp_path):
    peer = Bridge(shared_env, tmp_path, "--no-share", "--set", "limits.max_line_bytes=100000")
    try:
        peer.initialize()
        _long_line(peer, "long", 1, id_last=False)
        peer.wait_replies(["long"])
        (refused,) = peer.replies("long")
        assert "over the hub's limit of 100,000 bytes" in refused["error"]["message"]
        assert "result" in peer.request("after", "ping")
    finally:
        assert peer.finish() == 0
