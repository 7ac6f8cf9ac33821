"""The hub as real clients see it: the Claude Code CLI (from the README's `.mcp.json` entry, against a
fake Messages API that scripts the model's tool calls), the MCP Inspector CLI over stdio and
streamable HTTP, and the Python SDK in both protocol eras."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import hub_batch
import hub_batchit
import hub_pool
import hub_proxy
import pytest
from fake_anthropic import FakeAnthropic
from hubtests import DOWNSTREAM, TESTS, hub_env, npm_bin, readme_mcp_entry, stop_shared_hubs

from hub.services.sqlite_store import SQLiteStore as Store
from hub.testing import make_config, running_hub

FAKE_CLAUDE = TESTS / "peers" / "fake_claude.py"
VENV_BIN = str(Path(sys.executable).parent)  # where pip put `hub`


def write_hub_toml(tmp_path: Path) -> Path:
    path = tmp_path / "hub.toml"
    path.write_text(
        '[plugins]\nenabled = ["batchit", "pool", "proxy"]\n'
        f"[plugins.pool]\nclaude_command = '{sys.executable} {FAKE_CLAUDE}'\nslots = 1\n"
        f'[servers.d]\ncommand = "{sys.executable}"\nargs = ["{DOWNSTREAM}"]\n'
    )
    return path


def test_claude_code_drives_the_hub_from_the_readme_mcp_json(tmp_path):
    """The first scripted reply calls mcp__hub__context_set, the next ones batch_execute and
    pool_status; the CLI sends each tool's result back, and the hub really did the work."""
    entry = readme_mcp_entry()
    (tmp_path / "mcp.json").write_text(json.dumps({"mcpServers": {"hub": entry}}))  # exactly as shown
    (tmp_path / "home").mkdir()
    batch = {
        "server": "d",
        "operations": [
            {"id": "e", "tool": "echo", "arguments": {"text": "from claude"}},
            {"tool": "add", "arguments": {"a": 2, "b": 3}},
        ],
    }
    with FakeAnthropic() as api:
        api.script(
            [
                {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": "mcp__hub__context_set",
                    "input": {"key": "lang", "value": "python"},
                }
            ],
            [{"type": "tool_use", "id": "toolu_2", "name": "mcp__hub__batch_execute", "input": batch}],
            [{"type": "tool_use", "id": "toolu_3", "name": "mcp__hub__pool_status", "input": {}}],
            [{"type": "text", "text": "all three done"}],
        )
        env = hub_env(
            tmp_path,
            HOME=str(tmp_path / "home"),
            ANTHROPIC_BASE_URL=api.url,
            ANTHROPIC_API_KEY=api.api_key,
            CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1",
            DISABLE_TELEMETRY="1",
            HUB_CONFIG=str(write_hub_toml(tmp_path)),
            PATH=os.pathsep.join([VENV_BIN, os.environ["PATH"]]),
        )
        env.pop("CLAUDECODE", None)
        tools = "mcp__hub__context_set,mcp__hub__batch_execute,mcp__hub__pool_status"
        done = subprocess.run(
            [
                npm_bin("claude"),
                "-p",
                "use the hub",
                "--mcp-config",
                str(tmp_path / "mcp.json"),
                "--strict-mcp-config",
                "--allowedTools",
                tools,
                "--output-format",
                "json",
                "--model",
                "claude-sonnet-4-5",
            ],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=180,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        answer = json.loads(done.stdout)
        assert (
            answer["result"] == "all three done"
            and answer["num_turns"] == 4
            and not answer["permission_denials"]
        )
        results = {
            block["tool_use_id"]: block
            for m in api.messages
            for block in _blocks(m["messages"][-1])
            if block.get("type") == "tool_result"
        }
    assert set(results) == {"toolu_1", "toolu_2", "toolu_3"}
    assert not any(r.get("is_error") for r in results.values()), results
    # Claude Code hands the model a tool's structuredContent: check what the model saw.
    assert _json(results["toolu_1"]) == {"key": "lang", "value": "python"}
    ops = _json(results["toolu_2"])["operations"]
    assert [op["status"] for op in ops] == ["ok", "ok"]
    assert ops[0]["structuredContent"] == {"result": "from claude"} and ops[1]["structuredContent"] == {
        "result": 5
    }
    assert _text(results["toolu_2"]).count("from claude") == 1  # each result once in what the model read
    assert _json(results["toolu_3"])["slot_count"] == 1

    async def stored() -> dict[str, str]:
        store = Store.in_state_dir(tmp_path / "state")
        try:
            rows = await store.fetchall("SELECT key, value FROM context_scoped")
            return {r["key"]: r["value"] for r in rows}
        finally:
            store.close()

    assert anyio.run(stored) == {"lang": "python"}  # the hub really stored it


def _blocks(message: dict[str, Any]) -> list[dict[str, Any]]:
    content = message.get("content")
    return content if isinstance(content, list) else []


def _text(block: dict[str, Any]) -> str:
    content = block.get("content")
    if isinstance(content, str):
        return content
    return "\n".join(b.get("text", "") for b in content or [] if isinstance(b, dict))


def _json(block: dict[str, Any]) -> Any:
    text = _text(block).split("<system-reminder>")[0].strip()
    return json.loads(text)


def inspector(*args: str, env: dict[str, str], cwd: Path) -> Any:
    done = subprocess.run(
        [npm_bin("mcp-inspector"), "--cli", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout[-1000:] + done.stderr[-2000:]
    return json.loads(done.stdout)


def test_mcp_inspector_lists_and_calls_over_stdio(tmp_path):
    toml = write_hub_toml(tmp_path)
    env = hub_env(tmp_path, PATH=os.pathsep.join([VENV_BIN, os.environ["PATH"]]))
    # The inspector gives its child a stripped environment: pass the state directory itself, or the
    # hub would use (and migrate) the shared ~/.local/state/hub.
    hub = [
        "-e",
        f"HUB_STATE_DIR={env['HUB_STATE_DIR']}",
        "--",
        os.path.join(VENV_BIN, "hub"),
        "--config",
        str(toml),
    ]
    # The inspector runs `hub` as Claude Code does: each run a bridge to one shared hub process.
    tools = {t["name"] for t in inspector("--method", "tools/list", *hub, env=env, cwd=tmp_path)["tools"]}
    assert {"context_set", "batch_execute", "pool_run", "pool_status"} <= tools
    resources = {
        r["uri"] for r in inspector("--method", "resources/list", *hub, env=env, cwd=tmp_path)["resources"]
    }
    assert {"hub://status", "pool://status", "proxy://servers"} <= resources
    called = inspector(
        "--method",
        "tools/call",
        "--tool-name",
        "context_set",
        "--tool-arg",
        "key=k",
        "value=v",
        *hub,
        env=env,
        cwd=tmp_path,
    )
    assert called["structuredContent"] == {"key": "k", "value": "v"} and called["isError"] is False
    status = inspector("--method", "resources/read", "--uri", "hub://status", *hub, env=env, cwd=tmp_path)
    status_json = json.loads(status["contents"][0]["text"])
    assert status_json["context"] == {"entries": 1} and len(status_json["sessions"]) == 1
    assert len(stop_shared_hubs(env, tmp_path)) == 1  # four inspector runs, one shared hub process


def test_mcp_inspector_over_streamable_http(tmp_path):
    toml = write_hub_toml(tmp_path)
    env = hub_env(tmp_path, PATH=os.pathsep.join([VENV_BIN, os.environ["PATH"]]))
    server = subprocess.Popen(
        [sys.executable, "-m", "hub", "--config", str(toml), "serve", "--transport", "http", "--port", "0"],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    try:
        assert server.stderr is not None
        port = None
        for line in server.stderr:
            found = re.search(r"hub: listening on port (\d+)", line)
            if found:
                port = found.group(1)
                break
        assert port, "the hub did not say which port it took"
        url = f"http://127.0.0.1:{port}/mcp"
        tools = {t["name"] for t in inspector("--method", "tools/list", url, env=env, cwd=tmp_path)["tools"]}
        assert {"context_set", "batch_execute", "pool_run"} <= tools
        called = inspector(
            "--method",
            "tools/call",
            "--tool-name",
            "batch_execute",
            "--tool-arg",
            'operations=[{"tool": "echo", "arguments": {"text": "over http"}}]',
            "server=d",
            "--",
            url,
            env=env,
            cwd=tmp_path,
        )
        assert called["structuredContent"]["summary"]["ok"] == 1, called
    finally:
        server.terminate()
        server.wait(timeout=20)


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_both_protocol_eras_see_the_same_tools_and_list_changes(tmp_path, anyio_backend, monkeypatch):
    config = make_config(
        tmp_path,
        servers={"d": {"command": sys.executable, "args": [str(DOWNSTREAM)]}},
        plugins={
            "pool": {"claude_command": f"{sys.executable} {FAKE_CLAUDE}"},
            "batch": {"results_dir": str(tmp_path / "r")},
        },
    )
    plugins = {
        "batch": hub_batch.BatchPlugin,
        "batchit": hub_batchit.BatchItPlugin,
        "pool": hub_pool.PoolPlugin,
        "proxy": hub_proxy.ProxyPlugin,
    }
    seen: dict[str, set[str]] = {}
    for mode in ("legacy", "auto"):
        notes: list[str] = []

        async def on_message(message: Any, notes: list[str] = notes) -> None:  # the handshake era
            if type(message).__name__ == "ToolListChangedNotification":
                notes.append("tools")

        async with running_hub(config, plugins=plugins, mode=mode, message_handler=on_message) as (
            hub,
            client,
        ):
            with anyio.fail_after(30):
                while "d__echo" not in hub.registry.tools:
                    await anyio.sleep(0.02)
            seen[mode] = {
                t.name for t in (await client.list_tools()).tools if not t.name.startswith("d__grown")
            }
            before = len(notes)
            async with anyio.create_task_group() as tg:
                if mode == "auto":  # the 2026-07-28 era delivers changes on subscriptions/listen
                    listening = anyio.Event()
                    tg.start_soon(_listen, client, notes, listening)
                    await listening.wait()
                await client.call_tool("d__grow", {"name": f"grown_{mode}"})  # a downstream list change
                with anyio.fail_after(10):
                    while len(notes) == before:
                        await anyio.sleep(0.02)
                tg.cancel_scope.cancel()
            with anyio.fail_after(10):
                while f"d__grown_{mode}" not in {t.name for t in (await client.list_tools()).tools}:
                    await anyio.sleep(0.02)
    assert seen["legacy"] == seen["auto"]
    assert {"batch_execute", "send_to_batch", "pool_run", "context_set", "d__echo"} <= seen["legacy"]
    assert all(len("mcp__hub__" + name) <= 64 for name in seen["legacy"])


async def _listen(client: Any, notes: list[str], listening: anyio.Event) -> None:
    async with client.listen(tools_list_changed=True) as subscription:
        listening.set()
        async for _ in subscription:
            notes.append("tools")
