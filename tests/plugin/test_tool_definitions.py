"""What every built-in tool costs a model: its definition in `tools/list`.

Every input property of every built-in tool (nested ones too) has a one-line description, and no
generated `title` noise reaches the wire; `compact_schema` keeps what a model needs and drops the
rest without changing what is accepted.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict, Field

from hub.config.settings import HubConfig
from hub.errors import ToolError
from hub.plugin.items import Tool
from hub.plugin.schema import compact_schema
from hub.testing import running_hub

pytestmark = pytest.mark.anyio

BUILTIN = {"core", "batch", "batchit", "pool", "proxy"}


def undescribed(schema: dict[str, Any], where: str, defs: dict[str, Any] | None = None) -> list[str]:
    """Every property under `schema` (through items, anyOf/oneOf/allOf and $refs) without a description."""
    defs = schema.get("$defs", defs or {})
    found: list[str] = []

    def visit(node: Any, path: str, seen: frozenset[str]) -> None:
        if not isinstance(node, dict):
            return
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            name = ref.removeprefix("#/$defs/")
            if name not in seen:
                visit(defs[name], path, seen | {name})
        for name, prop in (node.get("properties") or {}).items():
            if not isinstance(prop, dict) or not str(prop.get("description") or "").strip():
                found.append(f"{path}.{name}")
            visit(prop, f"{path}.{name}", seen)
        for key in ("items", "additionalProperties"):
            visit(node.get(key), f"{path}[]", seen)
        for key in ("anyOf", "oneOf", "allOf"):
            for option in node.get(key) or []:
                visit(option, path, seen)

    visit(schema, where, frozenset())
    return found


def titles(node: Any) -> int:
    """How many `title` keywords a schema holds (not properties that happen to be named title)."""
    if isinstance(node, list):
        return sum(titles(v) for v in node)
    if not isinstance(node, dict):
        return 0
    count = 0
    for key, value in node.items():
        if key == "properties" and isinstance(value, dict):
            count += sum(titles(v) for v in value.values())
        else:
            count += (key == "title" and isinstance(value, str)) + titles(value)
    return count


async def test_every_builtin_tool_property_is_described_and_untitled(tmp_path):
    config = HubConfig.model_validate({"state_dir": str(tmp_path / "state")})  # every installed plugin
    async with running_hub(config) as (hub, client):
        assert BUILTIN - {"core"} <= set(hub.loaded)
        tools = (await client.list_tools()).tools
        builtin = [t for t in tools if hub.registry.tools[t.name].plugin in BUILTIN]
        assert len(builtin) >= 25
        problems: list[str] = []
        for tool in builtin:
            assert (tool.description or "").strip(), f"{tool.name} has no description"
            problems += undescribed(tool.input_schema, tool.name)
            assert titles(tool.input_schema) == 0, f"{tool.name}: generated titles in {tool.input_schema}"
        assert problems == [], "give these properties a description: " + ", ".join(problems)


def test_the_walker_finds_undescribed_nested_properties():
    """The check above must be able to fail: a property deep in a list of objects is found."""

    class Inner(BaseModel):
        ok: int = Field(description="described")
        bare: str = ""

    class Outer(BaseModel):
        items: list[Inner] = Field(default_factory=list, description="a list")
        maybe: Inner | None = Field(default=None, description="one")

    schema = Tool("t", lambda a, c: None, "x", Outer).schema  # type: ignore[arg-type, return-value]
    assert undescribed(schema, "t") == ["t.items[].bare", "t.maybe.bare"]
    assert undescribed(Outer.model_json_schema(), "t") == ["t.items[].bare", "t.maybe.bare"]  # via $refs


class Node(BaseModel):
    model_config = ConfigDict(extra="forbid")
    title: str = Field(description="A property called title stays.")
    children: list[Node] = Field(default_factory=list, description="Recursive: kept as a $ref.")
    note: str | None = Field(default=None, description="Optional: shown as a plain string.")
    choice: int | str | None = Field(default=None, description="Two types and None.")


def test_compact_schema_drops_noise_and_keeps_meaning():
    schema = compact_schema(Node.model_json_schema())
    props = schema["properties"]
    assert set(props) == {"title", "children", "note", "choice"}
    assert props["title"] == {"type": "string", "description": "A property called title stays."}
    assert props["note"] == {"type": "string", "description": "Optional: shown as a plain string."}
    assert props["choice"] == {
        "anyOf": [{"type": "integer"}, {"type": "string"}],
        "description": "Two types and None.",
    }
    assert props["children"]["items"] == {"$ref": "#/$defs/Node"}  # recursion cannot be inlined
    assert titles(schema) == 0 and "additionalProperties" not in json.dumps(schema)
    assert schema["required"] == ["title"]
    # What is accepted is unchanged: pydantic still validates, null and unknown keys included.
    tool = Tool("nodes", lambda a, c: None, "x", Node)  # type: ignore[arg-type, return-value]
    assert tool.validate({"title": "a", "note": None}).note is None
    with pytest.raises(ToolError, match="invalid arguments for nodes: colour: unknown field"):
        tool.validate({"title": "a", "colour": "red"})


def test_hand_written_schemas_are_left_alone():
    schema = {"type": "object", "title": "Mine", "properties": {"x": {"type": "string", "title": "X"}}}
    assert Tool("t", lambda a, c: None, "x", input_schema=schema).schema == schema  # type: ignore[arg-type, return-value]
