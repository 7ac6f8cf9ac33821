"""The repository is a Claude Code plugin marketplace (`.claude-plugin/`): the real Claude Code CLI
validates it, installs it from the checkout into a fresh HOME, and a `claude -p` run against the
fake Messages API then has the hub's tools, its skill and its commands."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from fake_anthropic import FakeAnthropic

ROOT = Path(__file__).resolve().parents[2]
CLAUDE = shutil.which("claude")

pytestmark = pytest.mark.skipif(CLAUDE is None, reason="the claude CLI is installed by python3 dev.py test")


def _claude(home: Path, *args: str, base_url: str = "http://127.0.0.1:9", timeout: float = 120) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLAUDE", "HUB_"))}
    env.update(
        HOME=str(home),
        ANTHROPIC_BASE_URL=base_url,
        ANTHROPIC_API_KEY="test",
        CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1",
        DISABLE_TELEMETRY="1",
        HUB_STATE_DIR=str(home / "state"),
        PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
    )
    out = subprocess.run([CLAUDE, *args], env=env, cwd=home, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stdout + out.stderr
    return json.loads(out.stdout) if out.stdout.strip().startswith("{") else {"text": out.stdout}


def test_the_repository_is_a_valid_plugin_marketplace_that_installs_and_serves(tmp_path):
    validated = _claude(tmp_path, "plugin", "validate", "--strict", "--json", str(ROOT))
    assert validated.get("success") is True, validated
    installed = _claude(tmp_path, "plugin", "install", "hub", "--marketplace", str(ROOT), "--json")
    assert installed.get("outcome") == "ok", installed
    try:
        with FakeAnthropic(api_key="test") as api:
            # The first session starts the shared hub process; on a loaded machine Claude Code may
            # send its first request before a cold hub answers (the first-session case of the
            # proxy's list wait). The second session finds it warm, as every later one does.
            for _ in range(2):
                _claude(tmp_path, "-p", "hello", "--output-format", "json", base_url=api.url, timeout=180)
            request = api.messages[-1]
    finally:
        subprocess.run(
            [str(Path(sys.executable).parent / "hub"), "stop", "--all", "--force"],
            env={**os.environ, "HUB_STATE_DIR": str(tmp_path / "state")},
            capture_output=True,
            timeout=60,
        )
    tools = [tool.get("name", "") for tool in request.get("tools", [])]
    text = json.dumps(request)
    # Claude Code defers MCP tools behind its tool search: they are named in the request either way.
    assert "mcp__plugin_hub_hub__batch_execute" in text, tools
    assert "mcp__plugin_hub_hub__pool_run" in text
    assert "hub:using-hub" in text and "hub:status" in text and "hub:batch-check" in text
