"""The proxy plugin against the real downstream test server."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import anyio
import hub_proxy
import mcp.types as types
import pytest
from hubtests import DOWNSTREAM, npm_bin
from mcp.shared.exceptions import MCPError

from hub import ToolCall
from hub.testing import make_config, result_text, running_hub

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def server(**extra: Any) -> dict[str, Any]:
    return {"command": sys.executable, "args": [str(DOWNSTREAM)], **extra}


async def wait_for_tool(hub, name: str) -> None:
    with anyio.fail_after(30):
        while name not in hub.registry.tools:
            await anyio.sleep(0.02)


async def test_tools_are_served_with_prefix_and_pass_through(tmp_path):
    config = make_config(tmp_path, servers={"d": server()})
    async with running_hub(config, plugins={"proxy": hub_proxy.ProxyPlugin}) as (hub, client):
        await wait_for_tool(hub, "d__echo")
        names = {t.name for t in (await client.list_tools()).tools}
        assert {"d__echo", "d__add", "d__listing", "d__sleep", "context_set"} <= names
        assert result_text(await client.call_tool("d__echo", {"text": "hi"})) == "hi"
        listing = await client.call_tool("d__listing", {"n": 2})
        assert listing.structured_content == {"items": ["item0", "item1"], "count": 2}
        bad = await client.call_tool("d__add", {"a": "x", "b": 1})
        assert bad.is_error and "a: 'x' is not of type 'integer'" in result_text(bad)
        failed = await client.call_tool("d__fail", {"message": "nope"})
        assert failed.is_error and result_text(failed) == "Error executing tool fail"  # as the server said it


async def test_include_exclude_prefix_and_expose(tmp_path):
    config = make_config(
        tmp_path,
        servers={
            "a": server(include=["echo", "add", "missing"], prefix="alpha"),
            "b": server(exclude=["crash", "fail"]),
            "hidden": server(expose=False),
        },
        plugins={"proxy": {"separator": "_"}},
    )
    async with running_hub(config, plugins={"proxy": hub_proxy.ProxyPlugin}) as (hub, client):
        await wait_for_tool(hub, "alpha_echo")
        await wait_for_tool(hub, "b_echo")
        names = {t.name for t in (await client.list_tools()).tools}
        assert {n for n in names if n.startswith("alpha_")} == {"alpha_echo", "alpha_add"}
        assert "b_crash" not in names and "b_fail" not in names and "b_sleep" in names
        assert not any(n.startswith("hidden") for n in names)
        servers = result_json_resource(await client.read_resource("proxy://servers"))
        assert "include names 'missing', which the server does not have" in servers["a"]["problems"]
        assert "hidden" not in servers


def result_json_resource(result: types.ReadResourceResult) -> Any:
    import json

    return json.loads(result.contents[0].text)


async def test_lazy_server_listed_from_cache_and_started_on_first_call(tmp_path):
    config = make_config(tmp_path, servers={"d": server()})
    async with running_hub(config, plugins={"proxy": hub_proxy.ProxyPlugin}) as (hub, _):
        await wait_for_tool(hub, "d__echo")
    async with running_hub(config, plugins={"proxy": hub_proxy.ProxyPlugin}) as (hub, client):
        assert "d__echo" in {t.name for t in (await client.list_tools()).tools}
        assert hub.connections.status()["d"]["state"] == "stopped"  # not started just to list tools
        assert result_text(await client.call_tool("d__echo", {"text": "wake"})) == "wake"
        assert hub.connections.status()["d"]["state"] == "ready"


async def test_downstream_list_changed_reaches_clients(tmp_path):
    changed = anyio.Event()

    async def on_message(message: Any) -> None:
        if isinstance(message, types.ToolListChangedNotification):
            changed.set()

    config = make_config(tmp_path, servers={"d": server()})
    async with running_hub(config, plugins={"proxy": hub_proxy.ProxyPlugin}, message_handler=on_message) as (
        hub,
        client,
    ):
        await wait_for_tool(hub, "d__grow")
        changed = anyio.Event()
        await client.call_tool("d__grow", {"name": "extra"})
        await wait_for_tool(hub, "d__extra")
        with anyio.fail_after(10):
            await changed.wait()
        assert result_text(await client.call_tool("d__extra", {})) == "I am extra"


async def test_progress_is_relayed_and_cancellation_reaches_downstream(tmp_path):
    markers = tmp_path / "markers"
    markers.mkdir()
    config = make_config(tmp_path, servers={"d": server(env={"DOWNSTREAM_MARKER_DIR": str(markers)})})
    async with running_hub(config, plugins={"proxy": hub_proxy.ProxyPlugin}) as (hub, client):
        await wait_for_tool(hub, "d__count")
        seen: list[float] = []

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            seen.append(progress)

        result = await client.call_tool("d__count", {"to": 3}, progress_callback=on_progress)
        assert result.structured_content == {"result": 3}
        with anyio.fail_after(5):
            while len(seen) < 3:
                await anyio.sleep(0.01)
        assert seen == [1, 2, 3]

        with anyio.move_on_after(0.5):
            await client.call_tool("d__sleep", {"seconds": 30, "tag": "proxied"})
        with anyio.fail_after(10):
            while not (markers / "cancelled-proxied").exists():
                await anyio.sleep(0.05)


async def test_crash_fails_the_call_and_the_next_call_restarts(tmp_path):
    config = make_config(tmp_path, servers={"d": server()})
    async with running_hub(config, plugins={"proxy": hub_proxy.ProxyPlugin}) as (hub, client):
        await wait_for_tool(hub, "d__crash")
        first = (await client.call_tool("d__whoami", {})).structured_content["pid"]
        crashed = await client.call_tool("d__crash", {})
        assert crashed.is_error
        assert result_text(crashed) == "server 'd' died during crash; it is restarted on the next call"
        second = (await client.call_tool("d__whoami", {})).structured_content["pid"]
        assert second != first
        status = json.loads((await client.read_resource("hub://status")).contents[0].text)["servers"]["d"]
        assert (status["state"], status["starts"], status["failures_in_a_row"]) == ("ready", 2, 1)
        assert status["last_error"] == "server 'd' closed the connection during a call"


async def test_an_eager_server_comes_back_by_itself_after_a_crash(tmp_path):
    config = make_config(tmp_path, servers={"d": server(eager=True)})
    async with running_hub(config, plugins={"proxy": hub_proxy.ProxyPlugin}) as (hub, client):
        await wait_for_tool(hub, "d__crash")
        assert (await client.call_tool("d__crash", {})).is_error
        with anyio.fail_after(20):
            while True:
                servers = result_json_resource(await client.read_resource("proxy://servers"))
                if hub.connections.status()["d"]["starts"] >= 2 and servers["d"]["state"] == "ready":
                    break
                await anyio.sleep(0.05)
        assert servers["d"]["failures_in_a_row"] == 1


async def test_name_clash_and_length_are_reported(tmp_path):
    config = make_config(
        tmp_path,
        servers={
            "one": server(prefix="same", include=["echo"]),
            "two": server(prefix="same", include=["echo"]),
            "long": server(prefix="p" * 50, include=["listing"]),
        },
    )
    async with running_hub(config, plugins={"proxy": hub_proxy.ProxyPlugin}) as (hub, client):
        await wait_for_tool(hub, "same__echo")
        await wait_for_tool(hub, "p" * 50 + "__listing")
        with anyio.fail_after(30):
            while True:
                servers = result_json_resource(await client.read_resource("proxy://servers"))
                if servers["one"]["tools"] and servers["two"]["tools"] == [] and servers["two"]["problems"]:
                    break
                if servers["two"]["tools"] and servers["one"]["problems"]:
                    break
                await anyio.sleep(0.05)
        problems = servers["one"]["problems"] + servers["two"]["problems"]
        assert any("tool 'same__echo'" in p and "set prefix in [servers." in p for p in problems)
        long_problem = servers["long"]["problems"][0]
        assert "over Claude's 64; set a shorter prefix in [servers.long]" in long_problem


async def test_resources_templates_and_prompts_are_served(tmp_path):
    config = make_config(tmp_path, servers={"d": server()})
    async with running_hub(config, plugins={"proxy": hub_proxy.ProxyPlugin}) as (hub, client):
        await wait_for_tool(hub, "d__echo")
        resources = {str(r.uri): r for r in (await client.list_resources()).resources}
        assert resources["downstream://about"].mime_type == "text/plain"
        assert resources["downstream://about"].description == "[d] What this server is."
        about = await client.read_resource("downstream://about")
        assert about.contents[0].text == "the test downstream server"
        templates = [t.uri_template for t in (await client.list_resource_templates()).resource_templates]
        assert "downstream://items/{name}" in templates
        item = await client.read_resource("downstream://items/pen")
        assert str(item.contents[0].uri) == "downstream://items/pen"
        assert json.loads(item.contents[0].text) == {"name": "pen", "kind": "item"}

        prompts = {p.name: p for p in (await client.list_prompts()).prompts}
        assert [(a.name, a.required) for a in prompts["d__greet"].arguments] == [
            ("name", True),
            ("style", False),
        ]
        got = await client.get_prompt("d__greet", {"name": "Ada", "style": "warm"})
        assert got.messages[0].content.text == "Greet Ada in a warm way."
        with pytest.raises(MCPError, match="missing required argument"):
            await client.get_prompt("d__greet", {})
        servers = result_json_resource(await client.read_resource("proxy://servers"))
        assert servers["d"]["prompts"] == ["d__greet"]
        assert servers["d"]["resources"] == ["downstream://about", "downstream://items/{name}"]


async def test_a_third_party_server_from_npm(tmp_path):
    """@modelcontextprotocol/server-everything: its tools, a templated resource and a prompt."""
    config = make_config(tmp_path, servers={"every": {"command": npm_bin("mcp-server-everything")}})
    async with running_hub(config, plugins={"proxy": hub_proxy.ProxyPlugin}) as (hub, client):
        await wait_for_tool(hub, "every__get-sum")
        summed = await client.call_tool("every__get-sum", {"a": 2, "b": 3})
        assert not summed.is_error and "5" in result_text(summed)
        echoed = await client.call_tool("every__echo", {"message": "through the hub"})
        assert "through the hub" in result_text(echoed)
        text = await client.read_resource("demo://resource/dynamic/text/7")
        assert "7" in text.contents[0].text
        got = await client.get_prompt("every__args-prompt", {"city": "Oslo"})
        assert "Oslo" in got.messages[0].content.text
        bad = await client.call_tool("every__get-sum", {"a": "x"})
        assert bad.is_error


async def test_lists_an_older_hub_kept_by_server_name_alone_are_not_used(tmp_path):
    """The old schema kept lists by server name only (proxy_tools, then proxy_lists), shared by
    every project and outliving a change of command: they are dropped, and the server is asked."""
    from hub.services.sqlite_store import SQLiteStore as Store

    config = make_config(tmp_path, servers={"d": server()})
    store = Store.in_state_dir(config.state_dir)
    await store.migrate("proxy", hub_proxy.MIGRATIONS[:1])
    echo = {"name": "gone", "description": "old", "inputSchema": {"type": "object", "properties": {}}}
    await store.execute("INSERT INTO proxy_tools (server, tools_json) VALUES ('d', ?)", (json.dumps([echo]),))
    store.close()
    async with running_hub(config, plugins={"proxy": hub_proxy.ProxyPlugin}) as (_, client):
        tools = {t.name: t for t in (await client.list_tools()).tools}  # the first list waits for d
        assert "d__gone" not in tools and tools["d__echo"].description == "Return the text unchanged. [d]"


BAD_OUTPUT = str(Path(__file__).with_name("bad_output_server.py"))


async def test_results_pass_through_unless_validate_output_is_set(tmp_path):
    config = make_config(
        tmp_path,
        servers={
            "loose": {"command": sys.executable, "args": [BAD_OUTPUT]},
            "strict": {"command": sys.executable, "args": [BAD_OUTPUT], "validate_output": True},
        },
    )
    async with running_hub(config, plugins={"proxy": hub_proxy.ProxyPlugin}) as (hub, client):
        await wait_for_tool(hub, "loose__count")
        await wait_for_tool(hub, "strict__count")
        # The SDK client checks output schemas itself, so read the loose answer at the handler.
        loose = await hub.registry.tools["loose__count"].handler({}, ToolCall("loose__count"))
        assert loose["structuredContent"] == {"n": "three"}  # passed through as the server sent it
        strict = await client.call_tool("strict__count", {})
        assert strict.is_error
        assert "'strict'" in result_text(strict) and "Invalid structured content" in result_text(strict)


async def test_forwarded_calls_in_the_2026_era(tmp_path):
    config = make_config(tmp_path, servers={"d": server()})
    async with running_hub(config, plugins={"proxy": hub_proxy.ProxyPlugin}, mode="auto") as (hub, client):
        await wait_for_tool(hub, "d__echo")
        await client.list_tools()  # the SDK client learns output schemas from the list
        assert result_text(await client.call_tool("d__echo", {"text": "hi"})) == "hi"
        listing = await client.call_tool("d__listing", {"n": 2})
        assert listing.structured_content == {"items": ["item0", "item1"], "count": 2}
        bad = await client.call_tool("d__add", {"a": "x", "b": 1})
        assert bad.is_error and "a: 'x' is not of type 'integer'" in result_text(bad)
