"""A session's first requests see every configured server, through every path a client takes:
`hub serve --no-share` (stdio, in-process), `hub serve` (the bridge to the shared process),
`hub serve --transport http`, in both protocol eras, and the real Claude Code CLI from the
README's `.mcp.json`, each on a fresh state directory. And lists are never another
configuration's: a server changed under the same name, across hub processes and the fast start."""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest
from fake_anthropic import FakeAnthropic
from hubtests import DOWNSTREAM, ROOT, hub_env, npm_bin, readme_mcp_entry, stop_shared_hubs
from mcp import Client, MCPError, StdioServerParameters

pytestmark = pytest.mark.timeout(180)
VENV_BIN = str(Path(sys.executable).parent)
BAD_OUTPUT = ROOT / "plugins" / "proxy" / "tests" / "bad_output_server.py"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def write_toml(tmp_path: Path, servers: str, proxy: str = "") -> Path:
    path = tmp_path / "hub.toml"
    path.write_text(f'[plugins]\nenabled = ["proxy"]\n[plugins.proxy]\n{proxy}\n{servers}')
    return path


def downstream(name: str, script: Path = DOWNSTREAM, **env: str) -> str:
    table = f'[servers.{name}]\ncommand = "{sys.executable}"\nargs = ["{script}"]\n'
    if env:
        table += "env = {" + ", ".join(f'{k} = "{v}"' for k, v in env.items()) + "}\n"
    return table


@contextlib.asynccontextmanager
async def connected(path: str, mode: str, tmp_path: Path, **extra_env: str) -> AsyncIterator[Client]:
    """An SDK client of a hub reached by `path` ("no-share", "shared" or "http")."""
    env = hub_env(tmp_path, HUB_CONFIG=str(tmp_path / "hub.toml"), **extra_env)
    if path == "shared":
        env["HUB_SHARE"] = "1"
    if path != "http":
        args = ["-m", "hub", "serve", *(["--no-share"] if path == "no-share" else [])]
        params = StdioServerParameters(command=sys.executable, args=args, env=env, cwd=str(tmp_path))
        try:
            async with Client(params, mode=mode) as client:  # type: ignore[arg-type]
                yield client
        finally:
            if path == "shared":
                stop_shared_hubs(env, tmp_path)
        return
    server, port = _start_http(env, tmp_path)
    try:
        async with Client(f"http://127.0.0.1:{port}/mcp", mode=mode) as client:  # type: ignore[arg-type]
            yield client
    finally:
        server.terminate()
        server.wait(timeout=20)


def _start_http(env: dict[str, str], cwd: Path) -> tuple[subprocess.Popen[str], str]:
    """`hub serve --transport http` on a free port, and that port."""
    server = subprocess.Popen(
        [sys.executable, "-m", "hub", "serve", "--transport", "http", "--port", "0"],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=cwd,
    )
    assert server.stderr is not None
    port = next(m.group(1) for line in server.stderr if (m := re.search(r"listening on port (\d+)", line)))
    return server, port


async def names(client: Client) -> set[str]:
    return {t.name for t in (await client.list_tools()).tools}


CLAUDE_FLAGS = ["--strict-mcp-config", "--output-format", "json", "--model", "claude-sonnet-4-5"]
PATHS = [(path, mode) for path in ("no-share", "shared", "http") for mode in ("legacy", "auto")]


@pytest.mark.anyio
@pytest.mark.parametrize(("path", "mode"), PATHS)
async def test_the_first_session_lists_a_server_never_seen(tmp_path, path, mode):
    slow = downstream("d", DOWNSTREAM_START_DELAY_S="0.5", DOWNSTREAM_INSTRUCTIONS="Echo with d__echo.")
    write_toml(tmp_path, slow)
    async with connected(path, mode, tmp_path) as client:
        assert "d__echo" in await names(client)  # the first list of the first session
        assert "Echo with d__echo." in (client.instructions or "")


@pytest.mark.anyio
async def test_a_changed_server_is_listed_as_it_is_now_across_hub_processes(tmp_path):
    """The stale-list regression: [servers.d] becomes another command on the same state directory."""
    write_toml(tmp_path, downstream("d"))
    async with connected("shared", "auto", tmp_path) as client:
        assert "d__echo" in await names(client)
    env = hub_env(tmp_path, HUB_CONFIG=str(tmp_path / "hub.toml"))
    assert _tools_seen(env, tmp_path) == {"d": 9}
    write_toml(tmp_path, downstream("d", BAD_OUTPUT))
    assert _tools_seen(env, tmp_path) == {"d": None}  # not the other command's count
    for _ in range(2):  # fresh, then with the fast start answering from the run before
        async with connected("no-share", "auto", tmp_path) as client:
            now = await names(client)
            assert "d__count" in now and "d__echo" not in now
            with pytest.raises(MCPError, match="Unknown tool: d__echo"):
                await client.call_tool("d__echo", {"text": "stale"})
    assert (tmp_path / "state" / "fastfront.json").exists()


def _tools_seen(env: dict[str, str], cwd: Path) -> dict[str, int | None]:
    out = subprocess.run(
        [sys.executable, "-m", "hub", "servers", "list", "--json"],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return {row["name"]: row["tools"] for row in json.loads(out.stdout)}


@pytest.mark.anyio
async def test_the_fast_start_tells_of_a_server_that_arrived_after_the_last_run_answered(tmp_path):
    go = tmp_path / "go"
    write_toml(tmp_path, downstream("late", DOWNSTREAM_START_WHEN_FILE=str(go)), "first_list_wait_s = 0")
    async with connected("no-share", "auto", tmp_path) as client:
        async with client.listen(tools_list_changed=True):
            assert "late__echo" not in await names(client)  # what the fast start keeps for next time
        go.write_text("")
        with anyio.fail_after(30):  # the hub lists it and keeps that; read without asking tools/list
            while True:
                servers = json.loads((await client.read_resource("proxy://servers")).contents[0].text)  # type: ignore[union-attr]
                if servers["late"]["listed"]:
                    break
                await anyio.sleep(0.05)
    async with connected("no-share", "auto", tmp_path) as client:
        changed = anyio.Event()
        async with client.listen(tools_list_changed=True) as subscription:
            assert "late__echo" not in await names(client)  # answered from the last run while starting

            async def wait() -> None:
                async for _ in subscription:
                    changed.set()
                    return

            with anyio.fail_after(30):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(wait)
                    await changed.wait()
                    tg.cancel_scope.cancel()
        assert "late__echo" in await names(client)


def test_claude_code_sees_every_configured_server_in_its_first_request(tmp_path):
    """The README's `.mcp.json`, a fresh state directory, two servers never seen: the first
    request to the model names their tools and carries server-everything's instructions."""
    write_toml(
        tmp_path,
        downstream("d", DOWNSTREAM_START_DELAY_S="1")
        + f'[servers.every]\ncommand = "{npm_bin("mcp-server-everything")}"\n',
    )
    (tmp_path / "mcp.json").write_text(json.dumps({"mcpServers": {"hub": readme_mcp_entry()}}))
    (tmp_path / "home").mkdir()
    with FakeAnthropic() as api:
        api.script([{"type": "text", "text": "seen"}])
        env = hub_env(
            tmp_path,
            HOME=str(tmp_path / "home"),
            ANTHROPIC_BASE_URL=api.url,
            ANTHROPIC_API_KEY=api.api_key,
            CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1",
            DISABLE_TELEMETRY="1",
            HUB_CONFIG=str(tmp_path / "hub.toml"),
            HUB_SHARE="1",
            PATH=os.pathsep.join([VENV_BIN, os.environ["PATH"]]),
        )
        env.pop("CLAUDECODE", None)
        try:
            done = subprocess.run(
                [npm_bin("claude"), "-p", "hi", "--mcp-config", str(tmp_path / "mcp.json"), *CLAUDE_FLAGS],
                capture_output=True,
                text=True,
                env=env,
                cwd=tmp_path,
                timeout=150,
            )
        finally:
            stop_shared_hubs(env, tmp_path)
        assert done.returncode == 0, done.stderr[-2000:]
        first = json.dumps(api.messages[0])
    for tool in ("mcp__hub__d__echo", "mcp__hub__every__get-sum", "mcp__hub__context_set"):
        assert tool in first, f"{tool} is not in Claude Code's first request"
    assert "Everything Server" in first  # server-everything's instructions, inside the hub's
