"""`hub servers login | logout` and what follows, end to end with real processes: a remote MCP
server behind OAuth (tests/peers/oauth_server.py, 2-second access tokens, rotating refresh
tokens that may be used once), the real `hub` command, three sessions through the shared
process (`hub serve`) and a second hub process (`--no-share`) on the same state directory."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from hubtests import StdioPeer, hub_env, stop_shared_hubs, wait_for
from oauth_server import browse, running

pytestmark = pytest.mark.timeout(180)


def hub(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hub", *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=60
    )


def login(env: dict[str, str], cwd: Path) -> tuple[int, str]:
    """`hub servers login remote --no-browser`, with the test as the user's browser: it follows
    the URL the command prints. The exit status and everything printed."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "hub", "servers", "login", "remote", "--no-browser"],
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    printed = []
    for line in proc.stdout:
        printed.append(line)
        if line.startswith("http://"):
            assert "Signed in to remote" in browse(line.strip())
    return proc.wait(timeout=30), "".join(printed)


class Session(StdioPeer):
    """`hub serve` on stdio (through the shared process unless `--no-share`), initialized."""

    def __init__(
        self, env: dict[str, str], cwd: Path, name: str, *args: str, capabilities: Any = None
    ) -> None:
        super().__init__(["serve", *args], env, cwd, log_name=f"{name}.stderr.log")
        self.request(
            "initialize",
            {
                "protocolVersion": "2025-11-25",
                "capabilities": capabilities or {},
                "clientInfo": {"name": name, "version": "0"},
            },
        )
        self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})

    def tools(self) -> list[str]:
        return [tool["name"] for tool in self.request("tools/list")["result"]["tools"]]

    def whoami(self) -> dict[str, Any]:
        return self.request("tools/call", {"name": "remote__whoami", "arguments": {}})["result"]


def secrets_in(state: Path) -> set[str]:
    """The tokens and the client secret the store holds now (to look for them where they must not be)."""
    conn = sqlite3.connect(state / "hub.sqlite")
    try:
        found = set()
        for (text,) in conn.execute("SELECT tokens FROM oauth_tokens WHERE tokens IS NOT NULL"):
            tokens = json.loads(text)
            found.update(v for k, v in tokens.items() if k in ("access_token", "refresh_token"))
        for (text,) in conn.execute("SELECT client_info FROM oauth_clients"):
            found.update(filter(None, [json.loads(text).get("client_secret")]))
        return found
    finally:
        conn.close()


def cmdlines() -> str:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                found.append((entry / "cmdline").read_bytes().decode(errors="replace"))
            except OSError:
                continue
    return "\n".join(found)


def call_until_tokens_rotate(sessions: list[Session], rotations: int) -> tuple[set[str], list[str]]:
    """Every session calls the remote tool over and over (one thread each) until the server has
    handed out `rotations` more access tokens; the tokens seen (as the server's digests) and
    every failure."""
    seen: set[str] = set()
    failures: list[str] = []
    stop = threading.Event()

    def calls(session: Session) -> None:
        while not stop.is_set():
            result = session.whoami()
            if result.get("isError"):
                failures.append(result["content"][0]["text"])
            else:
                seen.add(result["structuredContent"]["token"])
            stop.wait(0.1)

    threads = [threading.Thread(target=calls, args=(s,), daemon=True) for s in sessions]
    for thread in threads:
        thread.start()
    try:
        wait_for(lambda: len(seen) > rotations or failures, timeout=60, what="the access tokens to rotate")
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    return seen, failures


def test_one_sign_in_serves_every_session_and_hub_while_tokens_expire(tmp_path):
    with running("--access-ttl", "2", "--refresh-delay", "0.3") as remote:
        (tmp_path / "hub.toml").write_text(f'plugins = ["proxy"]\n[servers.remote]\nurl = "{remote.url}"\n')
        env = hub_env(tmp_path, HUB_SHARE="1", HUB_CONFIG=str(tmp_path / "hub.toml"))
        state = tmp_path / "state"
        checked = hub("servers", "check", env=env, cwd=tmp_path)
        assert checked.returncode == 1
        assert (
            "FAILED  remote: server 'remote': needs login: run `hub servers login remote` (HTTP 401"
            in checked.stdout
        )
        assert 'WWW-Authenticate: Bearer error="invalid_token"' in checked.stdout

        status, printed = login(env, tmp_path)
        assert status == 0, printed
        assert "Open this URL in a browser to sign in to remote" in printed
        assert "signed in to remote: signed in (expires in " in printed and "; 2 tools" in printed
        secrets = secrets_in(state)
        assert len(secrets) == 3  # access and refresh token, and the registered client's secret

        shared = [Session(env, tmp_path, f"s{i}") for i in range(3)]
        solo = Session({**env, "HUB_SHARE": "0"}, tmp_path, "solo", "--no-share")
        sessions = [*shared, solo]
        try:
            for session in sessions:
                wait_for(lambda s=session: "remote__whoami" in s.tools(), what="the proxy to list remote")
            seen, failures = call_until_tokens_rotate(sessions, rotations=2)
            assert failures == [] and len(seen) >= 3
            stats = remote.stats()
            assert stats["refresh_token_uses_max"] == 1, stats  # never a refresh token used twice
            assert stats["counts"]["token"] == 1 and "refresh_reused" not in stats["counts"]  # one sign-in
            secrets |= secrets_in(state)

            said = {
                "config": hub("config", env=env, cwd=tmp_path).stdout,
                "status": hub("status", "--json", env=env, cwd=tmp_path).stdout,
                "list": hub("servers", "list", env=env, cwd=tmp_path).stdout,
                "check": hub("servers", "check", env=env, cwd=tmp_path).stdout,
                "hub://status": json.dumps(shared[0].request("resources/read", {"uri": "hub://status"})),
                "processes": cmdlines(),
            }
            assert "tools: 2, signed in" in said["list"] and "ok      remote: 2 tools" in said["check"]

            assert (
                "signed out (the server answered the revocation with HTTP 200)"
                in hub("servers", "logout", "remote", env=env, cwd=tmp_path).stdout
            )
            refused = shared[0].whoami()
            assert refused.get("isError"), refused
            text = refused["content"][0]["text"]
            assert "needs login: run `hub servers login remote`" in text and "(HTTP 401 to POST" in text
            signed_in_again = sign_in_from_a_session(env, tmp_path)
            secrets |= secrets_in(state)
        finally:
            for session in sessions:
                session.close()
            stop_shared_hubs(env, tmp_path)
        assert signed_in_again["structuredContent"]["client_id"]

        logs = [p.read_text() for p in [*tmp_path.glob("*.log"), *(state / "logs").glob("*")] if p.is_file()]
        for where, text in [*said.items(), ("login", printed), *(("a log", log) for log in logs)]:
            leaked = [secret[:6] for secret in secrets if secret in text]
            assert leaked == [], f"a token or secret in {where}"
        assert state.stat().st_mode & 0o777 == 0o700
        assert {p.stat().st_mode & 0o777 for p in state.glob("hub.sqlite*")} == {0o600}


def sign_in_from_a_session(env: dict[str, str], cwd: Path) -> dict[str, Any]:
    """A client that declares URL elicitation, over stdio: its call asks it to open the sign-in
    URL (from the transport's shortcut too), and goes through once the "browser" came back."""
    session = Session(
        {**env, "HUB_SHARE": "0"}, cwd, "asked", "--no-share", capabilities={"elicitation": {"url": {}}}
    )
    try:
        wait_for(lambda: "remote__whoami" in session.tools(), what="the tools listed from the store")
        call_id = session.request("tools/call", {"name": "remote__whoami", "arguments": {}}, wait=False)
        assert session.proc.stdout is not None
        while True:
            message = json.loads(session.proc.stdout.readline())
            if message.get("method") == "elicitation/create":
                assert message["params"]["mode"] == "url"
                threading.Thread(target=browse, args=(message["params"]["url"],), daemon=True).start()
                session.send({"jsonrpc": "2.0", "id": message["id"], "result": {"action": "accept"}})
            elif message.get("id") == call_id:
                assert not message["result"].get("isError"), message
                return dict(message["result"])
    finally:
        session.close()


def test_import_keeps_claude_codes_sign_in_keys(tmp_path):
    from hub.cli.servers import import_servers
    from hub.config.load import load_config

    entries = {
        "linear": {
            "type": "http",
            "url": "https://mcp.linear.app/mcp",
            "oauth": {"clientId": "abc", "callbackPort": 8123},
        },
        "internal": {"type": "http", "url": "https://tools.example/mcp", "headersHelper": "get-token --json"},
    }
    (tmp_path / ".mcp.json").write_text(json.dumps({"mcpServers": entries}))
    lines = import_servers(tmp_path / ".mcp.json", tmp_path / "hub.toml")
    assert lines == [
        "imported 'linear'",
        "imported 'internal'",
        "2 servers written to " + str(tmp_path / "hub.toml"),
    ]
    servers = load_config(tmp_path / "hub.toml", environ={}).servers
    assert servers["linear"].oauth is not None and servers["linear"].oauth.callback_port == 8123
    assert (
        servers["internal"].headers_helper == "get-token --json"
        and not servers["internal"].signs_in_with_oauth
    )
