"""How the hub authenticates to remote (url) servers, and says what went wrong when it could not.

A remote server's credentials come from one of (`[servers.NAME]`):

- `headers` (``${VAR}`` expanded), sent as they are;
- `bearer_token_env_var`: ``Authorization: Bearer <the variable's value>``;
- `headersHelper` (Claude Code's key, or `headers_helper`): a shell command printing headers as a
  JSON object (or `Name: value` lines), run when first needed, again after a 401 or 403 and after
  `HEADERS_HELPER_TTL_S` (`HeadersHelperAuth`);
- otherwise OAuth 2.1 (`hub.client.sdk_oauth.HubOAuthProvider`): tokens from `hub servers
  login NAME` (`sign_in`), kept in the store (`hub.client.tokens`) and refreshed by one process at
  a time for every hub on the state directory.

`ServerAuth` gives the connection cache one `RemoteAuth` per server: the `httpx2.Auth` of its
transport, which also remembers the last refusal (HTTP status and `WWW-Authenticate`), so a
failure says the status, the challenge and the fix (`explain`) where the SDK's transport says
only "Server returned an error response". Tokens never reach a log, an error or a process's
arguments.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import webbrowser
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlparse

import anyio
import anyio.abc
import httpx2
import structlog
from anyio.abc import SocketAttribute
from mcp.client.auth import AuthorizationCodeResult, OAuthFlowError, OAuthRegistrationError, OAuthTokenError
from mcp.shared.auth import OAuthClientInformationFull
from mcp.shared.exceptions import MCPError
from mcp.types import INTERNAL_ERROR

from hub.client.sdk import create_http_client
from hub.client.sdk_oauth import HubOAuthProvider
from hub.client.tokens import ServerTokens, TokenRow, TokenStore
from hub.config.expand import expand_vars
from hub.config.settings import ServerConfig
from hub.errors import ConfigError, HubError

__all__ = [
    "HeadersHelperAuth",
    "LoopbackCallback",
    "RemoteAuth",
    "ServerAuth",
    "SignInFailed",
    "SignedIn",
    "remote_streams",
    "sign_in",
    "sign_out",
]

log = structlog.get_logger("hub.connections")

HEADERS_HELPER_TTL_S = 300.0
HEADERS_HELPER_TIMEOUT_S = 10.0
CHALLENGE_MAX = 400  # characters of a WWW-Authenticate header quoted in an error
SIGN_IN_POLL_S = 2.0  # how often a running hub looks for a sign-in made elsewhere


class SignInFailed(HubError):
    """`hub servers login` (or a sign-in in a session) did not end with tokens; says why and the fix."""


# -- the transports ------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def remote_streams(
    transport: str, url: str, headers: dict[str, str], auth: httpx2.Auth | None
) -> AsyncIterator[tuple[Any, Any]]:
    """The read and write streams of a remote server: streamable HTTP, or the older HTTP+SSE
    (`type = "sse"`), with `auth` on every request."""
    if transport == "sse":
        from mcp.client.sse import sse_client

        async with sse_client(url, headers=headers, auth=auth) as (read, write):
            yield read, write
        return
    from mcp.client.streamable_http import streamable_http_client

    async with create_http_client(headers=headers, auth=auth) as http:
        async with streamable_http_client(url, http_client=http) as (read, write):
            yield read, write


def remote_headers(
    name: str, config: ServerConfig, expand: Callable[[str, str], str], environ: Mapping[str, str]
) -> dict[str, str]:
    """The static headers of a remote server: `headers` expanded (`expand(text, where)`), and
    the bearer token of `bearer_token_env_var`, read from `environ`."""
    where = f"servers.{name}"
    headers = {key: expand(value, f"{where}.headers.{key}") for key, value in config.headers.items()}
    variable = config.bearer_token_env_var
    if variable:
        token = environ.get(variable)
        if not token:
            raise ConfigError(
                f"{where}.bearer_token_env_var: the variable {variable} is not set "
                "(set it to the server's token in the hub's environment)"
            )
        headers["Authorization"] = f"Bearer {token}"
    return headers


# -- headersHelper -------------------------------------------------------------------------------


def parse_helper_output(text: str) -> dict[str, str]:
    """Headers from a helper's output: a JSON object of strings, or `Name: value` lines."""
    text = text.strip()
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ValueError(f"it printed JSON that does not parse ({exc.args[0]})") from None
        if not all(isinstance(key, str) and isinstance(value, str) for key, value in data.items()):
            raise ValueError("it printed JSON that is not an object of strings")
        return dict(data)
    headers: dict[str, str] = {}
    for line in text.splitlines():
        name, colon, value = line.partition(":")
        if not line.strip():
            continue
        if not colon or not name.strip() or " " in name.strip():
            raise ValueError("it printed a line that is neither JSON nor `Name: value`")
        headers[name.strip()] = value.strip()
    return headers


class HeadersHelperAuth(httpx2.Auth):
    """Headers from `headersHelper` (a shell command, as Claude Code runs it, with
    CLAUDE_CODE_MCP_SERVER_NAME and CLAUDE_CODE_MCP_SERVER_URL set). Concurrent requests share
    one run; the values are never logged or put in an error."""

    def __init__(self, server: str, url: str, command: str, environ: Mapping[str, str]) -> None:
        self.server, self.command = server, command
        self.env = {**environ, "CLAUDE_CODE_MCP_SERVER_NAME": server, "CLAUDE_CODE_MCP_SERVER_URL": url}
        self._headers: dict[str, str] | None = None
        self._fetched_at = 0.0
        self._lock = anyio.Lock()

    async def headers(self, *, again: bool = False) -> dict[str, str]:
        async with self._lock:
            stale = time.monotonic() - self._fetched_at > HEADERS_HELPER_TTL_S
            if again or stale or self._headers is None:
                self._headers = await self._run()
                self._fetched_at = time.monotonic()
            return self._headers

    async def _run(self) -> dict[str, str]:
        what = f"servers.{self.server}.headersHelper"
        try:
            with anyio.fail_after(HEADERS_HELPER_TIMEOUT_S):
                # stdin closed: a hub serving over stdio must not lend its protocol input to a child
                done = await anyio.run_process(
                    self.command, check=False, env=self.env, stdin=subprocess.DEVNULL
                )
        except TimeoutError:
            raise ConfigError(f"{what} did not finish within {HEADERS_HELPER_TIMEOUT_S:g} s") from None
        except OSError as exc:
            raise ConfigError(f"{what} could not run: {exc.strerror}") from None
        if done.returncode != 0:
            last = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["(no output)"]
            raise ConfigError(f"{what} exited with status {done.returncode}: {last[0][:200]}")
        try:
            return parse_helper_output(done.stdout.decode(errors="replace"))
        except ValueError as exc:
            raise ConfigError(f"{what}: {exc}") from None

    async def async_auth_flow(
        self, request: httpx2.Request
    ) -> AsyncGenerator[httpx2.Request, httpx2.Response]:
        request.headers.update(await self.headers())
        response = yield request
        if response.status_code in (401, 403):  # credentials rotated: ask again once
            fresh = await self.headers(again=True)
            if any(request.headers.get(key) != value for key, value in fresh.items()):
                await response.aread()
                request.headers.update(fresh)
                yield request


# -- one server's auth, and what its failures mean -----------------------------------------------


class RemoteAuth(httpx2.Auth):
    """A remote server's `httpx2.Auth`: OAuth, the headers helper, or nothing more than the
    static headers; it keeps the last refusal of the server for `explain`."""

    def __init__(self, name: str, config: ServerConfig, inner: httpx2.Auth | None) -> None:
        self.name, self.config, self.inner = name, config, inner
        self.refusal: tuple[int, str, str] | None = None  # status, method and URL, WWW-Authenticate

    @property
    def oauth(self) -> HubOAuthProvider | None:
        return self.inner if isinstance(self.inner, HubOAuthProvider) else None

    @property
    def needs_sign_in(self) -> bool:
        return self.oauth is not None and self.oauth.needs_sign_in

    async def async_auth_flow(
        self, request: httpx2.Request
    ) -> AsyncGenerator[httpx2.Request, httpx2.Response]:
        if self.inner is None:
            response = yield request
            self._watch(request, response)
            return
        flow = self.inner.async_auth_flow(request)
        try:
            outgoing = await flow.__anext__()
            while True:
                response = yield outgoing
                if outgoing is request:
                    self._watch(request, response)
                outgoing = await flow.asend(response)
        except StopAsyncIteration:
            return
        finally:
            await flow.aclose()

    def _watch(self, request: httpx2.Request, response: httpx2.Response) -> None:
        if response.status_code < 400:
            self.refusal = None
            return
        where = f"{request.method} {request.url.copy_with(query=None)}"
        challenge = response.headers.get("WWW-Authenticate", "")
        self.refusal = (response.status_code, where, challenge[:CHALLENGE_MAX])

    def explain(self) -> str | None:
        """The last refusal as a sentence naming the server, the status, the challenge and the
        fix; None when the server refused nothing."""
        if self.refusal is None:
            return None
        status, where, challenge = self.refusal
        answered = f"HTTP {status} to {where}" + (f"; WWW-Authenticate: {challenge}" if challenge else "")
        oauth = self.oauth
        if oauth is not None and (oauth.needs_sign_in or status == 403):
            return f"server {self.name!r}: {oauth.problem or 'refused'} ({answered})"
        if oauth is not None and status == 401:  # no Bearer challenge: it does not sign in with OAuth
            return (
                f"server {self.name!r} refused the hub ({answered}) and does not offer OAuth sign-in: "
                f"give its credentials in [servers.{self.name}] headers, headersHelper or bearer_token_env_var"
            )
        if status in (401, 403):
            source = (
                "headersHelper"
                if self.config.headers_helper
                else "bearer_token_env_var"
                if self.config.bearer_token_env_var
                else "headers"
            )
            return f"server {self.name!r} refused the hub's credentials ({answered}): check [servers.{self.name}] {source}"
        return f"server {self.name!r} answered {answered}"


def _transport_refusal(exc: BaseException) -> bool:
    """Whether `exc` is how the SDK's transports report an HTTP error answer: the streamable
    transport's stand-in error, or the SSE transport's `HTTPStatusError`."""
    if isinstance(exc, httpx2.HTTPStatusError):
        return True
    return (
        isinstance(exc, MCPError)
        and exc.error.code == INTERNAL_ERROR
        and "error response" in exc.error.message
    )


class ServerAuth:
    """Every remote server's `RemoteAuth`, for one connection cache. `database` is the hub's
    store (tokens are kept there); without one, OAuth tokens are not available (no sign-in)."""

    def __init__(self, database: Any, environ: Mapping[str, str]) -> None:
        self.tokens = TokenStore(database) if database is not None else None
        self.environ = environ
        self._auths: dict[str, RemoteAuth] = {}
        self._announced: dict[str, int] = {}  # the token generation last announced per server
        self._pending: dict[str, _PendingSignIn] = {}

    async def for_server(
        self, name: str, config: ServerConfig, url: str, *, literal: bool = False
    ) -> RemoteAuth:
        """The auth of `name` (kept across reconnects, so a refreshed token is not lost). A
        `literal` server (one a request defined, `ConnectionCache.add_server(expand=False)`) gets
        no credentials of the hub's: no helper command, no tokens."""
        auth = self._auths.get(name)
        if auth is not None and auth.config == config:
            return auth
        inner: httpx2.Auth | None = None
        if literal and (config.headers_helper or config.bearer_token_env_var):
            raise ConfigError(
                f"server {name!r}: a server defined by a request cannot use the hub's credentials"
            )
        if config.headers_helper:
            inner = HeadersHelperAuth(name, url, config.headers_helper, self.environ)
        elif config.signs_in_with_oauth and self.tokens is not None and not literal:
            await self.tokens.ready()
            inner = HubOAuthProvider(name, url, self.tokens.server(name, url))
        auth = self._auths[name] = RemoteAuth(name, config, inner)
        return auth

    def needs_sign_in(self, name: str) -> bool:
        auth = self._auths.get(name)
        return auth is not None and auth.needs_sign_in

    def explain(self, name: str, exc: BaseException) -> str | None:
        """What a failure of a request to `name` means, if it was the server refusing it."""
        auth = self._auths.get(name)
        if auth is None or not _transport_refusal(exc):
            return None
        return auth.explain()

    async def watch(self, signed_in: Callable[[str], Awaitable[None]]) -> None:
        """Forever: call `signed_in(name)` when a server waiting for a sign-in got tokens from
        elsewhere (`hub servers login` in a terminal, another hub), so its tools are listed."""
        while True:
            await anyio.sleep(SIGN_IN_POLL_S)
            for name, auth in list(self._auths.items()):
                provider = auth.oauth
                if provider is None or not provider.needs_sign_in:
                    continue
                try:
                    row = await provider.tokens.load()
                except Exception as exc:  # a store busy or gone: the next round looks again
                    log.warning("could not read a server's sign-in", server=name, error=str(exc))
                    continue
                if row.tokens is not None and row.generation != self._announced.get(
                    name, provider.tokens.generation
                ):
                    self._announced[name] = row.generation
                    await signed_in(name)

    async def sign_in_for_session(
        self,
        name: str,
        config: ServerConfig,
        elicit_url: Callable[[str, str], Awaitable[str | None]],
        spawn: Callable[..., Any],
    ) -> bool:
        """Sign in to `name` for a session whose call it refused: its client is asked to open
        the authorization URL (`elicit_url(message, url)`, URL-mode elicitation); the sign-in
        runs in the background (`spawn`), shared by concurrent calls. True once signed in; False
        when the client cannot or will not; `SignInFailed` when the sign-in failed."""
        if self.tokens is None:
            return False
        pending = self._pending.get(name)
        if pending is None or pending.finished.is_set():
            pending = self._pending[name] = _PendingSignIn(name)
            spawn(pending.run, config, self.tokens, self.environ)
        await pending.url_known.wait()
        if pending.url is None:
            raise SignInFailed(pending.error or f"sign-in to {name!r} failed")
        message = f"The hub needs you to sign in to {name} to use its tools; it waits until you are back."
        if await elicit_url(message, pending.url) != "accept":
            pending.cancel()
            return False
        await pending.finished.wait()
        if pending.error is not None:
            raise SignInFailed(pending.error)
        return True


class _PendingSignIn:
    """A sign-in started for a session: the authorization URL once known, then the outcome."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.url: str | None = None
        self.error: str | None = None
        self.url_known = anyio.Event()
        self.finished = anyio.Event()
        self._scope = anyio.CancelScope()

    async def run(self, config: ServerConfig, store: TokenStore, environ: Mapping[str, str]) -> None:
        try:
            with self._scope:
                await sign_in(self.name, config, store, show_url=self._publish, environ=environ)
        except Exception as exc:
            self.error = str(exc) if isinstance(exc, HubError) else f"sign-in to {self.name!r} failed: {exc}"
        finally:
            if self._scope.cancel_called:
                self.error = self.error or f"sign-in to {self.name!r} was declined"
            self.url_known.set()
            self.finished.set()

    async def _publish(self, url: str) -> None:
        self.url = url
        self.url_known.set()

    def cancel(self) -> None:
        self._scope.cancel()


# -- sign-in -------------------------------------------------------------------------------------


class LoopbackCallback:
    """The sign-in's redirect target: an HTTP listener on 127.0.0.1 (`port` 0: any free one)
    whose first GET of `/callback` with the expected `state` ends the wait (`wait_for_code`)."""

    PATH = "/callback"

    def __init__(self, server: str, port: int = 0, timeout: float = 300.0) -> None:
        self.server, self.port, self.timeout = server, port, timeout
        self._expected_state: str | None = None
        self._answer: dict[str, str] | None = None
        self._arrived = anyio.Event()

    @property
    def redirect_uri(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.PATH}"

    @contextlib.asynccontextmanager
    async def listening(self, *, any_port_if_taken: bool) -> AsyncIterator[LoopbackCallback]:
        """Listen until the block ends; a taken port is replaced by any free one if allowed."""
        try:
            listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=self.port)
        except OSError:
            if not any_port_if_taken:
                raise SignInFailed(
                    f"sign-in to {self.server!r}: cannot listen on 127.0.0.1:{self.port} "
                    f"([servers.{self.server}.oauth] callback_port): the port is in use"
                ) from None
            listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
        self.port = listener.extra(SocketAttribute.local_port)
        async with listener, anyio.create_task_group() as tg:
            tg.start_soon(listener.serve, self._serve)
            try:
                yield self
            finally:
                tg.cancel_scope.cancel()

    def expect(self, authorization_url: str) -> None:
        """The sign-in URL handed out: only a redirect carrying its `state` is the answer."""
        self._expected_state = parse_qs(urlparse(authorization_url).query).get("state", [None])[0]

    async def wait_for_code(self) -> AuthorizationCodeResult:
        try:
            with anyio.fail_after(self.timeout):
                await self._arrived.wait()
        except TimeoutError:
            raise SignInFailed(
                f"sign-in to {self.server!r}: no answer from the browser within {self.timeout:g} s "
                f"(raise [servers.{self.server}.oauth] callback_timeout_s to wait longer)"
            ) from None
        answer = self._answer or {}
        if "error" in answer:
            detail = answer.get("error_description", "")
            raise SignInFailed(
                f"sign-in to {self.server!r} refused by the authorization server: {answer['error']}"
                + (f" ({detail[:200]})" if detail else "")
            )
        return AuthorizationCodeResult(
            code=answer.get("code", ""), state=answer.get("state"), iss=answer.get("iss")
        )

    async def _serve(self, stream: anyio.abc.SocketStream) -> None:
        async with stream:
            data = b""
            with anyio.move_on_after(10):
                while b"\r\n\r\n" not in data and len(data) < 16384:
                    chunk = await stream.receive(4096)
                    if not chunk:
                        break
                    data += chunk
            method, _, rest = data.split(b"\r\n", 1)[0].decode("latin-1").partition(" ")
            target = urlparse(rest.partition(" ")[0])
            answer = {key: values[0] for key, values in parse_qs(target.query).items()}
            ours = (
                method == "GET"
                and target.path == self.PATH
                and self._expected_state is not None
                and answer.get("state") == self._expected_state
            )
            if ours and not self._arrived.is_set():
                self._answer = answer
                self._arrived.set()
                status = "400 Bad Request" if "error" in answer else "200 OK"
                body = (
                    f"Sign-in to {self.server} failed: {answer['error']}. You can close this tab."
                    if "error" in answer
                    else f"Signed in to {self.server}. You can close this tab."
                )
            else:
                status, body = "404 Not Found", "This is not the sign-in this listener waits for."
            payload = body.encode()
            head = (
                f"HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\n"
                f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n"
            )
            with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
                await stream.send(head.encode() + payload)


def browser_available() -> bool:
    """Whether a graphical browser can be opened here (never a text browser in the terminal)."""
    if sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


async def open_in_browser(url: str) -> None:
    """Open `url` in the user's browser when there is one; quietly nothing otherwise."""
    if browser_available():
        with contextlib.suppress(Exception):
            await anyio.to_thread.run_sync(webbrowser.open, url)


@dataclass
class SignedIn:
    """The outcome of a sign-in: who the hub is to the server, and what it may do (no token)."""

    server: str
    client_id: str | None
    row: TokenRow
    tools: list[str]

    def describe(self) -> str:
        scope = self.row.tokens.scope if self.row.tokens is not None else None
        said = self.row.describe(self.server) or "signed in"
        return (
            f"{self.server}: {said}"
            + (f", scope {scope}" if scope else "")
            + (f", as client {self.client_id}" if self.client_id else "")
            + f"; {len(self.tools)} tools"
        )


async def _loopback(name: str, config: ServerConfig, tokens: ServerTokens) -> tuple[LoopbackCallback, bool]:
    """The sign-in's listener, not yet listening, and whether another port will do: the
    configured port (it must be that one), else the one the stored client was registered with
    (most authorization servers match redirect URIs exactly; another port means registering
    again), else any."""
    oauth = config.oauth
    timeout = oauth.callback_timeout_s if oauth is not None else 300.0
    if oauth is not None and oauth.callback_port:
        return LoopbackCallback(name, oauth.callback_port, timeout), False
    port = 0
    stored = await tokens.get_client_info()
    if stored is not None and stored.redirect_uris and stored.redirect_uris[0].host == "127.0.0.1":
        port = stored.redirect_uris[0].port or 0
    return LoopbackCallback(name, port, timeout), True


async def _prepare_client(
    config: ServerConfig, tokens: ServerTokens, redirect_uri: str, expand: Callable[[str, str], str]
) -> None:
    """A configured client (`oauth.client_id`) is stored as the registration; a stored one made
    for another redirect URI is dropped, so the sign-in registers again."""
    oauth = config.oauth
    if oauth is not None and oauth.client_id:
        secret = oauth.client_secret.get_secret_value() if oauth.client_secret else None
        if secret is not None:
            secret = expand(secret, f"servers.{tokens.server}.oauth.client_secret")
        await tokens.set_client_info(
            OAuthClientInformationFull(
                client_id=expand(oauth.client_id, f"servers.{tokens.server}.oauth.client_id"),
                client_secret=secret or None,
                token_endpoint_auth_method="client_secret_post" if secret else "none",
                redirect_uris=[redirect_uri],  # type: ignore[list-item]
                grant_types=["authorization_code", "refresh_token"],
            )
        )
        return
    stored = await tokens.get_client_info()
    if stored is not None and [str(uri) for uri in stored.redirect_uris or []] != [redirect_uri]:
        await tokens.forget_client()


def _sign_in_failure(name: str, exc: BaseException) -> SignInFailed:
    """An OAuth error of the SDK as one sentence with the fix."""
    if isinstance(exc, SignInFailed):
        return exc
    if isinstance(exc, OAuthRegistrationError):
        return SignInFailed(
            f"sign-in to {name!r}: the authorization server registers no clients for the hub ({exc}); "
            f"register one with it and set [servers.{name}.oauth] client_id (and client_secret)"
        )
    if isinstance(exc, OAuthTokenError | OAuthFlowError):
        return SignInFailed(f"sign-in to {name!r} failed: {exc}")
    return SignInFailed(f"sign-in to {name!r} failed: {type(exc).__name__}: {exc}")


async def sign_in(
    name: str,
    config: ServerConfig,
    store: TokenStore,
    *,
    show_url: Callable[[str], Awaitable[None]],
    environ: Mapping[str, str],
    scopes: str | None = None,
) -> SignedIn:
    """Sign the hub in to remote server `name` (authorization code with PKCE, through the
    user's browser): `show_url(url)` hands the authorization URL to the user; the redirect lands
    on a loopback listener this starts. Connects and lists the tools with the new tokens.
    Raises `SignInFailed` with the reason and the fix."""
    expand = _expander(environ)
    url = expand(config.url or "", f"servers.{name}.url")
    tokens = (await store.ready()).server(name, url)
    callback, any_port = await _loopback(name, config, tokens)
    async with callback.listening(any_port_if_taken=any_port):
        await _prepare_client(config, tokens, callback.redirect_uri, expand)

        async def hand_out(authorization_url: str) -> None:
            callback.expect(authorization_url)
            await show_url(authorization_url)

        oauth = config.oauth
        provider = HubOAuthProvider(
            name,
            url,
            tokens,
            redirect_uri=callback.redirect_uri,
            interactive=True,
            open_url=hand_out,
            wait_for_code=callback.wait_for_code,
            scopes=" ".join(filter(None, [oauth.scopes if oauth else None, scopes])) or None,
            client_metadata_url=oauth.client_metadata_url if oauth else None,
        )
        await provider.start_afresh()
        # A failure is raised once the listener is closed, not wrapped in its task group's error.
        failure: SignInFailed | None = None
        try:
            tools = await _list_tools(config, url, remote_headers(name, config, expand, environ), provider)
        except Exception as exc:
            failure = _sign_in_failure(name, _first_leaf(exc))
    if failure is not None:
        raise failure
    row = await tokens.load()
    if row.tokens is None:
        raise SignInFailed(f"server {name!r} did not ask the hub to sign in: it answered without credentials")
    return SignedIn(name, provider.client_id, row, tools)


async def _list_tools(
    config: ServerConfig, url: str, headers: dict[str, str], auth: httpx2.Auth
) -> list[str]:
    from mcp import ClientSession

    async with remote_streams(config.transport, url, headers, auth) as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            return [tool.name for tool in (await session.list_tools()).tools]


async def sign_out(name: str, config: ServerConfig, store: TokenStore, environ: Mapping[str, str]) -> str:
    """Revoke the grant where the server offers revocation (RFC 7009), then forget the tokens,
    the registration and the metadata. Says what was done."""
    url = _expander(environ)(config.url or "", f"servers.{name}.url")
    tokens = (await store.ready()).server(name, url)
    if (await tokens.load()).tokens is None:
        await tokens.forget()
        return f"{name}: not signed in; nothing to revoke"
    try:
        status = await HubOAuthProvider(name, url, tokens).revoke()
    except (httpx2.HTTPError, OAuthTokenError) as exc:
        note = f" (revoking failed: {type(exc).__name__}; the server may honour the tokens until they expire)"
    else:
        note = (
            " (the server offers no revocation: the tokens were only forgotten here)"
            if status is None
            else f" (the server answered the revocation with HTTP {status})"
        )
    await tokens.forget()
    return f"{name}: signed out{note}"


def _expander(environ: Mapping[str, str]) -> Callable[[str, str], str]:
    return lambda text, where: expand_vars(text, environ, where=where)


def _first_leaf(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc
