"""The shared context tools: the slot pool's names and shapes, persisted across restarts."""

from __future__ import annotations

import json

import pytest

from hub.testing import make_config, result_json, result_text, running_hub

pytestmark = pytest.mark.anyio


async def test_context_tools_shapes_and_persistence(tmp_path):
    config = make_config(tmp_path, context={"style": "idiomatic"})
    async with running_hub(config) as (_, client):
        assert result_json(await client.call_tool("context_set", {"key": "language", "value": "rust"})) == {
            "key": "language",
            "value": "rust",
        }
        await client.call_tool("context_set", {"key": "framework", "value": "tokio"})
        assert result_json(await client.call_tool("context_get", {"key": "language"})) == {"value": "rust"}
        assert result_json(await client.call_tool("context_list", {})) == {
            "framework": "tokio",
            "language": "rust",
            "style": "idiomatic",
        }
        assert result_json(await client.call_tool("context_delete", {"key": "framework"})) == {
            "deleted": True
        }
        assert result_json(await client.call_tool("context_delete", {"key": "framework"})) == {
            "deleted": False
        }
        missing = await client.call_tool("context_get", {"key": "framework"})
        assert missing.is_error
        assert result_text(missing) == "no context entry 'framework' (keys: language, style)"

    # A new hub on the same state directory sees the same entries.
    async with running_hub(config) as (_, client):
        assert result_json(await client.call_tool("context_list", {})) == {
            "language": "rust",
            "style": "idiomatic",
        }
        listing = await client.read_resource("hub://context")
        assert json.loads(listing.contents[0].text) == {"language": "rust", "style": "idiomatic"}


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ({"key": "a b", "value": "x"}, "invalid context key 'a b'"),
        ({"key": "", "value": "x"}, "key: String should have at least 1 character"),
        ({"key": "k"}, "value: Field required"),
        ({"key": "k", "value": 3}, "value: Input should be a valid string"),
    ],
)
async def test_bad_context_input(tmp_path, arguments, expected):
    async with running_hub(make_config(tmp_path)) as (_, client):
        result = await client.call_tool("context_set", arguments)
        assert result.is_error
        assert expected in result_text(result)
