"""What a plugin can do about the hub's answers themselves: hold list answers while it gets
ready (`hub.hold_lists`), add to the hub's instructions (`hub.set_instructions`), and list an
item as its own wire JSON (`definition`), in both protocol eras."""

from __future__ import annotations

from typing import Any

import anyio
import mcp.types as types
import pytest
import structlog
from mcp import Client
from pydantic import TypeAdapter

from hub import ListHold, Plugin, RegisterTool, Tool, ToolCall, hookimpl
from hub.testing import make_config, running_hub

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]
RAW: TypeAdapter[dict[str, Any]] = TypeAdapter(dict[str, Any])


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def plain(arguments: dict[str, Any], call: ToolCall) -> str:
    return "plain"


PLAIN = {
    "name": "plain",
    "description": "A plain tool.",
    "inputSchema": {"type": "object", "properties": {}},
    "icons": [{"src": "https://example.com/plain.png", "mimeType": "image/png"}],
    "_meta": {"anthropic/alwaysLoad": True},
    "x-vendor": {"kept": True},
}


class Gate(Plugin):
    """Holds the tool list until the test opens it; adds to the instructions; one tool."""

    hold: ListHold

    def __init__(self, wait_s: float = 30.0) -> None:
        self.wait_s = wait_s

    @hookimpl
    def hub_startup(self) -> Any:
        async def start() -> None:
            self.hold = self.hub.hold_lists("the gate is closed", wait_s=self.wait_s, kinds=["tools"])
            self.hub.set_instructions("Gate: knock first.")

        return start

    @hookimpl
    def hub_register_tools(self, register: RegisterTool) -> None:
        register(Tool("plain", plain, "A plain tool.", input_schema={"type": "object"}, definition=PLAIN))


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_a_held_list_waits_for_the_release(tmp_path, mode):
    gate = Gate()
    async with running_hub(make_config(tmp_path), plugins={"gate": gate}, mode=mode) as (hub, client):
        listed: list[set[str]] = []

        async def list_tools() -> None:
            listed.append({t.name for t in (await client.list_tools()).tools})

        async with anyio.create_task_group() as tg:
            tg.start_soon(list_tools)
            with anyio.fail_after(10):
                while hub.registry.waiting == 0:  # the request is in, and waits
                    await anyio.sleep(0.01)
            gate.hub.add_tool(Tool("opened", plain, "Added before the release."))
            gate.hold.release()
        assert {"plain", "opened"} <= listed[0]


async def test_a_hold_waited_out_is_logged_and_not_waited_for_again(tmp_path):
    with structlog.testing.capture_logs() as logs:
        async with running_hub(make_config(tmp_path), plugins={"gate": Gate(wait_s=0.2)}) as (hub, client):
            assert "plain" in {t.name for t in (await client.list_tools()).tools}
            assert not hub.registry.held("tools")
            await client.list_tools()
    missed = [entry["missed"] for entry in logs if entry.get("missed")]
    assert missed == [["gate: the gate is closed"]]


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_instructions_and_definitions_reach_clients(tmp_path, mode):
    gate = Gate(wait_s=0)
    async with running_hub(make_config(tmp_path), plugins={"gate": gate}, mode=mode) as (hub, client):
        assert (client.instructions or "").endswith("\n\nGate: knock first.")
        for _ in range(2):  # the answer the SDK made, then the cached one
            listed = await client.session.send_request(types.ListToolsRequest(), RAW)  # type: ignore[type-var]
            assert next(t for t in listed["tools"] if t["name"] == "plain") == PLAIN
        gate.hub.set_instructions("Gate: open.")
        async with Client(hub.server.mcp, mode=mode) as later:  # a session that starts now
            assert (later.instructions or "").endswith("\n\nGate: open.")
        gate.hub.set_instructions(None)
        async with Client(hub.server.mcp, mode=mode) as later:
            assert "Gate" not in (later.instructions or "")
