"""The proxy relays what a downstream server asks of its client (sampling, elicitation form and
URL, roots), its log messages, completion and resource subscriptions: both eras of the hub's
client against both eras of the server (tests/peers/asking.py), in process."""

from __future__ import annotations

import warnings
from typing import Any

import anyio
import hub_proxy
import mcp.types as types
import pytest
from askingclient import EXPECTED, Answers, answer_of, asking_server
from mcp.shared.exceptions import MCPDeprecationWarning

from hub.testing import make_config, result_text, running_hub

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(90)]
WARNING_AND_UP = ["warning", "error", "critical", "alert", "emergency"]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def wait_for_tool(hub: Any, name: str) -> None:
    with anyio.fail_after(30):
        while name not in hub.registry.tools:
            await anyio.sleep(0.02)


@pytest.mark.parametrize("protocol", ["handshake", "auto"])
@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_everything_a_server_asks_is_relayed(tmp_path, mode, protocol):
    """Client era `mode` x server era `protocol` ("auto": the server speaks 2026-07-28)."""
    answers = Answers()
    updates: list[str] = []

    async def on_message(message: Any) -> None:
        if isinstance(message, types.ResourceUpdatedNotification):
            updates.append(str(message.params.uri))

    config = make_config(tmp_path, servers={"asking": asking_server(protocol=protocol)})
    options: dict[str, Any] = {**answers.callbacks(), "message_handler": on_message}
    if mode == "auto":
        options["log_level"] = "warning"  # 2026-07-28: the level rides every request
    async with running_hub(config, plugins={"proxy": hub_proxy.ProxyPlugin}, mode=mode, **options) as (
        hub,
        client,
    ):
        await wait_for_tool(hub, "asking__chain")
        for tool, expected in EXPECTED.items():
            assert answer_of(await client.call_tool(f"asking__{tool}", {"prompt": "P"})) == expected, tool
        assert answers.asked.count("sampling") == 3 and "elicitation:url" in answers.asked

        if mode == "legacy":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", MCPDeprecationWarning)
                await client.set_logging_level("warning")
        answers.logs.clear()
        await client.call_tool("asking__noisy", {})
        assert answers.logs == WARNING_AND_UP

        prompt = types.PromptReference(type="ref/prompt", name="asking__greet")
        assert (await client.complete(prompt, {"name": "lang", "value": "e"})).completion.values == [
            "en",
            "es",
        ]
        template = types.ResourceTemplateReference(type="ref/resource", uri="demo://item/{id}")
        assert (await client.complete(template, {"name": "id", "value": "12"})).completion.values == [
            "12",
            "123",
        ]

        await expect_update(client, mode, updates)


async def expect_update(client: Any, mode: str, updates: list[str]) -> None:
    """Subscribe to demo://a through the hub; a change downstream (the `touch` tool) reaches the
    client. Touched until the subscription has reached the server (it is applied there in the
    background)."""

    async def touch_until_told(seen: list[str]) -> None:
        with anyio.fail_after(20):
            while "demo://a" not in seen:
                await client.call_tool("asking__touch", {"uri": "demo://a"})
                with anyio.move_on_after(0.3):
                    while "demo://a" not in seen:
                        await anyio.sleep(0.01)

    if mode == "legacy":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", MCPDeprecationWarning)
            await client.subscribe_resource("demo://a")
        await touch_until_told(updates)
        return
    events: list[str] = []
    async with client.listen(resource_subscriptions=["demo://a"]) as subscription:

        async def collect() -> None:
            async for event in subscription:
                events.append(str(getattr(event, "uri", "")))

        async with anyio.create_task_group() as tg:
            tg.start_soon(collect)
            await touch_until_told(events)
            tg.cancel_scope.cancel()


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_a_client_that_cannot_answer_gets_a_clear_error(tmp_path, mode):
    config = make_config(
        tmp_path, servers={"asking": asking_server(protocol="auto" if mode == "auto" else "handshake")}
    )
    async with running_hub(config, plugins={"proxy": hub_proxy.ProxyPlugin}, mode=mode) as (hub, client):
        await wait_for_tool(hub, "asking__sample")
        failed = await client.call_tool("asking__sample", {"prompt": "P"})
        assert failed.is_error
        assert "did not declare the sampling capability" in result_text(failed)
