"""Configuration through the real `hub` command: one state directory whatever reads it (`hub config`,
`hub statusline`, the fast-start cache), HUB_HTTP_TOKEN against --set, and `hub config` naming
which file, variable or option set each key."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from hubtests import hub_env


def hub(
    *args: str, env: dict[str, str], cwd: Path, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hub", *args],
        env=env,
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=90,
    )


def status_db(state_dir: Path, text: str) -> None:
    import anyio

    from hub.services import statusline
    from hub.services.sqlite_store import SQLiteStore as Store

    state_dir.mkdir(parents=True, exist_ok=True)

    async def write() -> None:
        store = Store(state_dir / "hub.sqlite")
        try:
            await statusline.setup(store)
            await statusline.set_line(store, "x", text)
        finally:
            store.close()

    anyio.run(write)


def test_one_state_dir_for_config_statusline_and_fast_start(tmp_path):
    env_dir, set_dir, file_dir = tmp_path / "from-env", tmp_path / "from-set", tmp_path / "from-file"
    (tmp_path / "hub.toml").write_text(f'state_dir = "{file_dir}"\nplugins = []\n')
    for where in (env_dir, set_dir, file_dir):
        status_db(where, f"line in {where.name}")
    env = hub_env(tmp_path, HUB_STATE_DIR=str(env_dir))
    args = ["--set", f'state_dir="{set_dir}"']

    shown = json.loads(hub(*args, "config", env=env, cwd=tmp_path).stdout)
    assert shown["state_dir"] == str(set_dir) and shown["set_by"]["state_dir"] == "--set"
    assert hub(*args, "statusline", env=env, cwd=tmp_path).stdout.strip() == "line in from-set"
    # The fast start keeps its answers in the same directory (stdin a pipe, one list request).
    request = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/list",
        "params": {
            "_meta": {
                "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientInfo": {"name": "t", "version": "1"},
                "io.modelcontextprotocol/clientCapabilities": {},
            }
        },
    }
    served = hub(*args, env=env, cwd=tmp_path, stdin=json.dumps(request) + "\n")
    assert '"tools"' in served.stdout, served.stderr
    assert (set_dir / "fastfront.json").exists()
    assert not (env_dir / "fastfront.json").exists() and not (file_dir / "fastfront.json").exists()

    # Without --set, the variable wins over the file, for every reader alike.
    assert json.loads(hub("config", env=env, cwd=tmp_path).stdout)["state_dir"] == str(env_dir)
    assert hub("statusline", env=env, cwd=tmp_path).stdout.strip() == "line in from-env"
    # And --state-dir wins over everything.
    flag = ["--state-dir", str(file_dir)]
    assert json.loads(hub(*flag, *args, "config", env=env, cwd=tmp_path).stdout)["state_dir"] == str(file_dir)
    assert hub(*flag, *args, "statusline", env=env, cwd=tmp_path).stdout.strip() == "line in from-file"


def test_http_token_variable_then_set(tmp_path):
    env = hub_env(tmp_path, HUB_HTTP_TOKEN="from-env", HUB_PLUGINS="")
    shown = json.loads(hub("config", env=env, cwd=tmp_path).stdout)
    assert shown["http"]["token"] == "***" and shown["set_by"]["http.token"] == "HUB_HTTP_TOKEN"
    shown = json.loads(hub("--set", 'http.token="x"', "config", env=env, cwd=tmp_path).stdout)
    assert shown["set_by"]["http.token"] == "--set"
    # A public host with the variable's token is allowed; --set of an empty token wins and is refused.
    out = hub(
        "--set", 'http.host="0.0.0.0"', "--set", 'http.token=""', "serve", "-t", "http", env=env, cwd=tmp_path
    )
    assert out.returncode != 0 and "needs a bearer token" in out.stderr


def test_config_says_which_file_set_each_key(tmp_path):
    user = tmp_path / "xdg-config" / "hub" / "hub.toml"
    user.parent.mkdir(parents=True)
    user.write_text("plugins = []\n[budget]\nlimit_usd = 5\nperiod = 'day'\n")
    (tmp_path / "hub.toml").write_text("[budget]\nlimit_usd = 7\n")
    shown = json.loads(hub("config", env=hub_env(tmp_path), cwd=tmp_path).stdout)
    assert shown["budget"] == {"limit_usd": 7.0, "period": "day"}
    assert shown["set_by"]["budget.limit_usd"] == "hub.toml"
    assert shown["set_by"]["budget.period"] == str(user)
    assert shown["files"] == {"user": str(user), "project": "hub.toml"}


def test_hub_config_error_lines_name_file_variable_and_option(tmp_path):
    user = tmp_path / "xdg-config" / "hub" / "hub.toml"
    user.parent.mkdir(parents=True)
    user.write_text("[servers.fs]\nargs = ['x']\n")
    (tmp_path / "hub.toml").write_text("log_level = 'loud'\n")
    env = hub_env(tmp_path, HUB_HTTP__PORT="-5", HUB_BUDGET_USD="lots")
    out = hub("--set", "budget.period=fortnight", "serve", "--port", "70000", env=env, cwd=tmp_path)
    assert out.returncode == 2
    lines = [line.strip() for line in out.stderr.splitlines()]
    assert f"{user}: servers.fs: set exactly one of 'command' (stdio) or 'url' (streamable HTTP)" in lines
    assert any(line.startswith("hub.toml: log_level: Input should be") for line in lines)
    assert any(
        line.startswith("HUB_BUDGET_USD: budget.limit_usd: Input should be a valid number") for line in lines
    )
    assert any(line.startswith("--set: budget.period: Input should be 'total', 'day'") for line in lines)
    assert any(
        line.startswith("--port: http.port: Input should be less than or equal to 65535") for line in lines
    )
