"""The pool with the real Claude Code CLI (npm @anthropic-ai/claude-code, installed by
`.ci/run`), pointed with ANTHROPIC_BASE_URL at the fake Messages API on loopback."""

from __future__ import annotations

import json

import hub_pool
import pytest
from fake_anthropic import FakeAnthropic
from hubtests import npm_bin

from hub.testing import call_ok as call
from hub.testing import make_config, running_hub

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def api(tmp_path, monkeypatch):
    with FakeAnthropic() as fake:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", fake.url)
        monkeypatch.setenv("ANTHROPIC_API_KEY", fake.api_key)
        monkeypatch.setenv("HOME", str(tmp_path / "home"))  # the CLI keeps its sessions under ~/.claude
        monkeypatch.setenv("CLAUDECODE", "1")
        (tmp_path / "home").mkdir()
        yield fake


async def test_pool_run_and_fan_out_return_the_real_cli_output_and_cost(tmp_path, api):
    config = make_config(
        tmp_path,
        plugins={
            "pool": {
                "claude_command": npm_bin("claude"),
                "slots": 3,
                "model": "claude-sonnet-4-5",
                "system_prompt": "Answer briefly.",
            }
        },
    )
    async with running_hub(config, plugins={"pool": hub_pool.PoolPlugin}) as (hub, client):
        await hub.context.set("project", "hub")
        run = await call(client, "pool_run", prompt="hello from the pool")
        assert run["status"] == "completed", run
        assert run["output"] == "reply to: hello from the pool"
        assert run["spend_usd"] > 0 and run["tokens_used"]["input"] > 0 and run["tokens_used"]["output"] > 0
        assert (await hub.budget.summary())["spent_usd"] == pytest.approx(run["spend_usd"])
        first = api.messages[-1]
        system = json.dumps(first.get("system"))
        assert (
            "Answer briefly." in system and "project: hub" in system
        )  # --append-system-prompt reached the model

        fanned = await call(client, "pool_fan_out", prompts=["first", "second", "third"])
        assert [r["output"] for r in fanned["results"]] == [
            "reply to: first",
            "reply to: second",
            "reply to: third",
        ]
        assert all(r["spend_usd"] > 0 for r in fanned["results"])
        assert fanned["spend_usd"] == pytest.approx(sum(r["spend_usd"] for r in fanned["results"]))

        again = await call(client, "pool_run", prompt="and once more", session_id=run["session_id"])
        assert again["session_id"] == run["session_id"]
        history = json.dumps(api.messages[-1]["messages"])
        assert "hello from the pool" in history  # --resume carried the earlier conversation


async def test_a_worker_in_a_project_with_the_hub_in_mcp_json_starts_no_hub(tmp_path, api, monkeypatch):
    """The README's `.mcp.json` entry in the project: `claude` run there starts the hub (checked,
    so this test can fail), but a pool worker run there starts none (--strict-mcp-config)."""
    import os
    import stat
    import sys

    import anyio
    from hubtests import readme_mcp_entry

    project = tmp_path / "project"
    (project / ".claude").mkdir(parents=True)
    (project / ".mcp.json").write_text(json.dumps({"mcpServers": {"hub": readme_mcp_entry()}}))
    (project / ".claude" / "settings.json").write_text(json.dumps({"enableAllProjectMcpServers": True}))
    shims = tmp_path / "bin"
    shims.mkdir()
    marker = tmp_path / "hub-started"
    shim = shims / "hub"  # the `hub` that .mcp.json names: notes that it ran, then is the real one
    shim.write_text(f'#!/bin/sh\necho "$$" >> "{marker}"\nexec "{sys.executable}" -m hub "$@"\n')
    shim.chmod(shim.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{shims}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("HUB_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("HUB_SHARE", "0")  # the hub `claude` starts here runs in its own process
    env = {k: v for k, v in os.environ.items() if k != "CLAUDECODE"}

    direct = await anyio.run_process(
        [npm_bin("claude"), "-p", "hello", "--model", "claude-sonnet-4-5"], cwd=project, env=env, check=False
    )
    assert direct.returncode == 0, direct.stderr
    assert marker.exists(), "claude did not start the project's hub: this test could not fail"
    marker.unlink()

    config = make_config(
        tmp_path, plugins={"pool": {"claude_command": npm_bin("claude"), "cwd": str(project), "slots": 1}}
    )
    async with running_hub(config, plugins={"pool": hub_pool.PoolPlugin}) as (_, client):
        run = await call(client, "pool_run", prompt="hello from a worker")
        assert run["status"] == "completed", run
    assert not marker.exists()  # the worker started no hub
