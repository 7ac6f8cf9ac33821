"""A tool call asks its client through `ToolCall` (sampling, forms, URLs, roots, log messages), in
the client's era: a request within the call (handshake era), or `input_required` and a parked call
resumed by the retry (2026-07-28); completion and resource subscriptions for a plugin's items."""

from __future__ import annotations

import warnings
from typing import Any

import anyio
import asking_plugin
import mcp.types as types
import pytest
from askingclient import ROOT_URI, Answers
from mcp.shared.exceptions import MCPDeprecationWarning, MCPError

from hub.testing import result_text, running_hub

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def clear_events() -> None:
    asking_plugin.events.clear()


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_a_tool_asks_its_client_in_either_era(tmp_path, mode):
    answers = Answers()
    options: dict[str, Any] = answers.callbacks()
    if mode == "auto":
        options["log_level"] = "error"
    async with running_hub(tmp_path, plugins={"ask": asking_plugin}, mode=mode, **options) as (_, client):
        assert result_text(await client.call_tool("ask_sample", {"prompt": "P"})) == "answer to P"
        assert result_text(await client.call_tool("ask_raw_sample", {"prompt": "R"})) == "answer to R"
        everything = (await client.call_tool("ask_everything", {})).structured_content
        assert everything == {
            "sample": "answer to first",
            "form": {"name": "Ada"},
            "url": "accept",
            "roots": [ROOT_URI],
        }
        together = (await client.call_tool("ask_together", {})).structured_content
        assert together == {"result": ["answer to question 1", "answer to question 2"]}
        assert (
            answers.asked
            == ["sampling", "sampling", "sampling", "elicitation:form", "elicitation:url", "roots"]
            + ["sampling"] * 2
        )

        if mode == "legacy":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", MCPDeprecationWarning)
                await client.set_logging_level("error")
        await client.call_tool("ask_logs", {})
        assert answers.logs == ["error", "critical", "alert", "emergency"]

        fruit = types.PromptReference(type="ref/prompt", name="ask_fruit")
        assert (await client.complete(fruit, {"name": "fruit", "value": "ap"})).completion.values == [
            "apple",
            "apricot",
        ]
        item = types.ResourceTemplateReference(type="ref/resource", uri="ask://items/{id}")
        assert (await client.complete(item, {"name": "id", "value": "b"})).completion.values == ["banana"]
        with pytest.raises(MCPError):
            await client.complete(
                types.PromptReference(type="ref/prompt", name="nope"), {"name": "x", "value": ""}
            )


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_a_client_without_the_capability_gets_an_error_result(tmp_path, mode):
    async with running_hub(tmp_path, plugins={"ask": asking_plugin}, mode=mode) as (_, client):
        result = await client.call_tool("ask_sample", {"prompt": "P"})
        assert result.is_error
        assert result_text(result) == (
            "ask_sample: the client calling ask_sample did not declare the sampling capability, "
            "so it cannot answer sampling/createMessage"
        )


async def test_a_parked_call_is_bound_to_its_arguments_and_expires(tmp_path):
    """The 2026-07-28 rounds by hand: the state is the hub's, bound to the tool and arguments, and
    a call whose client does not come back is cancelled."""
    answers = Answers()
    async with running_hub(tmp_path, plugins={"ask": asking_plugin}, mode="auto", **answers.callbacks()) as (
        hub,
        client,
    ):
        session = client.session
        first = await session.call_tool("ask_sample", {"prompt": "P"}, allow_input_required=True)
        assert isinstance(first, types.InputRequiredResult)
        [(key, request)] = (first.input_requests or {}).items()
        assert isinstance(request, types.CreateMessageRequest) and first.request_state
        assert first.request_state.startswith("hub.parked.")
        reply = types.CreateMessageResult(
            role="assistant", model="m", content=types.TextContent(type="text", text="ok")
        )
        with pytest.raises(MCPError, match="belongs to another call"):
            await session.call_tool(
                "ask_sample",
                {"prompt": "other"},
                input_responses={key: reply},
                request_state=first.request_state,
            )
        with pytest.raises(MCPError, match="unknown or expired"):
            await session.call_tool(
                "ask_sample", {"prompt": "P"}, input_responses={key: reply}, request_state="hub.parked.forged"
            )
        done = await session.call_tool(
            "ask_sample", {"prompt": "P"}, input_responses={key: reply}, request_state=first.request_state
        )
        assert isinstance(done, types.CallToolResult) and result_text(done) == "ok"

        parking = hub.server.dispatch.parking
        assert parking is not None
        parking.ttl_s = 0.2
        waiting = await session.call_tool("ask_waiting", {}, allow_input_required=True)
        assert isinstance(waiting, types.InputRequiredResult)
        with anyio.fail_after(10):
            while "cancelled" not in asking_plugin.events:
                await anyio.sleep(0.02)
        with pytest.raises(MCPError, match="unknown or expired"):
            await session.call_tool(
                "ask_waiting", {}, input_responses={}, request_state=waiting.request_state
            )


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_subscribers_of_a_plugin_resource_are_told_of_changes(tmp_path, mode):
    updates: list[str] = []

    async def on_message(message: Any) -> None:
        if isinstance(message, types.ResourceUpdatedNotification):
            updates.append(str(message.params.uri))

    uri = "ask://items/7"
    async with running_hub(
        tmp_path, plugins={"ask": asking_plugin}, mode=mode, message_handler=on_message
    ) as (
        _,
        client,
    ):
        if mode == "legacy":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", MCPDeprecationWarning)
                await client.subscribe_resource(uri)
                await client.call_tool("ask_touch", {"uri": uri})
                with anyio.fail_after(10):
                    while uri not in updates:
                        await anyio.sleep(0.01)
                await client.unsubscribe_resource(uri)
        else:
            async with client.listen(resource_subscriptions=[uri]) as subscription:
                await client.call_tool("ask_touch", {"uri": uri})
                with anyio.fail_after(10):
                    event = await subscription.__anext__()
                assert getattr(event, "uri", None) == uri
            with anyio.fail_after(10):
                while f"unsubscribe {uri}" not in asking_plugin.events:
                    await anyio.sleep(0.01)
    assert asking_plugin.events == [f"subscribe {uri}", f"unsubscribe {uri}"]
