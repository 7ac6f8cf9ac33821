"""The real Claude Code CLI with `[tools] expose = "search"` (fake Messages API): with its own tool
search on (its default), find_tools, call_tool and the `always` tools reach the model in full
on the first turn (`anthropic/alwaysLoad`), nothing else of the hub's is listed, and a scripted
call_tool runs a tool the model was never shown."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fake_anthropic import FakeAnthropic
from hubtests import hub_env, npm_bin

VENV_BIN = str(Path(sys.executable).parent)
FLAGS = ["--strict-mcp-config", "--allowedTools", "mcp__hub__call_tool", "--output-format", "json"]
FLAGS += ["--model", "claude-sonnet-4-5"]


@pytest.mark.timeout(180)
def test_claude_code_gets_the_search_tools_in_full_and_runs_a_tool_through_call_tool(tmp_path):
    (tmp_path / "hub.toml").write_text(
        '[plugins]\nenabled = ["batchit"]\n[tools]\nexpose = "search"\nalways = ["context_get"]\n'
    )
    entry = {"type": "stdio", "command": "hub", "args": ["serve"]}
    (tmp_path / "mcp.json").write_text(json.dumps({"mcpServers": {"hub": entry}}))
    (tmp_path / "home").mkdir()
    call = {"name": "context_set", "arguments": {"key": "lang", "value": "python"}}
    with FakeAnthropic() as api:
        api.script(
            [{"type": "tool_use", "id": "toolu_1", "name": "mcp__hub__call_tool", "input": call}],
            [{"type": "text", "text": "done"}],
        )
        env = hub_env(
            tmp_path,
            HOME=str(tmp_path / "home"),
            ANTHROPIC_BASE_URL=api.url,
            ANTHROPIC_API_KEY=api.api_key,
            CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1",
            DISABLE_TELEMETRY="1",
            HUB_CONFIG=str(tmp_path / "hub.toml"),
            PATH=os.pathsep.join([VENV_BIN, os.environ["PATH"]]),
        )
        env = {k: v for k, v in env.items() if not k.startswith("CLAUDE") or k.startswith("CLAUDE_CODE_DIS")}
        done = subprocess.run(
            [npm_bin("claude"), "-p", "use the hub", "--mcp-config", str(tmp_path / "mcp.json"), *FLAGS],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=150,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        first = api.messages[0]
        hub_tools = [t for t in first["tools"] if t["name"].startswith("mcp__hub__")]
        assert sorted(t["name"] for t in hub_tools) == [
            "mcp__hub__call_tool",
            "mcp__hub__context_get",
            "mcp__hub__find_tools",
        ]
        assert not any(t.get("defer_loading") for t in hub_tools)  # sent in full, not deferred
        text = json.dumps(first["messages"]) + json.dumps(first.get("system"))
        assert "mcp__hub__context_set" not in text and "mcp__hub__batch_execute" not in text
        result = [
            block
            for block in api.messages[1]["messages"][-1]["content"]
            if isinstance(block, dict) and block.get("type") == "tool_result"
        ]
    assert json.loads(done.stdout)["result"] == "done"
    assert result and not result[0].get("is_error"), result
    assert "python" in json.dumps(result[0]["content"])
