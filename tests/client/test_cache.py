"""The downstream connection cache, against real server processes."""

from __future__ import annotations

import os
import sys
import time

import anyio
import psutil
import pytest
from hubtests import DOWNSTREAM

from hub.client.cache import ConnectionCache, restart_delay
from hub.client.environment import child_environment
from hub.client.errors import ServerUnavailable
from hub.config.settings import ServerConfig

pytestmark = pytest.mark.anyio


def server(**extra) -> ServerConfig:
    return ServerConfig(command=sys.executable, args=[str(DOWNSTREAM)], **extra)


def children() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True) if p.status() != psutil.STATUS_ZOMBIE}


async def pid_of(session) -> int:
    result = await session.call_tool("whoami", {})
    return result.structured_content["pid"]


async def test_opened_on_first_use_reused_and_reaped(tmp_path):
    before = children()
    async with ConnectionCache({"d": server()}, log_dir=tmp_path) as cache:
        assert cache.status()["d"]["state"] == "stopped"
        async with cache.session("d") as session:
            pid = await pid_of(session)
        assert cache.status()["d"]["state"] == "ready"
        assert await pid_of(await cache.get("d")) == pid
        assert cache.status()["d"]["starts"] == 1
        assert pid in children()
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert children() == before


async def test_concurrent_first_uses_start_one_process(tmp_path):
    async with ConnectionCache({"d": server()}, log_dir=tmp_path) as cache:
        pids: list[int] = []

        async def use() -> None:
            async with cache.session("d") as session:
                pids.append(await pid_of(session))

        async with anyio.create_task_group() as tg:
            for _ in range(8):
                tg.start_soon(use)
        assert len(set(pids)) == 1
        assert cache.status()["d"]["starts"] == 1


async def test_call_tool_raw_on_a_cached_stdio_session_goes_past_it(tmp_path):
    """The public `call_tool_raw(session, ...)` sends on the lean client under a session the
    cache started (what `batch_execute` does under its lease), with the SDK path's semantics:
    the result as sent, progress, `REQUEST_TIMEOUT` after `timeout_s` (the server hears the
    cancellation), `CONNECTION_CLOSED` when it dies."""
    from mcp.shared.exceptions import MCPError
    from mcp.types import CONNECTION_CLOSED, REQUEST_TIMEOUT

    from hub.client.raw import _STDIO, call_tool_raw

    markers = tmp_path / "markers"
    markers.mkdir()
    async with ConnectionCache(
        {"d": server(env={"DOWNSTREAM_MARKER_DIR": str(markers)})}, log_dir=tmp_path
    ) as cache:
        async with cache.session("d") as session:
            assert session in _STDIO
            assert await call_tool_raw(session, "add", {"a": 2, "b": 3}) == {
                "content": [{"type": "text", "text": "5"}],
                "structuredContent": {"result": 5},
                "isError": False,
            }
            seen: list[float] = []

            async def on_progress(progress: float, total: float | None, message: str | None) -> None:
                seen.append(progress)

            counted = await call_tool_raw(session, "count", {"to": 2}, progress=on_progress)
            assert counted["structuredContent"] == {"result": 2} and seen == [1, 2]
            with pytest.raises(MCPError) as timed_out:
                await call_tool_raw(session, "sleep", {"seconds": 30, "tag": "lean"}, timeout_s=0.5)
            assert timed_out.value.code == REQUEST_TIMEOUT
            with anyio.fail_after(10):
                while not (markers / "cancelled-lean").exists():
                    await anyio.sleep(0.05)
            with pytest.raises(MCPError) as died:
                await call_tool_raw(session, "crash", {})
        assert died.value.code == CONNECTION_CLOSED


async def test_idle_connection_is_closed_and_reopened(tmp_path):
    async with ConnectionCache({"d": server(idle_timeout_s=0.3)}, log_dir=tmp_path) as cache:
        first = await pid_of(await cache.get("d"))
        with anyio.fail_after(10):
            while cache.status()["d"]["state"] == "ready":
                await anyio.sleep(0.05)
        assert cache.status()["d"]["state"] == "stopped"
        with anyio.fail_after(10):
            while psutil.pid_exists(first) and psutil.Process(first).status() != psutil.STATUS_ZOMBIE:
                await anyio.sleep(0.05)
        second = await pid_of(await cache.get("d"))
        assert second != first
        assert cache.status()["d"]["starts"] == 2


async def test_a_lease_keeps_an_idle_connection_open(tmp_path):
    async with ConnectionCache({"d": server(idle_timeout_s=0.2)}, log_dir=tmp_path) as cache:
        async with cache.session("d") as session:
            await anyio.sleep(0.6)
            assert cache.status()["d"]["state"] == "ready"
            assert (await session.call_tool("echo", {"text": "still"})).content[0].text == "still"


async def test_a_server_slower_to_start_than_its_idle_timeout_is_not_reaped_on_arrival(tmp_path):
    # Idle time counts from the handshake, not from the spawn: a server that takes 0.6 s to start
    # and idles out after 0.4 s is closed no sooner than 0.4 s after its handshake. Started the way
    # an eager server or a first use starts it (`_ready`), before any use touches it. Load only
    # delays the reaper, so the bound holds on a busy machine; counted from the spawn, the reaper
    # closes it at its first tick after the handshake (within 0.1 s).
    idle = 0.4
    config = server(idle_timeout_s=idle, env={"DOWNSTREAM_START_DELAY_S": "0.6"}, startup_timeout_s=30)
    async with ConnectionCache({"d": config}, log_dir=tmp_path) as cache:
        conn = await cache._ready("d")
        assert conn.ready_at is not None and conn.ready_at - conn.started_at >= 0.6
        with anyio.fail_after(30):
            await conn.stop.wait()  # the reaper decided to close it (idled out, as it should, in the end)
        assert time.monotonic() - conn.ready_at >= idle, (
            "closed sooner than idle_timeout_s after the handshake"
        )
        with anyio.fail_after(30):
            await conn.done.wait()
        # The next use starts it again.
        async with cache.session("d") as session:
            assert (await session.call_tool("echo", {"text": "ok"})).content[0].text == "ok"
        assert cache.status()["d"]["starts"] == 2


async def test_reopened_after_the_server_dies(tmp_path):
    async with ConnectionCache({"d": server()}, log_dir=tmp_path) as cache:
        session = await cache.get("d")
        first = await pid_of(session)
        with pytest.raises(Exception, match="Connection closed"):
            await session.call_tool("crash", {})
        with anyio.fail_after(10):
            while cache.status()["d"]["state"] == "ready":
                await anyio.sleep(0.02)
        status = cache.status()["d"]
        assert status["state"] == "died"
        assert "server 'd' exited" in status["last_error"]
        second = await pid_of(await cache.get("d"))
        assert second != first
        assert cache.status()["d"]["state"] == "ready"


async def test_command_not_found(tmp_path):
    async with ConnectionCache(
        {"nope": ServerConfig(command="no-such-command-xyz")}, log_dir=tmp_path
    ) as cache:
        with pytest.raises(ServerUnavailable) as caught:
            await cache.get("nope")
        assert str(caught.value) == (
            "server 'nope': command 'no-such-command-xyz' not found (check [servers.nope] command and PATH)"
        )
        assert cache.status()["nope"]["state"] == "failed"


async def test_server_that_exits_at_once(tmp_path):
    config = server(env={"DOWNSTREAM_EXIT_AT_ONCE": "1"}, startup_timeout_s=10)
    async with ConnectionCache({"d": config}, log_dir=tmp_path) as cache:
        with pytest.raises(ServerUnavailable) as caught, anyio.fail_after(20):
            await cache.get("d")
        message = str(caught.value)
        assert message.startswith("server 'd' ")
        assert "downstream: told to exit at once" in message  # its stderr is quoted
        # And it is retried on the next use (still failing, still clear).
        with pytest.raises(ServerUnavailable, match="told to exit at once"):
            await cache.get("d")
        assert cache.status()["d"]["starts"] == 2


async def test_a_server_that_keeps_failing_is_restarted_with_backoff(tmp_path, monkeypatch):
    assert [restart_delay(n) for n in range(1, 10)] == [0, 0.5, 1, 2, 4, 8, 16, 30, 30]
    # The second failure waits 60 s here instead of 0.5 s, so "refused within the delay" holds
    # however slow the machine is; the delay's end is then brought forward instead of slept.
    monkeypatch.setattr("hub.client.cache.restart_delay", lambda failures: 0 if failures < 2 else 60)
    config = server(env={"DOWNSTREAM_EXIT_AT_ONCE": "1"}, startup_timeout_s=10)
    async with ConnectionCache({"d": config}, log_dir=tmp_path) as cache:
        for _ in range(2):  # the first failure is retried at once; the second waits
            with pytest.raises(ServerUnavailable, match="told to exit at once"):
                await cache.get("d")
        with pytest.raises(ServerUnavailable) as caught:
            await cache.get("d")  # within the delay: refused without starting a process
        assert "server 'd' failed 2 times in a row; the hub starts it again in 6" in str(caught.value)
        assert "Last error: server 'd' failed to start" in str(caught.value)
        status = cache.status()["d"]
        assert status["starts"] == 2 and status["failures_in_a_row"] == 2
        assert 0 < status["restart_in_s"] <= 60
        cache._history["d"].retry_at = time.monotonic()  # as if the 60 s had passed
        assert cache.status()["d"]["restart_in_s"] is None
        with pytest.raises(ServerUnavailable, match="told to exit at once"):
            await cache.get("d")
        assert cache.status()["d"]["starts"] == 3


async def test_an_eager_server_that_dies_is_restarted_by_the_cache(tmp_path):
    async with ConnectionCache({"d": server()}, log_dir=tmp_path, keep_running={"d"}) as cache:
        session = await cache.get("d")
        first = await pid_of(session)
        with pytest.raises(Exception, match="Connection closed"):
            await session.call_tool("crash", {})
        with anyio.fail_after(20):  # no call needed: it comes back by itself
            while cache.status()["d"]["starts"] < 2 or cache.status()["d"]["state"] != "ready":
                await anyio.sleep(0.02)
        assert cache.status()["d"]["failures_in_a_row"] == 1
        assert await pid_of(await cache.get("d")) != first
        await cache.close("d")
        assert cache.status()["d"]["failures_in_a_row"] == 0  # a clean stop resets the count


async def test_unknown_server_name(tmp_path):
    async with ConnectionCache({"d": server()}, log_dir=tmp_path) as cache:
        with pytest.raises(
            ServerUnavailable, match=r"no downstream server called 'x' in hub.toml \(known: d\)"
        ):
            await cache.get("x")


async def test_missing_variable_is_reported(tmp_path):
    config = ServerConfig(command=sys.executable, args=["${HUB_TEST_UNSET_VAR}"])
    async with ConnectionCache({"d": config}, log_dir=tmp_path, environ={}) as cache:
        with pytest.raises(
            ServerUnavailable, match="servers.d.args: environment variable HUB_TEST_UNSET_VAR is not set"
        ):
            await cache.get("d")


async def test_child_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("UNRELATED_PARENT_VAR", "leak")
    monkeypatch.setenv("HUB_TEST_GREETING", "hi there")
    extra_bin = str(tmp_path / "bin")
    config = server(env={"DOWNSTREAM_GREETING": "${HUB_TEST_GREETING}", "PATH": extra_bin})
    async with ConnectionCache({"d": config}, log_dir=tmp_path) as cache:
        env = (await (await cache.get("d")).call_tool("whoami", {})).structured_content["env"]
    assert env["DOWNSTREAM_GREETING"] == "hi there"
    assert env["UNRELATED_PARENT_VAR"] is None  # only safe variables are inherited
    path = env["PATH"].split(os.pathsep)
    assert path[0] == extra_bin
    assert set(os.environ["PATH"].split(os.pathsep)) <= set(path)  # adds to PATH, never replaces it
    assert env["HOME"] == os.environ["HOME"]


def test_child_environment_merges_path():
    env = child_environment(
        {"PATH": "/opt/x:/usr/bin", "A": "1"}, {"PATH": "/usr/bin:/bin", "HOME": "/h", "SECRET": "s"}
    )
    assert env == {"PATH": "/opt/x:/usr/bin:/bin", "HOME": "/h", "A": "1"}


async def test_streamable_http_server(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "DOWNSTREAM_HTTP_PORT": str(port)}
    proc = await anyio.open_process([sys.executable, str(DOWNSTREAM)], env=env)
    try:
        config = ServerConfig(url="http://127.0.0.1:${TEST_PORT}/mcp", headers={"X-Test": "${TEST_PORT:-x}"})
        async with ConnectionCache(
            {"web": config}, log_dir=tmp_path, environ={"TEST_PORT": str(port)}
        ) as cache:
            with anyio.fail_after(30):
                while True:  # the server takes a moment to listen
                    try:
                        session = await cache.get("web")
                        break
                    except ServerUnavailable:
                        await anyio.sleep(0.2)
            assert (await session.call_tool("add", {"a": 2, "b": 5})).structured_content == {"result": 7}
            assert cache.status()["web"]["transport"] == "http"
            assert cache.status()["web"]["state"] == "ready"
    finally:
        proc.terminate()
        await proc.wait()


async def test_sse_server_of_type_sse(tmp_path):
    """`type = "sse"` (as .mcp.json has it) reaches a server over the older HTTP+SSE transport."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "DOWNSTREAM_SSE_PORT": str(port)}
    proc = await anyio.open_process([sys.executable, str(DOWNSTREAM)], env=env)
    try:
        config = ServerConfig(type="sse", url=f"http://127.0.0.1:{port}/sse")
        async with ConnectionCache({"old": config}, log_dir=tmp_path) as cache:
            with anyio.fail_after(30):
                while True:  # the server takes a moment to listen
                    try:
                        session = await cache.get("old")
                        break
                    except ServerUnavailable:
                        await anyio.sleep(0.2)
            assert (await session.call_tool("add", {"a": 2, "b": 5})).structured_content == {"result": 7}
            assert cache.status()["old"]["transport"] == "sse"
    finally:
        proc.terminate()
        await proc.wait()


async def test_downstream_notifications_reach_hub_listeners(tmp_path):
    import mcp.types as types

    from hub.host import Hub
    from hub.testing import make_config

    config = make_config(tmp_path, servers={"d": {"command": sys.executable, "args": [str(DOWNSTREAM)]}})
    seen: list[tuple[str, object]] = []
    async with Hub(config) as hub:
        hub.contexts["core"].on_downstream_message(lambda server, message: seen.append((server, message)))
        session = await hub.connections.get("d")
        assert (await session.call_tool("grow", {"name": "extra"})).content[0].text == "added extra"
        with anyio.fail_after(10):
            while not seen:
                await anyio.sleep(0.02)
    assert seen[0][0] == "d"
    assert isinstance(seen[0][1], types.ToolListChangedNotification)
