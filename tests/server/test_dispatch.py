"""The cached list answers (hub.fastpath): served from the cache until the registry changes,
per protocol era, and rebuilt with the change."""

from __future__ import annotations

from typing import Any, Literal

import pytest

from hub import Tool
from hub.testing import make_config, running_hub

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def echo(arguments: dict[str, Any], call: Any) -> str:
    return "hi"


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_lists_are_cached_until_the_registry_changes(tmp_path, mode: Literal["legacy", "auto"]):
    async with running_hub(make_config(tmp_path), mode=mode) as (hub, client):
        fast = hub.server.dispatch
        first = await client.list_tools()
        hits = fast.hits
        second = await client.list_tools()
        assert fast.hits == hits + 1
        assert [t.model_dump() for t in second.tools] == [t.model_dump() for t in first.tools]
        await client.list_prompts()
        await client.list_resources()
        cached = set(fast.lists)
        assert {key[0] for key in cached} >= {"tools/list", "prompts/list", "resources/list"}

        hub.registry.add(Tool("fresh_tool", echo, "added at run time"), "test")
        assert not fast.lists  # every list is rebuilt after a change
        names = {t.name for t in (await client.list_tools()).tools}
        assert "fresh_tool" in names and len(names) == len(first.tools) + 1
        hub.registry.remove("tools", "fresh_tool")
        assert "fresh_tool" not in {t.name for t in (await client.list_tools()).tools}
