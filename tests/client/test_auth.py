"""Remote servers' credentials, in-process, against a real OAuth-protected MCP server on loopback
(tests/peers/oauth_server.py: its own authorization server, 2-second access tokens, rotating
refresh tokens): sign-in through a "browser" that follows the printed URL, refresh under expiry,
revocation, step-up, a configured client where registration is off, SSE, headersHelper and a
bearer variable, the refresh lease, and the sign-in offered to a session by URL elicitation."""

from __future__ import annotations

import socket
import sqlite3
import sys
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import anyio
import mcp.types as types
import pytest
from loopback import LoopbackServer
from mcp.shared.auth import OAuthToken
from oauth_server import Remote, browse, running

from hub.client.auth import SignInFailed, sign_in
from hub.client.cache import ConnectionCache
from hub.client.errors import RemoteRefused, ServerUnavailable
from hub.client.tokens import TokenStore
from hub.config.settings import ServerConfig
from hub.services.sqlite_store import SQLiteStore as Store
from hub.testing import make_config, running_hub

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(90)]


@pytest.fixture(scope="module")
def remote() -> Iterator[Remote]:
    with running("--access-ttl", "2", "--static-token", "static-secret-token") as server:
        yield server


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = Store.in_state_dir(tmp_path / "state")
    yield store
    store.close()


async def show(url: str) -> None:
    """The user: opens the URL the hub hands out (in a thread: the listener runs in this loop)."""
    assert "Signed in to" in await anyio.to_thread.run_sync(browse, url)


async def signed_in(name: str, config: ServerConfig, store: Store, **options: Any) -> Any:
    return await sign_in(name, config, TokenStore(store), show_url=show, environ={}, **options)


async def whoami(cache: ConnectionCache, name: str = "remote") -> dict[str, Any]:
    result = await cache.call_tool(name, "whoami", {})
    assert not result.get("isError"), result
    return dict(result["structuredContent"])


async def test_sign_in_refresh_under_expiry_then_a_revoked_grant_needs_login(remote, store):
    config = ServerConfig(url=remote.url)
    done = await signed_in("remote", config, store)
    assert done.tools == ["whoami", "admin_echo"] and done.client_id in remote.stats()["clients"]
    assert done.row.tokens is not None and done.row.tokens.scope == "mcp"

    async with ConnectionCache({"remote": config}, store=store) as cache:
        seen = {(await whoami(cache))["token"]}
        with anyio.fail_after(30):  # tokens live 2 s: calls go on across two refreshes
            while len(seen) < 3:
                seen.add((await whoami(cache))["token"])
        assert remote.stats()["refresh_token_uses_max"] == 1

        remote.revoke_all()  # the grant ends at the server: the next refresh is refused
        with pytest.raises(RemoteRefused) as refused:
            await whoami(cache)
    said = str(refused.value)
    assert said.startswith("server 'remote': token refresh failed: HTTP 400 invalid_grant")
    assert "run `hub servers login remote`" in said and "HTTP 401 to POST" in said
    assert 'WWW-Authenticate: Bearer error="invalid_token"' in said and refused.value.needs_sign_in
    row = await TokenStore(store).server("remote", remote.url).load()
    assert row.tokens is None and (row.describe("remote") or "").startswith("token refresh failed")


async def test_a_tool_needing_more_scope_says_so_and_a_new_sign_in_adds_it(remote, store):
    config = ServerConfig(url=remote.url)
    await signed_in("remote", config, store)
    async with ConnectionCache({"remote": config}, store=store) as cache:
        with pytest.raises(RemoteRefused) as refused:
            await cache.call_tool("remote", "admin_echo", {"text": "hi"})
        assert "needs more scope (mcp admin): run `hub servers login remote`" in str(refused.value)
        assert "HTTP 403 to POST" in str(refused.value) and "insufficient_scope" in str(refused.value)
        assert (await whoami(cache))["scopes"] == ["mcp"]  # the other tools still work

        again = await signed_in("remote", config, store)  # asks for what the server wanted too
        assert again.row.tokens is not None and again.row.tokens.scope == "mcp admin"
        result = await cache.call_tool("remote", "admin_echo", {"text": "hi"})
        assert result["structuredContent"] == {"echo": "hi"}


async def test_a_server_without_registration_takes_a_configured_client(store):
    with running("--no-register", "--client", "hub-test:s3cret") as remote:
        bare = ServerConfig(url=remote.url)
        with pytest.raises(SignInFailed) as failed:
            await signed_in("remote", bare, store)
        assert "registers no clients" in str(failed.value)
        assert "set [servers.remote.oauth] client_id (and client_secret)" in str(failed.value)

        config = ServerConfig.model_validate(
            {"url": remote.url, "oauth": {"clientId": "hub-test", "client_secret": "${SECRET}"}}
        )
        done = await sign_in("remote", config, TokenStore(store), show_url=show, environ={"SECRET": "s3cret"})
        assert done.client_id == "hub-test" and done.tools == ["whoami", "admin_echo"]
        assert "register" not in remote.stats()["counts"]


async def test_the_sse_transport_signs_in_and_calls(store):
    with running("--transport", "sse") as remote:
        config = ServerConfig(type="sse", url=remote.url)
        assert (await signed_in("old", config, store)).tools == ["whoami", "admin_echo"]
        async with ConnectionCache({"old": config}, store=store) as cache:
            assert (await whoami(cache, "old"))["scopes"] == ["mcp"]


async def test_headers_helper_and_a_bearer_variable(remote, tmp_path):
    helper = tmp_path / "helper.py"
    helper.write_text(
        "import json, os, sys\n"
        "assert os.environ['CLAUDE_CODE_MCP_SERVER_URL'].endswith('/mcp')\n"
        "print(json.dumps({'Authorization': 'Bearer ' + sys.argv[1]}))\n"
    )
    servers = {
        "helped": ServerConfig.model_validate(
            {"url": remote.url, "headersHelper": f"{sys.executable} {helper} static-secret-token"}
        ),
        "wrong": ServerConfig(url=remote.url, headers_helper=f"{sys.executable} {helper} wrong-token"),
        "env": ServerConfig(url=remote.url, bearer_token_env_var="REMOTE_TOKEN"),
        "unset": ServerConfig(url=remote.url, bearer_token_env_var="NOT_SET"),
    }
    environ = {"REMOTE_TOKEN": "static-secret-token", "PATH": "/usr/bin:/bin"}
    async with ConnectionCache(servers, environ=environ) as cache:
        assert (await whoami(cache, "helped"))["client_id"] == "static"
        assert (await whoami(cache, "env"))["client_id"] == "static"
        with pytest.raises(ServerUnavailable) as refused:
            await whoami(cache, "wrong")
        said = str(refused.value)
        assert "server 'wrong' refused the hub's credentials (HTTP 401 to POST" in said
        assert "check [servers.wrong] headersHelper" in said and "wrong-token" not in said
        with pytest.raises(ServerUnavailable, match="bearer_token_env_var: the variable NOT_SET is not set"):
            await whoami(cache, "unset")


class Refusing(BaseHTTPRequestHandler):
    """An HTTP server that refuses every POST: /basic with a Basic challenge, others with 500."""

    def do_POST(self) -> None:
        basic = self.path == "/basic"
        self.send_response(401 if basic else 500)
        if basic:
            self.send_header("WWW-Authenticate", 'Basic realm="tools"')
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


async def test_a_refusal_says_the_status_and_what_to_do(store):
    with LoopbackServer(Refusing) as server:
        servers = {
            "basic": ServerConfig(url=f"{server.url}/basic"),
            "broken": ServerConfig(url=f"{server.url}/x"),
        }
        async with ConnectionCache(servers, store=store) as cache:
            with pytest.raises(ServerUnavailable) as basic:
                await whoami(cache, "basic")
            with pytest.raises(ServerUnavailable) as broken:
                await whoami(cache, "broken")
    assert str(basic.value) == (
        f"server 'basic' refused the hub (HTTP 401 to POST {server.url}/basic; WWW-Authenticate: Basic "
        'realm="tools") and does not offer OAuth sign-in: give its credentials in [servers.basic] '
        "headers, headersHelper or bearer_token_env_var"
    )
    assert str(broken.value) == f"server 'broken' answered HTTP 500 to POST {server.url}/x"


async def test_one_refresher_at_a_time_and_a_dead_ones_lease_is_taken_over(store):
    tokens = (await TokenStore(store).ready()).server("s", "https://example.org/mcp")
    other = TokenStore(store).server("s", "https://example.org/mcp")  # another process's view

    async def stored(expired: bool) -> None:
        await tokens.set_tokens(OAuthToken(access_token="a", expires_in=3600, refresh_token="r"))
        if expired:
            await store.execute("UPDATE oauth_tokens SET expires_at = 0")

    await stored(expired=True)
    assert (await tokens.lease_or_adopt("host:1:a", force=False))[0] == "leased"
    assert (await other.lease_or_adopt("host:2:b", force=False))[0] == "wait"  # another host: alive
    await stored(expired=False)  # the refresh, stored
    await tokens.release("host:1:a")
    assert (await other.lease_or_adopt("host:2:b", force=True))[0] == "adopt"  # newer than it saw

    await stored(expired=True)
    dead = f"{socket.gethostname()}:999999999:x"  # a process of this host that does not exist
    assert (await tokens.lease_or_adopt(dead, force=False))[0] == "leased"
    assert (await other.lease_or_adopt("host:2:b", force=False))[0] == "leased"


async def test_a_running_hub_sees_a_sign_in_and_offers_one_by_url_elicitation(remote, tmp_path):
    config = make_config(tmp_path, plugins={"enabled": ["proxy"]}, servers={"remote": {"url": remote.url}})
    asked: list[str] = []

    async def elicit(context: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
        assert isinstance(params, types.ElicitRequestURLParams)
        asked.append(params.message)
        await show(params.url)
        return types.ElicitResult(action="accept")

    async with running_hub(config, elicitation_callback=elicit) as (hub, client):
        proxy = hub.plugins["proxy"].plugin.proxy
        with anyio.fail_after(30):  # never signed in: the proxy cannot list it
            while not proxy.lists.problems.get("remote"):
                await anyio.sleep(0.05)
        assert "needs login: run `hub servers login remote`" in proxy.lists.problems["remote"]
        terminal = Store.in_state_dir(config.state_dir)  # `hub servers login` in another process
        try:
            await signed_in("remote", config.servers["remote"], terminal)
        finally:
            terminal.close()
        with anyio.fail_after(30):  # the running hub notices, and the proxy lists the server
            while "remote__whoami" not in hub.registry.tools:
                await anyio.sleep(0.05)
        first = await client.call_tool("remote__whoami", {})
        remote.revoke_all()  # signed out at the server: the next call needs a sign-in
        again = await client.call_tool("remote__whoami", {})
    assert not first.is_error and not again.is_error, again
    assert asked == ["The hub needs you to sign in to remote to use its tools; it waits until you are back."]
    assert first.structured_content and again.structured_content
    assert again.structured_content["token"] != first.structured_content["token"]


async def test_token_files_are_private(tmp_path):
    store = Store.in_state_dir(tmp_path / "state")
    await store.execute("CREATE TABLE t (x)")  # a write: the WAL files exist now
    try:
        modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "state").iterdir()}
        assert (tmp_path / "state").stat().st_mode & 0o777 == 0o700
        assert modes == {"hub.sqlite": 0o600, "hub.sqlite-wal": 0o600, "hub.sqlite-shm": 0o600}
        assert sqlite3.connect(tmp_path / "state" / "hub.sqlite").execute("SELECT 1").fetchone() == (1,)
    finally:
        store.close()
