"""The MCP surface: argument validation, errors, results, resources, prompts, progress, list_changed."""

from __future__ import annotations

from typing import Any

import anyio
import mcp.types as types
import pytest
from mcp import MCPError

from hub.testing import make_config, result_json, result_text, running_hub

pytestmark = pytest.mark.anyio


@pytest.fixture
def config(tmp_path):
    return make_config(tmp_path, plugins={"example": {"greeting": "hi"}})


async def test_tools_listed_with_schemas(config, example_plugin):
    async with running_hub(config, plugins={"example": example_plugin}) as (hub, client):
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
        assert {"context_set", "greet", "add", "boom", "slow"} <= set(tools)
        assert tools["greet"].input_schema["required"] == ["name"]
        assert tools["add"].input_schema["properties"]["a"] == {"type": "integer"}
        # The clash and the bad name were refused and reported; the rest of the plugin is served.
        assert "bad name!" not in tools
        assert tools["context_set"].description.startswith("Set a shared context entry")
        warnings = hub.plugins["example"].warnings
        assert any("clashes with the one from plugin 'core'" in w for w in warnings)
        assert any("'bad name!' is not allowed" in w for w in warnings)


async def test_plugin_config_reaches_the_plugin(config, example_plugin):
    async with running_hub(config, plugins={"example": example_plugin}) as (_, client):
        result = await client.call_tool("greet", {"name": "Ada"})
        assert not result.is_error
        assert result.structured_content == {"greeting": "hi Ada"}
        assert result_json(result) == {"greeting": "hi Ada"}


@pytest.mark.parametrize(
    ("tool", "arguments", "expected"),
    [
        ("greet", {}, "invalid arguments for greet: name: Field required"),
        ("greet", {"name": 5}, "name: Input should be a valid string"),
        ("greet", {"name": "x", "times": "many"}, "times: Input should be a valid integer"),
        ("greet", {"name": "x", "colour": "red"}, "colour: unknown field"),
        ("add", {"a": 1}, "invalid arguments for add: (arguments): 'b' is a required property"),
        ("add", {"a": "1", "b": 2}, "a: '1' is not of type 'integer'"),
        ("add", {"a": 1, "b": 2, "c": 3}, "Additional properties are not allowed ('c' was unexpected)"),
    ],
)
async def test_invalid_arguments_name_the_field(config, example_plugin, tool, arguments, expected):
    async with running_hub(config, plugins={"example": example_plugin}) as (_, client):
        result = await client.call_tool(tool, arguments)
        assert result.is_error
        assert expected in result_text(result)
        # Still serving.
        assert (await client.call_tool("add", {"a": 1, "b": 2})).structured_content == {"result": 3}


async def test_huge_string_argument(config, example_plugin):
    async with running_hub(config, plugins={"example": example_plugin}) as (_, client):
        big = "x" * 1_000_000
        result = await client.call_tool("greet", {"name": big})
        assert not result.is_error
        assert len(result.structured_content["greeting"]) == 1_000_003
        too_big = await client.call_tool("context_set", {"key": "k", "value": big})
        assert too_big.is_error
        assert "String should have at most 65536 characters" in result_text(too_big)


async def test_plugin_exception_is_a_tool_error_and_server_survives(config, example_plugin):
    async with running_hub(config, plugins={"example": example_plugin}) as (_, client):
        result = await client.call_tool("boom", {})
        assert result.is_error
        assert result_text(result) == "boom failed: RuntimeError: kaboom"
        refused = await client.call_tool("refuse", {})
        assert refused.is_error and result_text(refused) == "no such thing as 'x' (known: a, b)"
        assert not (await client.call_tool("greet", {"name": "still here"})).is_error


async def test_a_result_that_cannot_be_sent_is_a_tool_error(config, example_plugin):
    """A result pydantic's serializer refuses (nesting past its depth limit, a lone surrogate in a
    key) is answered as an error result naming the tool; the SDK would answer a code-0 error. So
    is one the protocol's schema refuses (structuredContent that is not an object)."""
    from hub.plugin.items import Tool

    deep: list[Any] = []
    for _ in range(400):
        deep = [deep]

    async def nested(args: dict[str, Any], call: Any) -> dict[str, Any]:
        return {"deep": deep}

    async def surrogate(args: dict[str, Any], call: Any) -> dict[str, Any]:
        return {"\udc00": 1}

    async def listed(args: dict[str, Any], call: Any) -> types.CallToolResult:
        return types.CallToolResult(content=[], structured_content=[1, 2])  # the model takes Any

    async with running_hub(config, plugins={"example": example_plugin}) as (hub, client):
        hub.registry.add(Tool("listed", listed, "structuredContent that is not an object."), "test")
        hub.registry.add(Tool("nested", nested, "Too deep to send."), "test")
        hub.registry.add(Tool("surrogate", surrogate, "A key JSON cannot carry as UTF-8."), "test")
        cases = [("nested", "depth"), ("surrogate", "surrogates not allowed"), ("listed", "not an object")]
        for name, why in cases:
            result = await client.call_tool(name, {})
            assert result.is_error, result
            text = result_text(result)
            assert text.startswith(f"{name} returned a result that cannot be sent") and why in text, text
        assert not (await client.call_tool("greet", {"name": "still here"})).is_error


async def test_unknown_tool_is_a_protocol_error(config, example_plugin):
    async with running_hub(config, plugins={"example": example_plugin}) as (_, client):
        with pytest.raises(MCPError) as caught:
            await client.call_tool("nope", {})
        assert "Unknown tool: nope" in str(caught.value)


async def test_progress_is_reported(config, example_plugin):
    async with running_hub(config, plugins={"example": example_plugin}) as (_, client):
        seen: list[tuple[float, Any, Any]] = []

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            seen.append((progress, total, message))

        result = await client.call_tool("slow", {"steps": 3, "delay": 0}, progress_callback=on_progress)
        assert result.structured_content == {"done": 3}
        with anyio.fail_after(5):
            while len(seen) < 3:
                await anyio.sleep(0.01)
        assert seen == [(1, 3, "step 1"), (2, 3, "step 2"), (3, 3, "step 3")]


async def test_resources_and_templates(config, example_plugin):
    async with running_hub(config, plugins={"example": example_plugin}) as (_, client):
        await client.call_tool("greet", {"name": "Ada"})
        uris = {str(r.uri) for r in (await client.list_resources()).resources}
        assert {"hub://status", "hub://context", "hub://budget", "example://greetings"} <= uris
        templates = [t.uri_template for t in (await client.list_resource_templates()).resource_templates]
        assert "example://greetings/{name}" in templates
        body = await client.read_resource("example://greetings")
        assert '"Ada"' in body.contents[0].text
        one = await client.read_resource("example://greetings/Bob")
        assert '"hello Bob"' in one.contents[0].text
        with pytest.raises(MCPError, match="no greeting for 'nobody'"):
            await client.read_resource("example://greetings/nobody")
        with pytest.raises(MCPError, match="Unknown resource: example://nothing"):
            await client.read_resource("example://nothing")


async def test_prompts(config, example_plugin):
    async with running_hub(config, plugins={"example": example_plugin}) as (_, client):
        prompts = (await client.list_prompts()).prompts
        assert [p.name for p in prompts] == ["greeting"]
        assert prompts[0].arguments[0].required
        got = await client.get_prompt("greeting", {"name": "Ada", "style": "warm"})
        assert got.messages[0].content.text == "Write a warm greeting for Ada."
        with pytest.raises(MCPError, match="missing required argument"):
            await client.get_prompt("greeting", {})
        with pytest.raises(MCPError, match=r"unknown argument\(s\): colour"):
            await client.get_prompt("greeting", {"name": "x", "colour": "red"})


async def test_status_resource(config, example_plugin):
    async with running_hub(config, plugins={"example": example_plugin}) as (_, client):
        await client.call_tool("context_set", {"key": "lang", "value": "rust"})
        body = await client.read_resource("hub://status")
        import json

        status = json.loads(body.contents[0].text)
        names = {p["name"]: p for p in status["plugins"]}
        assert names["example"]["status"] == "loaded"
        assert "greet" in names["example"]["tools"]
        assert status["context"] == {"entries": 1}
        assert status["budget"]["limit_usd"] is None
        assert status["hub"]["version"]


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_tools_list_changed_reaches_clients_in_both_eras(config, example_plugin, mode):
    changed = anyio.Event()

    async def on_message(message: Any) -> None:
        if isinstance(message, types.ToolListChangedNotification):
            changed.set()

    async with running_hub(
        config, plugins={"example": example_plugin}, mode=mode, message_handler=on_message
    ) as (_, client):
        if mode == "legacy":
            assert client.session.initialize_result.capabilities.tools.list_changed is True

        listening = anyio.Event()

        async def listen() -> None:  # the 2026-07-28 era delivers changes on subscriptions/listen
            async with client.listen(tools_list_changed=True) as subscription:
                listening.set()
                async for _ in subscription:
                    changed.set()
                    return

        async with anyio.create_task_group() as tg:
            if mode == "auto":
                tg.start_soon(listen)
                await listening.wait()
            result = await client.call_tool("add_dynamic", {"name": "fresh"})
            assert result_text(result) == "added"
            with anyio.fail_after(5):
                await changed.wait()
            tg.cancel_scope.cancel()
        assert "fresh" in {t.name for t in (await client.list_tools()).tools}
        assert result_text(await client.call_tool("fresh", {})) == "dynamic!"
        assert (await client.call_tool("remove_dynamic", {"name": "fresh"})).structured_content == {
            "result": True
        }
        assert "fresh" not in {t.name for t in (await client.list_tools()).tools}


async def test_budget_refusal_is_a_tool_error_and_spend_is_reported_per_plugin(tmp_path, example_plugin):
    config = make_config(tmp_path, budget={"limit_usd": 1.0})
    async with running_hub(config, plugins={"example": example_plugin}) as (_, client):
        ok = await client.call_tool("spend", {"reserve_usd": 0.5, "spend_usd": 0.4})
        assert ok.structured_content["spent_by_plugin"] == {"example": 0.4}
        refused = await client.call_tool("spend", {"reserve_usd": 0.7, "spend_usd": 0.1})
        assert refused.is_error
        assert result_text(refused) == (
            "budget exhausted: spent $0.40 of $1.00; example spend needs up to $0.70. "
            "Raise [budget] limit_usd or --budget-usd; or start a new period with `hub budget reset` "
            "(the history is kept); or ask for at most $0.60."
        )
    # The ledger outlives the hub.
    async with running_hub(config, plugins={"example": example_plugin}) as (_, client):
        import json

        budget = json.loads((await client.read_resource("hub://budget")).contents[0].text)
        assert budget["spent_usd"] == 0.4 and budget["remaining_usd"] == 0.6


def test_resource_template_variables_match_and_expand():
    from hub.plugin.items import ResourceTemplate

    async def read(params: dict[str, str]) -> str:
        return ""

    one = ResourceTemplate("x://items/{id}/raw", "item", read)
    assert one.match("x://items/42/raw") == {"id": "42"}
    assert one.match("x://items/4/2/raw") is None  # {id} is one segment
    rest = ResourceTemplate("file:///{+path}", "file", read)
    assert rest.match("file:///home/ada/notes.md") == {"path": "home/ada/notes.md"}
    assert rest.expand({"path": "home/ada/notes.md"}) == "file:///home/ada/notes.md"
    frag = ResourceTemplate("doc://page{#section}", "doc", read)
    assert frag.match("doc://page#intro") == {"section": "intro"}
    assert frag.expand({"section": "intro"}) == "doc://page#intro"
