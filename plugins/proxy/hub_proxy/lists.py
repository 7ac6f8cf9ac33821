"""What a downstream server offers (`Lists`), kept in the store (`MIGRATIONS`) so a lazy server
is listed without starting it."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import mcp.types as types

MIGRATIONS = [
    """
    CREATE TABLE proxy_tools (
        server TEXT PRIMARY KEY,
        tools_json TEXT NOT NULL,
        updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
    );
    """,
    """
    CREATE TABLE proxy_lists (
        server TEXT PRIMARY KEY,
        lists_json TEXT NOT NULL,
        updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
    );
    INSERT INTO proxy_lists (server, lists_json, updated_at)
        SELECT server, json_object('tools', json(tools_json)), updated_at FROM proxy_tools;
    DROP TABLE proxy_tools;
    """,
]


@dataclass
class Lists:
    """What a downstream server offers."""

    tools: list[types.Tool] = field(default_factory=list)
    resources: list[types.Resource] = field(default_factory=list)
    templates: list[types.ResourceTemplate] = field(default_factory=list)
    prompts: list[types.Prompt] = field(default_factory=list)

    def dump(self) -> str:
        def items(values: list[Any]) -> list[Any]:
            return [v.model_dump(mode="json", by_alias=True, exclude_none=True) for v in values]

        return json.dumps(
            {
                "tools": items(self.tools),
                "resources": items(self.resources),
                "templates": items(self.templates),
                "prompts": items(self.prompts),
            }
        )

    @classmethod
    def load(cls, text: str) -> Lists:
        data = json.loads(text)
        return cls(
            tools=[types.Tool.model_validate(t) for t in data.get("tools", [])],
            resources=[types.Resource.model_validate(r) for r in data.get("resources", [])],
            templates=[types.ResourceTemplate.model_validate(t) for t in data.get("templates", [])],
            prompts=[types.Prompt.model_validate(p) for p in data.get("prompts", [])],
        )


async def all_pages(fetch: Callable[..., Awaitable[Any]], attribute: str) -> list[Any]:
    """Every item of a paginated list request (`fetch` is e.g. `session.list_tools`)."""
    items: list[Any] = []
    cursor: str | None = None
    while True:
        page = await fetch(params=types.PaginatedRequestParams(cursor=cursor) if cursor else None)
        items.extend(getattr(page, attribute))
        cursor = page.next_cursor
        if not cursor:
            return items
