"""Fuzz every tool of every built-in plugin (and the proxied tools of a real downstream server)
through an MCP client with hostile arguments: wrong types, missing and extra fields, null,
boundary numbers, lone surrogates, deep nesting, large strings and arrays. Each call must come
back as a tool result within a time bound, and the hub must still answer afterwards.

Bounded: one call per (tool, field, value) plus a few whole-argument cases, in memory, so the
whole run takes seconds. Nothing can be spent (the budget is a millionth of a dollar) and no
Claude CLI exists, so calls that happen to be valid end quickly too.
"""

from __future__ import annotations

import sys
from typing import Any

import anyio
import mcp.types as types
import pytest
from hubtests import DOWNSTREAM
from mcp import Client

from hub.testing import make_config, result_text, running_hub

pytestmark = pytest.mark.anyio


def _deep(levels: int) -> Any:
    value: Any = "bottom"
    for _ in range(levels):
        value = [value]
    return value


HOSTILE: list[Any] = [
    None,
    True,
    "yes",
    "",
    "x" * 200_000,
    "\ud800 lone surrogate",
    0,
    -1,
    2**63,
    1e308,
    -1e308,
    0.5,
    [],
    ["x"] * 5_000,
    {},
    {"nested": {"deeper": [None, {"x": "\udfff"}]}},
    _deep(150),
]
WHOLE: list[Any] = [{}, {"unexpected_field": 1}, {"": None}]


def _plausible(schema: dict[str, Any]) -> Any:
    kind = schema.get("type")
    if kind is None and "anyOf" in schema:
        kind = next((s.get("type") for s in schema["anyOf"] if s.get("type") not in (None, "null")), None)
    if "enum" in schema:
        return schema["enum"][0]
    return {"string": "x", "integer": 1, "number": 1, "boolean": False, "array": [], "object": {}}.get(
        kind or "", "x"
    )


def _cases(tool: types.Tool) -> list[dict[str, Any]]:
    schema = tool.input_schema
    properties: dict[str, Any] = schema.get("properties") or {}
    required = {name: _plausible(properties.get(name, {})) for name in schema.get("required") or []}
    cases = [dict(case) for case in WHOLE]
    for name in properties:
        for value in HOSTILE:
            cases.append({**required, name: value})
    return cases


@pytest.mark.filterwarnings("ignore:ping is removed")
async def test_every_tool_answers_hostile_arguments_and_the_hub_keeps_serving(tmp_path):
    config = make_config(
        tmp_path,
        plugins={
            "enabled": ["batch", "batchit", "pool", "proxy"],
            "pool": {"claude_command": "no-such-claude-for-fuzz", "slots": 1},
            "batch": {
                "api_key": "sk-fuzz",
                "base_url": "http://127.0.0.1:9",
                "packet_roots": [str(tmp_path)],
            },
        },
        budget={"limit_usd": 0.000001},
        servers={
            "d": {
                "command": sys.executable,
                "args": [str(DOWNSTREAM)],
                # Not `listing`: n = 2**63 makes that test server build a list forever.
                "include": ["echo", "add", "fail", "whoami"],
            }
        },
    )
    async with running_hub(config, mode="auto") as (hub, client):
        with anyio.fail_after(60):
            tools = (await client.list_tools()).tools
            while not any(t.name.startswith("d__") for t in tools):  # the proxy learns d's tools
                await anyio.sleep(0.05)
                tools = (await client.list_tools()).tools
        plugins = {hub.registry.tools[t.name].plugin for t in tools}
        assert {"core", "batch", "batchit", "pool", "proxy"} <= plugins
        calls = 0
        for tool in tools:
            for arguments in _cases(tool):
                with anyio.move_on_after(10) as late:
                    result = await client.call_tool(tool.name, arguments)
                assert not late.cancelled_caught, f"no answer in 10 s: {tool.name} {str(arguments)[:200]}"
                calls += 1
                assert isinstance(result, types.CallToolResult)
                if result.is_error:
                    text = result_text(result)
                    assert text and "Traceback" not in text, (tool.name, text)
        assert calls > 500
        with anyio.fail_after(10):
            async with Client(hub.server.mcp, mode="legacy") as handshake:  # ping is handshake-era
                await handshake.send_ping()
            ok = await client.call_tool("context_set", {"key": "after", "value": "fuzz"})
        assert not ok.is_error
        spent = await hub.budget.summary()
        assert spent["spent_usd"] == 0


@pytest.mark.parametrize(
    ("tool", "arguments", "problem"),
    [
        ("pool_status", {}, None),
        ("pool_drain", {"timeout_s": "5"}, "timeout_s: Input should be a valid number"),
        (
            "batch_fetch",
            {"job_id": "j", "force": "yes"},
            "force: Input should be a valid boolean (got 'yes')",
        ),
        ("batch_list", {"limit": 5.5}, "limit: Input should be a valid integer"),
        (
            "pool_run",
            {"prompt": "p", "max_budget_usd": 1e308},
            "max_budget_usd: Input should be less than or equal to 1000",
        ),
        (
            "pool_fan_out",
            {"prompts": ["p"], "timeout_s": 1e308},
            "timeout_s: Input should be less than or equal to 86400",
        ),
        ("pool_scale_up", {"count": 10**9}, "count: Input should be less than or equal to 1000"),
        (
            "send_to_batch",
            {"packet_text": "p", "max_tokens": 10**12},
            "max_tokens: Input should be less than or equal to 1000000",
        ),
    ],
)
async def test_arguments_are_strict_json_types_with_upper_bounds(tmp_path, tool, arguments, problem):
    config = make_config(
        tmp_path,
        plugins={
            "enabled": ["batch", "pool"],
            "pool": {"claude_command": "no-such-claude", "slots": 0, "min_slots": 0},
        },
    )
    async with running_hub(config) as (_, client):
        result = await client.call_tool(tool, arguments)
        if problem is None:
            assert not result.is_error
        else:
            assert result.is_error and problem in result_text(result), result_text(result)
