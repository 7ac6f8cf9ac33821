"""`hub servers import | list | check | refresh` through the real `hub` command, on real servers:
an `.mcp.json` with three servers (server-filesystem and server-everything from npm, and the
tests' own) plus the hub's own entry, imported into a commented hub.toml (and started, to learn
what they list); then `batch_execute` and a proxied call on the imported servers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hubtests import DOWNSTREAM, StdioPeer, hub_env, npm_bin, wait_for


def hub(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hub", *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=120
    )


HUB_TOML = """\
# My hub: the comments stay.
plugins = ["batchit", "proxy"]  # only these two

[budget]
limit_usd = 5  # per day
"""


def test_import_list_check_then_use_the_imported_servers(tmp_path):
    root = tmp_path / "files"
    root.mkdir()
    (root / "name.txt").write_text("Ada")
    mcp_json = {
        "mcpServers": {
            "hub": {
                "type": "stdio",
                "command": "hub",
                "args": ["serve"],
                "env": {"HUB_CONFIG": "${HUB_CONFIG:-}"},
            },
            "fs": {"type": "stdio", "command": npm_bin("mcp-server-filesystem"), "args": [str(root)]},
            "everything": {"command": npm_bin("mcp-server-everything"), "args": [], "env": {"X": "1"}},
            "d": {
                "type": "stdio",
                "command": sys.executable,
                "args": [str(DOWNSTREAM)],
                "timeout": 20000,
                "alwaysAllow": ["echo"],
            },
        }
    }
    (tmp_path / ".mcp.json").write_text(json.dumps(mcp_json))
    (tmp_path / "hub.toml").write_text(HUB_TOML)
    env = hub_env(tmp_path)

    out = hub("servers", "import", env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "left out 'hub': it is the hub itself" in out.stdout
    assert "imported 'd' (dropped alwaysAllow: not a server setting the hub takes)" in out.stdout
    assert "3 servers written to hub.toml" in out.stdout
    assert "learned 'd': 9 tools, 2 resources, 1 prompts" in out.stdout  # started to learn its lists
    assert ".mcp.json now lists the hub (the old file is .mcp.json.bak)" in out.stdout
    assert json.loads((tmp_path / ".mcp.json").read_text()) == {
        "mcpServers": {"hub": mcp_json["mcpServers"]["hub"]}
    }
    assert json.loads((tmp_path / ".mcp.json.bak").read_text()) == mcp_json
    (tmp_path / ".mcp.json").write_text(json.dumps(mcp_json))  # as it was, to import it again
    text = (tmp_path / "hub.toml").read_text()
    assert text.startswith(HUB_TOML)  # comments and layout kept
    assert "[servers.fs]" in text and "[servers.everything]" in text and "[servers.hub]" not in text
    assert 'env = {X = "1"}' in text
    again = hub("servers", "import", env=env, cwd=tmp_path)
    assert "kept 'fs': already in hub.toml (use --replace to overwrite it)" in again.stdout
    assert (tmp_path / "hub.toml").read_text() == text

    shown = json.loads(hub("config", env=env, cwd=tmp_path).stdout)
    assert shown["servers"]["d"]["startup_timeout_s"] == 20

    listed = json.loads(hub("servers", "list", "--json", env=env, cwd=tmp_path).stdout)
    assert [(r["name"], r["running"]) for r in listed] == [("fs", False), ("everything", False), ("d", False)]
    assert {r["name"]: r["tools"] for r in listed}["d"] == 9 and all(r["tools"] for r in listed)

    checked = hub("servers", "check", env=env, cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "ok      fs: " in checked.stdout and "read_text_file" in checked.stdout
    assert "ok      d: " in checked.stdout and "echo" in checked.stdout
    assert "ok      everything: " in checked.stdout
    # What server-everything offers that the hub does not pass on is said, not dropped silently.
    assert "everything offers what the hub does not pass on yet: " in checked.stdout
    refreshed = hub("servers", "refresh", "d", env=env, cwd=tmp_path)
    assert refreshed.returncode == 0 and refreshed.stdout == "listed  d: 9 tools, 2 resources, 1 prompts\n"

    peer = StdioPeer([], env, tmp_path)
    try:
        peer.initialize()
        request = {
            "operations": [
                {
                    "id": "name",
                    "server": "fs",
                    "tool": "read_text_file",
                    "arguments": {"path": str(root / "name.txt")},
                },
                {"server": "d", "tool": "echo", "arguments": {"text": {"$text": "hello {{name}}"}}},
            ]
        }
        reply = peer.request("tools/call", {"name": "batch_execute", "arguments": request})["result"]
        assert [op["status"] for op in reply["structuredContent"]["operations"]] == ["ok", "ok"], reply
        # A server the proxy never saw is listed once it has been started and asked, in the
        # background at start: wait for its tools rather than race that.
        wait_for(
            lambda: "d__echo" in [t["name"] for t in peer.request("tools/list")["result"]["tools"]],
            what="the proxy to list server d's tools",
        )
        proxied = peer.request("tools/call", {"name": "d__echo", "arguments": {"text": "via proxy"}})[
            "result"
        ]
        assert "via proxy" in json.dumps(proxied)
        # While this hub runs them, `servers list` says so and counts the tools the proxy saw.
        rows = {
            r["name"]: r for r in json.loads(hub("servers", "list", "--json", env=env, cwd=tmp_path).stdout)
        }
        assert rows["fs"]["running"] is True and rows["d"]["running"] is True
        assert rows["fs"]["tools"] and rows["fs"]["tools"] > 5
    finally:
        peer.close()


def test_check_reports_a_failing_server_with_its_stderr(tmp_path):
    (tmp_path / "hub.toml").write_text(
        f'plugins = []\n[servers.bad]\ncommand = "{sys.executable}"\n'
        'args = ["-c", "import sys; sys.stderr.write(\'cannot open the database\\\\n\'); sys.exit(3)"]\n'
        f'[servers.d]\ncommand = "{sys.executable}"\nargs = ["{DOWNSTREAM}"]\n'
    )
    out = hub("servers", "check", env=hub_env(tmp_path), cwd=tmp_path)
    assert out.returncode == 1
    assert "FAILED  bad: " in out.stdout and "cannot open the database" in out.stdout
    assert "ok      d: " in out.stdout
    out = hub("servers", "check", "nope", env=hub_env(tmp_path), cwd=tmp_path)
    assert out.returncode == 2 and "no server 'nope' in the configuration (known: bad, d)" in out.stderr


def test_import_errors_name_the_file(tmp_path):
    env = hub_env(tmp_path)
    out = hub("servers", "import", env=env, cwd=tmp_path)
    assert out.returncode == 2 and ".mcp.json: no such file" in out.stderr
    (tmp_path / "x.json").write_text("{nope")
    out = hub("servers", "import", "x.json", env=env, cwd=tmp_path)
    assert out.returncode == 2 and "x.json: not valid JSON" in out.stderr
    # Claude Desktop's file and ~/.claude.json's project entry.
    (tmp_path / "desktop.json").write_text(
        json.dumps({"mcpServers": {"a": {"command": "npx", "args": ["-y", "pkg"]}}, "globalShortcut": ""})
    )
    (tmp_path / "claude.json").write_text(
        json.dumps(
            {
                "projects": {
                    str(tmp_path.resolve()): {"mcpServers": {"b": {"type": "http", "url": "https://h/mcp"}}}
                }
            }
        )
    )
    assert hub("servers", "import", "--no-start", "desktop.json", env=env, cwd=tmp_path).returncode == 0
    assert hub("servers", "import", "--no-start", "claude.json", env=env, cwd=tmp_path).returncode == 0
    text = (tmp_path / "hub.toml").read_text()
    assert "[servers.a]" in text and "[servers.b]" in text and 'type = "http"' in text
    # --user writes the user's file, which every project then sees.
    assert (
        hub("servers", "import", "--user", "--no-start", "desktop.json", env=env, cwd=tmp_path).returncode
        == 0
    )
    user = (tmp_path / "xdg-config" / "hub" / "hub.toml").read_text()
    assert "[servers.a]" in user and "[servers.b]" not in user


def test_import_adds_the_hub_by_its_full_path_or_prints_it_with_keep_mcp_json(tmp_path):
    entries = {
        "d": {"command": sys.executable, "args": [str(DOWNSTREAM)]},
        "bad": {"command": "x", "url": "http://127.0.0.1:9/mcp"},
    }
    (tmp_path / ".mcp.json").write_text(json.dumps({"mcpServers": entries}))
    env = hub_env(tmp_path)
    hub_command = str(Path(sys.executable).parent / "hub")
    kept = subprocess.run(
        [hub_command, "servers", "import", "--keep-mcp-json"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert kept.returncode == 0, kept.stderr
    assert json.loads((tmp_path / ".mcp.json").read_text()) == {"mcpServers": entries}  # unchanged
    assert "keep only this entry in your .mcp.json" in kept.stdout and hub_command in kept.stdout
    (tmp_path / "hub.toml").unlink()
    out = subprocess.run(
        [hub_command, "servers", "import"], env=env, cwd=tmp_path, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert "it still lists bad (not imported: see above)" in out.stdout
    rewritten = json.loads((tmp_path / ".mcp.json").read_text())["mcpServers"]
    assert rewritten == {
        "hub": {"type": "stdio", "command": hub_command, "args": ["serve"]},
        "bad": {"command": "x", "url": "http://127.0.0.1:9/mcp"},
    }


def test_check_prints_each_server_as_it_answers(tmp_path):
    slow = f"sleep 3; exec {sys.executable} {DOWNSTREAM}"
    (tmp_path / "hub.toml").write_text(
        f'[servers.slow]\ncommand = "sh"\nargs = ["-c", "{slow}"]\n'
        f'[servers.fast]\ncommand = "{sys.executable}"\nargs = ["{DOWNSTREAM}"]\n'
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "hub", "servers", "check"],
        env=hub_env(tmp_path),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.startswith("ok      fast: ") and proc.poll() is None  # before the slow one answered
        assert proc.stdout.readline().startswith("ok      slow: ")
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.timeout(10)
def test_a_second_import_never_overwrites_the_first_backup(tmp_path):
    """Importing twice (a server added to .mcp.json in between) keeps both old files, each with
    the original's mode; the same file imported again reuses its backup."""
    from hub.cli.servers import keep_only_the_hub

    mcp_json = tmp_path / ".mcp.json"
    first = {"mcpServers": {"a": {"command": "a"}}}
    mcp_json.write_text(json.dumps(first))
    mcp_json.chmod(0o644)
    hub_entry = {"type": "stdio", "command": "hub", "args": ["serve"]}
    keep_only_the_hub(mcp_json, {"a"}, hub_entry)
    second = {"mcpServers": {**json.loads(mcp_json.read_text())["mcpServers"], "b": {"command": "b"}}}
    mcp_json.write_text(json.dumps(second))
    said = keep_only_the_hub(mcp_json, {"b"}, hub_entry)
    assert said == [f"{mcp_json} now lists the hub (the old file is .mcp.json.bak.1)"]
    assert json.loads((tmp_path / ".mcp.json.bak").read_text()) == first
    assert json.loads((tmp_path / ".mcp.json.bak.1").read_text()) == second
    assert (tmp_path / ".mcp.json.bak.1").stat().st_mode & 0o777 == 0o644
    mcp_json.write_text(json.dumps(second))
    assert keep_only_the_hub(mcp_json, {"b"}, hub_entry)[0].endswith("(the old file is .mcp.json.bak.1)")
