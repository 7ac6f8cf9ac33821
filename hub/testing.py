"""Helpers for testing the hub and its plugins (ours and third-party ones).

``async with running_hub(tmp_path, plugins={"hello": hello_module}) as (hub, client):`` starts a
hub with only the core and the given plugin objects, against a state directory under
`tmp_path`, and connects an in-memory MCP client (`mcp.Client`) to it.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Literal

import mcp.types as types
from mcp import Client

from hub.config.settings import HubConfig
from hub.host import Hub

__all__ = ["call_error", "call_ok", "make_config", "result_json", "result_text", "running_hub"]


def make_config(tmp_path: Path, **values: Any) -> HubConfig:
    """A `HubConfig` whose state lives in `tmp_path`; keyword arguments are hub.toml keys."""
    data: dict[str, Any] = {"state_dir": str(tmp_path / "state"), "plugins": {"enabled": []}}
    for key, value in values.items():
        if key == "plugins" and isinstance(value, dict):
            data["plugins"] = {**data["plugins"], **value}
        else:
            data[key] = value
    return HubConfig.model_validate(data)


@contextlib.asynccontextmanager
async def running_hub(
    config: HubConfig | Path,
    *,
    plugins: dict[str, Any] | None = None,
    mode: Literal["auto", "legacy"] = "legacy",
    **client_options: Any,
) -> AsyncIterator[tuple[Hub, Client]]:
    """A started hub plus a connected in-memory client. `mode="legacy"` speaks the handshake
    (initialize) era; `"auto"` negotiates the 2026-07-28 era, which Claude Code 2.1 uses (it
    probes `server/discover` first). Test both when it matters."""
    if isinstance(config, Path):
        config = make_config(config)
    async with (
        Hub(config, extra_plugins=plugins) as hub,
        Client(hub.server.mcp, mode=mode, **client_options) as client,
    ):
        yield hub, client


def result_text(result: types.CallToolResult) -> str:
    return "\n".join(block.text for block in result.content if isinstance(block, types.TextContent))


def result_json(result: types.CallToolResult) -> Any:
    if result.structured_content is not None:
        return result.structured_content
    return json.loads(result_text(result))


async def call_ok(client: Client, tool: str, **arguments: Any) -> Any:
    """Call `tool`, fail the test (showing the error) if it is an error, and return its JSON."""
    result = await client.call_tool(tool, arguments)
    assert not result.is_error, result_text(result)
    return result_json(result)


async def call_failed(client: Client, tool: str, **arguments: Any) -> Any:
    """Call `tool`, fail the test unless it is an error, and return its structured content (a
    tool that reports failed work keeps the result there, with isError)."""
    result = await client.call_tool(tool, arguments)
    assert result.is_error, result_text(result)
    return result_json(result)


async def call_error(client: Client, tool: str, **arguments: Any) -> str:
    """Call `tool`, fail the test if it succeeds, and return the error's text."""
    result = await client.call_tool(tool, arguments)
    assert result.is_error, result_text(result)
    return result_text(result)
