"""The shared context tools: the slot pool's names and shapes, persisted across restarts."""

from __future__ import annotations

import json

import pytest

from hub.testing import make_config, result_json, result_text, running_hub

pytestmark = pytest.mark.anyio


def values(listed: dict) -> dict:
    """context_list without its '@scopes' and '@project'."""
    return {k: v for k, v in listed.items() if not k.startswith("@")}


async def test_context_tools_shapes_and_persistence(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = make_config(tmp_path, context={"style": "idiomatic"})
    async with running_hub(config) as (_, client):
        assert result_json(await client.call_tool("context_set", {"key": "language", "value": "rust"})) == {
            "key": "language",
            "value": "rust",
        }
        await client.call_tool("context_set", {"key": "framework", "value": "tokio"})
        assert result_json(await client.call_tool("context_get", {"key": "language"})) == {
            "value": "rust",
            "scope": "project",
        }
        assert values(result_json(await client.call_tool("context_list", {}))) == {
            "framework": "tokio",
            "language": "rust",
            "style": "idiomatic",
        }
        assert result_json(await client.call_tool("context_delete", {"key": "framework"})) == {
            "deleted": True,
            "scope": "project",
        }
        assert result_json(await client.call_tool("context_delete", {"key": "framework"})) == {
            "deleted": False,
            "scope": "project",
        }
        missing = await client.call_tool("context_get", {"key": "framework"})
        assert missing.is_error
        assert result_text(missing) == "no context entry 'framework' (keys: language, style)"

    # A new hub on the same state directory sees the same entries.
    async with running_hub(config) as (_, client):
        assert values(result_json(await client.call_tool("context_list", {}))) == {
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


async def test_context_scopes_from_two_working_directories(tmp_path, monkeypatch):
    """Entries are per project (git top level, else the working directory); global ones are
    shared; a project's entry wins over a global one; [context] in hub.toml is the project's."""
    one = tmp_path / "one"
    (one / ".git").mkdir(parents=True)
    (one / "src").mkdir()
    two = tmp_path / "two"
    two.mkdir()
    state = {"state_dir": str(tmp_path / "state")}

    monkeypatch.chdir(one / "src")  # inside the repository: its top level is the project
    async with running_hub(make_config(tmp_path, **state, context={"style": "terse"})) as (hub, client):
        await client.call_tool("context_set", {"key": "language", "value": "rust"})
        made = await client.call_tool("context_set", {"key": "owner", "value": "ada", "scope": "global"})
        assert result_json(made) == {"key": "owner", "value": "ada", "scope": "global"}
        await client.call_tool("context_set", {"key": "tone", "value": "plain", "scope": "global"})
        await client.call_tool("context_set", {"key": "tone", "value": "formal"})
        listed = result_json(await client.call_tool("context_list", {}))
        assert listed["@project"] == str(one.resolve())
        assert values(listed) == {"language": "rust", "owner": "ada", "style": "terse", "tone": "formal"}
        assert listed["@scopes"] == {
            "language": "project",
            "owner": "global",
            "style": "project",
            "tone": "project",
        }
        assert "- language: rust" in await hub.context.as_prompt()

    monkeypatch.chdir(two)
    async with running_hub(make_config(tmp_path, **state)) as (hub, client):
        listed = result_json(await client.call_tool("context_list", {}))
        assert values(listed) == {"owner": "ada", "tone": "plain"}  # nothing of project one
        assert listed["@scopes"] == {"owner": "global", "tone": "global"}
        assert "rust" not in await hub.context.as_prompt()
        missing = await client.call_tool("context_get", {"key": "language"})
        assert missing.is_error and "keys: owner, tone" in result_text(missing)
        # Deleting in this project does not touch the global entry; scope global does.
        assert result_json(await client.call_tool("context_delete", {"key": "owner"}))["deleted"] is False
        assert result_json(await client.call_tool("context_delete", {"key": "owner", "scope": "global"}))[
            "deleted"
        ]

    monkeypatch.chdir(one)
    async with running_hub(make_config(tmp_path, **state)) as (_, client):
        assert values(result_json(await client.call_tool("context_list", {}))) == {
            "language": "rust",
            "style": "terse",
            "tone": "formal",
        }
