"""`[tools] expose`: search mode's list, find_tools' ranking, call_tool answering as a direct call
would (a tool that asks the client included), tools loaded per session (in memory and over streamable HTTP), auto's threshold, and
batch_execute on tools no session listed (hub.server.discovery)."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import asking_plugin
import hub_batchit
import hub_proxy
import mcp.types as types
import pytest
from askingclient import ASKING, EXPECTED, Answers, answer_of, asking_server
from hubtests import DOWNSTREAM, hub_env
from mcp import Client, MCPError, StdioServerParameters

from hub.host import Hub
from hub.server.tool_index import IndexedTool, ToolIndex, name_words
from hub.testing import make_config, result_text, running_hub

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]


def search_config(tmp_path: Path, **tools: Any) -> Any:
    return make_config(tmp_path, plugins={"example": {"greeting": "hi"}}, tools={"expose": "search", **tools})


def names(listed: types.ListToolsResult) -> list[str]:
    return [tool.name for tool in listed.tools]


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_search_mode_lists_the_search_tools_and_always_marked_for_claude(
    tmp_path, example_plugin, mode
):
    config = search_config(tmp_path, always=["greet", "context_get"])
    async with running_hub(config, plugins={"example": example_plugin}, mode=mode) as (hub, client):
        listed = await client.list_tools()
        assert names(listed) == ["call_tool", "context_get", "find_tools", "greet"]  # sorted
        assert all(tool.meta == {"anthropic/alwaysLoad": True} for tool in listed.tools)
        if mode == "auto":
            assert (listed.ttl_ms, listed.cache_scope) == (60_000, "private")
        # Every tool stays callable by name.
        result = await client.call_tool("add", {"a": 2, "b": 3})
        assert result.structured_content == {"result": 5}
        assert "find_tools" in hub.server.mcp.instructions
        status = hub.server.discovery.describe()
        assert status["listing"] == "search" and status["always"] == ["greet", "context_get"]


def test_find_tools_ranks_by_name_words_description_parameters_and_server():
    assert name_words("fs__read_text_file") == ["fs", "read", "text", "file"]
    assert name_words("getUserInfo") == ["get", "user", "info"]
    assert name_words("get-tiny-image") == ["get", "tiny", "image"]
    schema = {"type": "object", "properties": {"timezone": {"type": "string", "description": "IANA zone"}}}
    index = ToolIndex()
    index.rebuild(
        [
            IndexedTool("fs__read_text_file", "fs", "Read a file as text.", {"type": "object"}),
            IndexedTool("fs__write_file", "fs", "Create or overwrite a file.", {"type": "object"}),
            IndexedTool("git__git_log", "git", "Shows the commit logs.", {"type": "object"}),
            IndexedTool("time__now", "time", "The current moment.", schema),
            IndexedTool("everything__getTinyImage", "everything", "A logo.", {"type": "object"}),
            IndexedTool("kb__lookup", "kb", "Look something up.", {"type": "object"}, "A wiki of recipes."),
        ]
    )
    assert [t.name for t in index.search("read the text of a file", 2)] == [
        "fs__read_text_file",
        "fs__write_file",
    ]
    assert index.search("save a new file")[0].name == "fs__write_file"  # a synonym: save -> write
    assert index.search("history of commits")[0].name == "git__git_log"
    assert index.search("which IANA zone")[0].name == "time__now"  # a parameter's description
    assert index.search("tiny image")[0].name == "everything__getTinyImage"  # camelCase in the name
    assert index.search("recipes")[0].name == "kb__lookup"  # the server's instructions
    assert [t.name for t in index.search("file", server="git")] == []
    assert index.search("the of and") == []  # only common words


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_call_tool_answers_as_a_direct_call(tmp_path, example_plugin, mode):
    progress: list[float] = []

    async def on_progress(done: float, total: float | None, message: str | None) -> None:
        progress.append(done)

    async with running_hub(search_config(tmp_path), plugins={"example": example_plugin}, mode=mode) as (
        _,
        client,
    ):
        for name, arguments in [
            ("greet", {"name": "Ada"}),
            ("greet", {}),  # invalid arguments
            ("greet", {"name": "x", "colour": "red"}),
            ("boom", {}),  # the plugin raised
            ("refuse", {}),  # a ToolError
        ]:
            direct = await client.call_tool(name, arguments)
            via = await client.call_tool("call_tool", {"name": name, "arguments": arguments})
            assert via.model_dump(exclude={"meta"}) == direct.model_dump(exclude={"meta"}), name
        result = await client.call_tool(
            "call_tool", {"name": "slow", "arguments": {"steps": 3}}, progress_callback=on_progress
        )
        assert result.structured_content == {"done": 3} and progress == [1, 2, 3]
        with pytest.raises(MCPError, match="Unknown tool: gret"):
            await client.call_tool("gret", {})
        unknown = await client.call_tool("call_tool", {"name": "gret", "arguments": {}})
        assert unknown.is_error and result_text(unknown).startswith("Unknown tool: gret (did you mean greet")


async def test_load_adds_the_tools_found_to_that_session_only(tmp_path, example_plugin):
    changed = anyio.Event()

    async def on_message(message: Any) -> None:
        if isinstance(message, types.ToolListChangedNotification):
            changed.set()

    config = search_config(tmp_path)
    async with (
        running_hub(config, plugins={"example": example_plugin}, message_handler=on_message) as (hub, one),
        Client(hub.server.mcp, mode="legacy") as other,
        Client(hub.server.mcp, mode="auto") as modern,
    ):
        before = names(await other.list_tools())
        found = await one.call_tool("find_tools", {"query": "greet someone", "limit": 1, "load": True})
        assert found.structured_content["loaded"] == ["greet"]
        with anyio.fail_after(5):
            await changed.wait()
        assert names(await one.list_tools()) == ["call_tool", "find_tools", "greet"]
        assert names(await other.list_tools()) == before == ["call_tool", "find_tools"]
        (session,) = hub.server.discovery.describe()["sessions"]
        assert session["loaded"] == ["greet"]
        status = json.loads((await one.read_resource("hub://status")).contents[0].text)
        assert status["tools"]["sessions"] == [session]
        # A 2026-07-28 request in memory has no session to load into: the result says so.
        alone = await modern.call_tool("find_tools", {"query": "greet", "limit": 1, "load": True})
        assert "no session" in alone.structured_content["note"] and "loaded" not in alone.structured_content
    assert hub.server.discovery.loaded == {}  # forgotten with the session


async def test_auto_lists_everything_until_the_list_outgrows_max_list_bytes(tmp_path, example_plugin):
    config = make_config(tmp_path, plugins={"example": {"greeting": "hi"}}, tools={"expose": "auto"})
    async with running_hub(config, plugins={"example": example_plugin}) as (hub, client):
        discovery = hub.server.discovery
        whole = discovery.whole_bytes()
        everything = names(await client.list_tools())
        assert "greet" in everything and "find_tools" not in everything  # under the default 16 KB
        discovery.config = discovery.config.model_copy(update={"max_list_bytes": whole})
        assert discovery.mode() == "all"
        hub.registry.add(types_tool("grown"), "example")  # one more tool: over the threshold
        assert discovery.whole_bytes() > whole and discovery.mode() == "search"
        assert names(await client.list_tools()) == ["call_tool", "find_tools"]
        hub.registry.remove("tools", "grown")
        assert names(await client.list_tools()) == everything


def types_tool(name: str) -> Any:
    from hub.plugin.items import Tool

    async def handler(arguments: Any, call: Any) -> str:
        return name

    return Tool(name, handler, "A tool added while serving.")


async def test_batch_execute_runs_tools_no_session_listed(tmp_path):
    config = make_config(
        tmp_path,
        servers={"d": {"command": sys.executable, "args": [str(DOWNSTREAM)]}},
        tools={"expose": "search"},
    )
    plugins = {"proxy": hub_proxy.ProxyPlugin, "batchit": hub_batchit.BatchItPlugin}
    async with running_hub(config, plugins=plugins) as (hub, client):
        with anyio.fail_after(30):
            while "d__echo" not in hub.registry.tools:
                await anyio.sleep(0.02)
        assert names(await client.list_tools()) == ["call_tool", "find_tools"]
        found = await client.call_tool("find_tools", {"query": "echo text back", "limit": 1})
        assert found.structured_content["tools"][0]["name"] == "d__echo"
        assert found.structured_content["tools"][0]["server"] == "d"
        # A server's words (the proxy gives its instructions) are searched and hinted to Claude Code.
        hub.registry.describe_group("d", "A kitchen of recipes.")
        found = await client.call_tool("find_tools", {"query": "recipes", "limit": 1})
        assert found.structured_content["tools"][0]["server"] == "d"
        hinted = {t.name: t.meta for t in hub.server.discovery._all_tools()}
        assert hinted["d__echo"] == {"anthropic/searchHint": "d A kitchen of recipes."}
        batch = {"server": "d", "operations": [{"tool": "echo", "arguments": {"text": "never listed"}}]}
        for result in (
            await client.call_tool("batch_execute", batch),
            await client.call_tool("call_tool", {"name": "batch_execute", "arguments": batch}),
        ):
            assert not result.is_error, result_text(result)
            assert result.structured_content["operations"][0]["structuredContent"] == {
                "result": "never listed"
            }


async def _call_asking_tools(client: Client, answers: Answers, plugin: bool) -> None:
    """call_tool of tools that ask the client: a proxied server's (relayed downstream questions)
    and, in process, a plugin's (`ToolCall.sample`); each answers as a direct call does."""
    with anyio.fail_after(30):
        while not (
            await client.call_tool("find_tools", {"query": "asking", "server": "asking"})
        ).structured_content["tools"]:
            await anyio.sleep(0.05)
    via = await client.call_tool("call_tool", {"name": "asking__all", "arguments": {"prompt": "P"}})
    assert answer_of(via) == EXPECTED["all"]
    assert answers.asked == ["sampling", "elicitation:form", "elicitation:url", "roots"]
    if plugin:
        sampled = await client.call_tool("call_tool", {"name": "ask_sample", "arguments": {"prompt": "Q"}})
        assert result_text(sampled) == "answer to Q"


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.parametrize("transport", ["memory", "stdio"])
@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_call_tool_runs_a_tool_that_asks_the_client(tmp_path, transport, mode, anyio_backend):
    """The inner call runs on call_tool's own channel to its client: a request within the call
    (handshake era) or input_required rounds of the parked call_tool (2026-07-28); in process
    (the SDK's path) and over stdio (`hub serve --no-share`, where call_tool takes the shortcut)."""
    answers = Answers()
    servers = {"asking": asking_server()}
    if transport == "memory":
        config = make_config(tmp_path, servers=servers, tools={"expose": "search"})
        plugins = {"proxy": hub_proxy.ProxyPlugin, "ask": asking_plugin}
        async with running_hub(config, plugins=plugins, mode=mode, **answers.callbacks()) as (_, client):
            await _call_asking_tools(client, answers, plugin=True)
        return
    (tmp_path / "hub.toml").write_text(
        f'[plugins]\nenabled = ["proxy"]\n[tools]\nexpose = "search"\n'
        f'[servers.asking]\ncommand = "{sys.executable}"\nargs = ["{ASKING}"]\n'
    )
    env = hub_env(tmp_path, HUB_CONFIG=str(tmp_path / "hub.toml"))
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "hub", "serve", "--no-share"], env=env, cwd=str(tmp_path)
    )
    async with Client(params, mode=mode, **answers.callbacks()) as client:
        await _call_asking_tools(client, answers, plugin=False)


@contextlib.asynccontextmanager
async def http_hub(tmp_path: Path, example_plugin: Any) -> AsyncIterator[tuple[Hub, str]]:
    from hub.server.http import serve_http

    async with (
        Hub(search_config(tmp_path), extra_plugins={"example": example_plugin}) as hub,
        anyio.create_task_group() as tg,
    ):
        ports: list[int] = []
        ready = anyio.Event()

        def on_ready(port: int) -> None:
            ports.append(port)
            ready.set()

        tg.start_soon(
            lambda: serve_http(hub.server, host="127.0.0.1", port=0, path="/mcp", token=None, ready=on_ready)
        )
        with anyio.fail_after(30):
            await ready.wait()
        yield hub, f"http://127.0.0.1:{ports[0]}/mcp"
        tg.cancel_scope.cancel()


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_load_over_http_is_per_session(tmp_path, example_plugin, anyio_backend):
    async with http_hub(tmp_path, example_plugin) as (_, url):
        async with Client(url, mode="legacy") as one, Client(url, mode="legacy") as other:
            await other.list_tools()  # answered from the cache next time (the HTTP shortcut)
            found = await one.call_tool("find_tools", {"query": "greet someone", "limit": 1, "load": True})
            assert found.structured_content["loaded"] == ["greet"]
            assert names(await one.list_tools()) == ["call_tool", "find_tools", "greet"]
            assert names(await other.list_tools()) == ["call_tool", "find_tools"]
            assert names(await one.list_tools()) == ["call_tool", "find_tools", "greet"]  # cached too
        async with Client(url) as modern:  # 2026-07-28 over HTTP: every request stands alone
            alone = await modern.call_tool("find_tools", {"query": "greet", "limit": 1, "load": True})
            assert "no session" in alone.structured_content["note"]
