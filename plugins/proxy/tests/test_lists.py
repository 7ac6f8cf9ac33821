"""The proxy's lists, in-process: right from a session's first request, never another
configuration's, asked again when a server restarts, and with every field the server sent
(server-everything from npm) and its instructions in the hub's."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import anyio
import hub_proxy
import mcp.types as types
import pytest
import structlog
from askingclient import Answers
from hubtests import DOWNSTREAM, npm_bin
from mcp import Client, StdioServerParameters
from pydantic import TypeAdapter

from hub.testing import make_config, result_text, running_hub

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]
PLUGINS = {"proxy": hub_proxy.ProxyPlugin}
BAD_OUTPUT = str(Path(__file__).with_name("bad_output_server.py"))
RAW: TypeAdapter[dict[str, Any]] = TypeAdapter(dict[str, Any])


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def server(*args: str, **env: str) -> dict[str, Any]:
    return {"command": sys.executable, "args": [*args] or [str(DOWNSTREAM)], "env": env}


async def names(client: Client) -> set[str]:
    return {t.name for t in (await client.list_tools()).tools}


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_the_first_lists_and_instructions_wait_for_a_server_never_listed(tmp_path, mode):
    env = {"DOWNSTREAM_START_DELAY_S": "1", "DOWNSTREAM_INSTRUCTIONS": "Echo with d__echo."}
    config = make_config(tmp_path, servers={"d": server(**env, SECRET_TOKEN="s3cret-value")})
    async with running_hub(config, plugins=PLUGINS, mode=mode) as (_, client):
        assert "d__echo" in await names(client)  # the very first list, no polling
        assert "Echo with d__echo." in (client.instructions or "")  # initialize / server/discover waited too
        assert "### d (its tools: d__*)" in (client.instructions or "")
    kept = b"".join(path.read_bytes() for path in (tmp_path / "state").glob("hub.sqlite*"))
    assert b"s3cret-value" not in kept and b'"name":"echo"' in kept  # kept under a digest only


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_a_server_that_misses_the_wait_arrives_with_list_changed(tmp_path, mode):
    changed = anyio.Event()

    async def on_message(message: Any) -> None:
        if isinstance(message, types.ToolListChangedNotification):
            changed.set()

    go = tmp_path / "go"
    config = make_config(
        tmp_path,
        servers={"late": server(DOWNSTREAM_START_WHEN_FILE=str(go))},
        plugins={"proxy": {"first_list_wait_s": 0.5}},
    )
    with structlog.testing.capture_logs() as logs:
        async with running_hub(config, plugins=PLUGINS, mode=mode, message_handler=on_message) as (_, client):

            async def listen(listening: anyio.Event) -> None:  # the 2026-07-28 era's list_changed
                async with client.listen(tools_list_changed=True) as subscription:
                    listening.set()
                    async for _ in subscription:
                        changed.set()
                        return

            async with anyio.create_task_group() as tg:
                if mode == "auto":
                    listening = anyio.Event()
                    tg.start_soon(listen, listening)
                    await listening.wait()
                assert "late__echo" not in await names(client)
                go.write_text("")
                with anyio.fail_after(30):
                    await changed.wait()
                tg.cancel_scope.cancel()
            assert "late__echo" in await names(client)
            assert result_text(await client.call_tool("late__echo", {"text": "here"})) == "here"
    missed = [entry for entry in logs if entry.get("missed")]
    assert missed and missed[0]["missed"] == ["proxy: server 'late' has never been listed and is starting"]
    assert len(missed) == 1  # a hold waited out once is not waited for again


async def test_a_server_changed_under_the_same_name_is_listed_as_it_is_now(tmp_path):
    """The stale-list regression: [servers.d] becomes another command; its old tools must go."""
    first = make_config(tmp_path, servers={"d": server()})
    async with running_hub(first, plugins=PLUGINS) as (_, client):
        assert "d__echo" in await names(client)
    changed = make_config(tmp_path, servers={"d": server(BAD_OUTPUT)})
    async with running_hub(changed, plugins=PLUGINS) as (hub, client):
        now = await names(client)
        assert "d__count" in now and "d__echo" not in now
        with pytest.raises(Exception, match="Unknown tool: d__echo"):
            await client.call_tool("d__echo", {"text": "stale"})
    # Back to the first command: its kept lists serve again, without starting it.
    async with running_hub(first, plugins=PLUGINS) as (hub, client):
        assert "d__echo" in await names(client)
        assert hub.connections.status()["d"]["state"] == "stopped"


async def test_a_tool_added_downstream_is_listed_after_a_restart_and_in_a_fresh_hub(tmp_path):
    extra = tmp_path / "extra-tools"
    config = make_config(tmp_path, servers={"d": server(DOWNSTREAM_EXTRA_TOOLS_FILE=str(extra))})
    changed = anyio.Event()

    async def on_message(message: Any) -> None:
        if isinstance(message, types.ToolListChangedNotification):
            changed.set()

    async with running_hub(config, plugins=PLUGINS, message_handler=on_message) as (hub, client):
        assert "d__added" not in await names(client)
        extra.write_text("added\n")  # the server is upgraded; it runs the old code until it restarts
        changed = anyio.Event()
        assert (await client.call_tool("d__crash", {})).is_error
        assert (await client.call_tool("d__echo", {"text": "x"})).structured_content is not None  # restarted
        with anyio.fail_after(20):
            await changed.wait()
        assert "d__added" in await names(client)
        assert result_text(await client.call_tool("d__added", {})) == "I am added"
    async with running_hub(config, plugins=PLUGINS) as (hub, client):
        assert "d__added" in await names(client)  # kept: listed without starting the server
        assert hub.connections.status()["d"]["state"] == "stopped"


@pytest.fixture(scope="module")
def everything() -> dict[str, Any]:
    return {"command": npm_bin("mcp-server-everything")}


async def _direct_tools(everything: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """server-everything's tools, listed directly by a client that declares what the hub declares
    (sampling, elicitation, roots: the tools that use them appear only then)."""
    params = StdioServerParameters(command=everything["command"], args=[])
    async with Client(params, mode="legacy", **Answers().callbacks()) as direct:
        await direct.list_tools()
        listed = await direct.session.send_request(types.ListToolsRequest(), RAW)  # type: ignore[type-var]
    return {tool["name"]: tool for tool in listed["tools"]}


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_server_everything_keeps_every_tool_field_and_gives_its_instructions(
    tmp_path, everything, mode
):
    config = make_config(tmp_path, servers={"every": everything})
    direct = await _direct_tools(everything)
    async with running_hub(config, plugins=PLUGINS, mode=mode) as (_, client):
        listed = await client.session.send_request(types.ListToolsRequest(), RAW)  # type: ignore[type-var]
        proxied = {t["name"]: t for t in listed["tools"] if t["name"].startswith("every__")}
        assert "Everything Server" in (client.instructions or "")
    assert set(proxied) == {f"every__{name}" for name in direct}
    fields: set[str] = set()
    for name, tool in direct.items():
        # The hub's hint for Claude Code's tool search: the server's name and the start of its
        # instructions, merged into the tool's own _meta (hub.server.discovery).
        hint = proxied[f"every__{name}"]["_meta"]["anthropic/searchHint"]
        assert hint.startswith("every # Everything Server")
        expected = {
            **tool,
            "name": f"every__{name}",
            "description": f"{tool.get('description', '')} [every]".strip(),
            "_meta": {**tool.get("_meta", {}), "anthropic/searchHint": hint},
        }
        assert proxied[f"every__{name}"] == expected
        fields |= set(tool)
    assert {"annotations", "outputSchema", "execution", "title"} <= fields  # what it sends passes through
