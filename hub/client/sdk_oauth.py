"""The MCP SDK's OAuth client (`mcp.client.auth.OAuthClientProvider`), extended where mcp 2.3 falls
short for a hub. The second of the two modules of the client side that touch the SDK's private
internals (with `hub.client.sdk`): the provider has no public hooks, so its private steps are
overridden here and nowhere else.

What the SDK does and is kept: discovery (RFC 9728 protected-resource metadata from the 401's
`WWW-Authenticate`, RFC 8414 / OpenID metadata), registration (Client ID Metadata Document where
supported, else dynamic registration, or a configured client), PKCE S256, the `resource`
indicator (RFC 8707), the `iss` check (RFC 9207) and the step-up scope union.

What is added (each missing in mcp 2.3):

- tokens come back with their absolute expiry and the discovered metadata after a restart, so
  a restarted process refreshes instead of asking for a sign-in, at the right token endpoint;
- a refresh a little before expiry, and once after a 401 of a token thought valid;
- refreshes leased across processes (`hub.client.tokens.ServerTokens.lease_or_adopt`): one
  process refreshes, the others adopt its tokens, and a refresh token is never used twice;
- `interactive=False` (every hub process that serves): never opens a browser; a 401 or 403 it
  cannot resolve is left to the transport and described in `problem`, instead of an exception
  that tears the connection down; requests are not serialised on the provider's lock;
- a refused refresh (`invalid_grant`) ends in one clear state for every process;
- configured scopes win over discovered ones, PKCE is refused without S256 support, and the
  sign-out revocation request (RFC 7009).
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any

import anyio
import httpx2
from mcp.client.auth import AuthorizationCodeResult, OAuthClientProvider, OAuthFlowError
from mcp.client.auth.utils import extract_field_from_www_auth, union_scopes
from mcp.shared.auth import OAuthClientMetadata, OAuthToken
from mcp.shared.inbound import MCP_PROTOCOL_VERSION_HEADER

from hub.client.tokens import LEASE_WAIT_S, ServerTokens, TokenRow, lease_owner, refresh_margin

__all__ = ["HubOAuthProvider", "client_metadata"]

REFRESH_TIMEOUT_S = 20.0  # well under the lease's TTL: a lease never lapses under a refresh in flight
LEASE_POLL_S = 0.05
# A refresh refused with one of these ends the grant: every process must sign in again.
GRANT_ENDED = ("invalid_grant", "invalid_client", "unauthorized_client")


def client_metadata(redirect_uri: str, scope: str | None = None) -> OAuthClientMetadata:
    """What the hub registers as: a native client with a loopback redirect."""
    return OAuthClientMetadata(
        client_name="hub (MCP proxy)",
        redirect_uris=[redirect_uri],  # type: ignore[list-item]
        grant_types=["authorization_code", "refresh_token"],
        response_types=["code"],
        scope=scope,
    )


def _expiry(tokens: OAuthToken | None, expires_at: float | None) -> float | None:
    """The time the SDK should stop sending a token: its expiry less the refresh margin."""
    if tokens is None or expires_at is None:
        return None
    return expires_at - refresh_margin(tokens)


class HubOAuthProvider(OAuthClientProvider):
    """An `httpx2.Auth` for one remote server: ``interactive=True`` for `hub servers login` (the
    SDK's flow, with `open_url` and `wait_for_code` for the browser), else the serving mode."""

    def __init__(
        self,
        server: str,
        url: str,
        tokens: ServerTokens,
        *,
        redirect_uri: str = "http://127.0.0.1/callback",
        interactive: bool = False,
        open_url: Callable[[str], Awaitable[None]] | None = None,
        wait_for_code: Callable[[], Awaitable[AuthorizationCodeResult]] | None = None,
        scopes: str | None = None,
        client_metadata_url: str | None = None,
    ) -> None:
        super().__init__(
            server_url=url,
            client_metadata=client_metadata(redirect_uri, scopes),
            storage=tokens,
            redirect_handler=open_url,
            callback_handler=wait_for_code,
            client_metadata_url=client_metadata_url,
        )
        self.server = server
        self.tokens = tokens
        self.interactive = interactive
        self.scopes = scopes  # configured (or asked for on the command line): they win
        self.owner = lease_owner(self)
        self.problem: str | None = None  # why the server cannot be used now; never a token
        self.refused: tuple[int, str] | None = None  # the last 401/403: status, WWW-Authenticate
        self._step_up = False

    # -- state, restored from the store --------------------------------------------------------

    async def _initialize(self) -> None:
        await self._load_registration()
        self._adopt(await self.tokens.load())
        self._initialized = True

    async def _load_registration(self) -> None:
        """The client registration and the discovered metadata, as the store has them."""
        self.context.client_info = await self.tokens.get_client_info()
        prm, asm, auth_server_url = await self.tokens.load_discovery()
        if asm is not None:
            self.context.protected_resource_metadata = prm
            self.context.oauth_metadata = asm
            self.context.auth_server_url = auth_server_url

    async def _adopt_newer(self, row: TokenRow) -> None:
        """`_adopt`, and when another process wrote the row since this one read it (a sign-in
        may have registered anew), its registration and metadata too."""
        if row.generation != self.tokens.generation:
            await self._load_registration()
        self._adopt(row)

    def _adopt(self, row: TokenRow) -> None:
        """Use `row`'s tokens (or none), as the newest there are."""
        self.tokens.generation = row.generation
        if row.state == "ok" and row.tokens is not None:
            self.context.current_tokens = row.tokens
            self.context.token_expiry_time = _expiry(row.tokens, row.expires_at)
            self.problem = row.problem
        else:
            self.context.clear_tokens()
            self.problem = row.problem or f"needs login: run `hub servers login {self.server}`"

    async def start_afresh(self) -> None:
        """Load the registration and metadata, but not the tokens: `hub servers login` signs in
        anew even when the tokens still work (to get more scope, or another account)."""
        await self._initialize()
        self.context.clear_tokens()

    @property
    def client_id(self) -> str | None:
        info = self.context.client_info
        return info.client_id if info is not None else None

    # -- sign-in (interactive) -----------------------------------------------------------------

    async def _handle_token_response(self, response: httpx2.Response) -> None:
        await super()._handle_token_response(response)
        if self.context.token_expiry_time is not None:
            self.context.token_expiry_time -= refresh_margin(self.context.current_tokens)
        await self.tokens.save_discovery(
            self.context.protected_resource_metadata,
            self.context.oauth_metadata,
            self.context.auth_server_url,
        )

    async def _perform_authorization(self) -> httpx2.Request:
        metadata = self.context.oauth_metadata
        if metadata is not None and "S256" not in (metadata.code_challenge_methods_supported or []):
            # The MCP authorization spec: without S256 advertised, a client must not proceed.
            raise OAuthFlowError(
                f"the authorization server {metadata.issuer} does not offer PKCE with S256 "
                "(code_challenge_methods_supported); the hub cannot sign in to it safely"
            )
        # The SDK chose the scopes from the challenge and the metadata (on a step-up, joined with
        # what was granted); configured scopes replace that choice, and what a server asked for
        # more of while serving (`scope_needed`) is added.
        chosen = self.context.client_metadata.scope
        wanted = union_scopes(self.scopes, chosen) if self._step_up else self.scopes or chosen
        self.context.client_metadata.scope = union_scopes(wanted, (await self.tokens.load()).scope_needed)
        return await super()._perform_authorization()

    async def _interactive_flow(
        self, request: httpx2.Request
    ) -> AsyncGenerator[httpx2.Request, httpx2.Response]:
        """The SDK's own flow, watched only to tell a step-up (403) from a first sign-in."""
        flow = super()._auth_flow(request)
        try:
            outgoing = await flow.__anext__()
            while True:
                response = yield outgoing
                if outgoing is request:
                    self._step_up = response.status_code == 403
                outgoing = await flow.asend(response)
        except StopAsyncIteration:
            return
        finally:
            await flow.aclose()

    def _auth_flow(self, request: httpx2.Request) -> AsyncGenerator[httpx2.Request, httpx2.Response]:
        return self._interactive_flow(request) if self.interactive else self._serving_flow(request)

    # -- serving -----------------------------------------------------------------------------

    async def _serving_flow(self, request: httpx2.Request) -> AsyncGenerator[httpx2.Request, httpx2.Response]:
        """Send with the current token (refreshed first if due). After a 401: refresh once (or
        adopt another process's refresh, or a sign-in made since) and retry. The provider's lock
        guards the token bookkeeping only, never the request."""
        async with self.context.lock:
            if not self._initialized:
                await self._initialize()
            self.context.protocol_version = request.headers.get(MCP_PROTOCOL_VERSION_HEADER)
            if not self.context.is_token_valid() and self.context.can_refresh_token():
                await self._refresh(force=False)
            sent, generation = self._access_token(), self.tokens.generation
        if sent is not None:
            request.headers["Authorization"] = f"Bearer {sent}"
        response = yield request
        if response.status_code == 401 or _asks_for_scope(response):
            retry = await self._after_refusal(response.status_code, sent, generation)
            if retry is not None:
                request.headers["Authorization"] = f"Bearer {retry}"
                response = yield request
        await self._note(response, sent is not None)

    async def _after_refusal(self, status: int, sent: str | None, generation: int) -> str | None:
        """A token to retry with after a refusal, if there is a new one: stored since this
        process last looked (a sign-in, another process's refresh), or, after a 401 of the token
        sent, refreshed now. A 403 asking for more scope is retried only with a new sign-in's."""
        async with self.context.lock:
            if self.tokens.generation == generation:  # no other request of this process moved on
                row = await self.tokens.load()
                if row.generation != generation:
                    await self._adopt_newer(row)
                elif status == 401 and sent is not None:
                    await self._refresh(force=True)
                if status == 401 and not self.context.is_token_valid() and self.context.can_refresh_token():
                    await self._refresh(force=False)
            retry = self._access_token()
        return retry if retry != sent else None

    def _access_token(self) -> str | None:
        tokens = self.context.current_tokens
        return tokens.access_token if tokens is not None and self.context.is_token_valid() else None

    async def _note(self, response: httpx2.Response, sent: bool) -> None:
        """Describe a 401 or 403 the flow could not resolve (the transport only says "error")."""
        status = response.status_code
        if status not in (401, 403):
            if status < 400:
                self.refused = None
            return
        self.refused = (status, response.headers.get("WWW-Authenticate", ""))
        login = f"run `hub servers login {self.server}`"
        if _asks_for_scope(response):
            scope = extract_field_from_www_auth(response, "scope") or "?"
            self.problem = f"needs more scope ({scope}): {login}"
            await self.tokens.note(self.problem, scope_needed=scope)
        elif status == 403:
            self.problem = "the server refused access (HTTP 403)"
        elif sent and self.context.current_tokens is not None:
            self.problem = f"the server refused the access token: {login}"
        elif self.problem is None:
            self.problem = f"needs login: {login}"

    @property
    def needs_sign_in(self) -> bool:
        """Whether the last answer was a 401 with a Bearer challenge (OAuth), or a step-up 403,
        that the hub cannot resolve alone."""
        if self.refused is None or "bearer" not in self.refused[1].lower():
            return False
        return self.refused[0] == 401 or "insufficient_scope" in self.refused[1]

    # -- refresh, one process at a time ------------------------------------------------------

    async def _refresh(self, *, force: bool) -> None:
        """Get tokens that may be sent: another process's newer ones, or a refresh under the
        lease. Without a refresh token there is nothing to do (`problem` says why)."""
        deadline = time.monotonic() + LEASE_WAIT_S
        while True:
            decision, row = await self.tokens.lease_or_adopt(self.owner, force=force)
            await self._adopt_newer(row)  # in every case: the newest tokens there are
            if decision in ("adopt", "dead"):
                return
            if decision == "leased":
                with anyio.CancelScope(shield=True):  # a cancelled call must not lose a rotated token
                    try:
                        await self._send_refresh(row.generation)
                    finally:
                        await self.tokens.release(self.owner)
                return
            if time.monotonic() > deadline:
                self.problem = (
                    f"token refresh failed: another hub process has been refreshing for "
                    f"{LEASE_WAIT_S:g} s; the next call tries again"
                )
                return
            await anyio.sleep(LEASE_POLL_S)

    async def _send_refresh(self, generation: int) -> None:
        try:
            with anyio.fail_after(REFRESH_TIMEOUT_S):
                request = await self._refresh_token()  # the SDK's: client auth, resource indicator
                async with httpx2.AsyncClient(timeout=REFRESH_TIMEOUT_S) as http:
                    response = await http.send(request)
                    await response.aread()
        except (httpx2.HTTPError, TimeoutError, OAuthFlowError, ValueError) as exc:
            self.problem = f"token refresh failed: {type(exc).__name__}: {exc}; the next call tries again"
            return
        if response.status_code == 200 and await super()._handle_refresh_response(response):
            if self.context.token_expiry_time is not None:
                self.context.token_expiry_time -= refresh_margin(self.context.current_tokens)
            self.problem = None
            return
        error, description = _oauth_error(response)
        said = f"HTTP {response.status_code} {error}" + (f" ({description})" if description else "")
        if response.status_code in (400, 401) and error in GRANT_ENDED:
            self.problem = f"token refresh failed: {said}; run `hub servers login {self.server}`"
            await self.tokens.needs_login(self.problem, generation=generation)
            self.context.clear_tokens()
        else:
            self.problem = f"token refresh failed: {said}; the next call tries again"

    # -- sign-out ------------------------------------------------------------------------------

    async def revoke(self) -> int | None:
        """Ask the authorization server to revoke the grant (RFC 7009: the refresh token, else
        the access token). Its HTTP status, or None without a revocation endpoint or tokens."""
        await self._initialize()
        row = await self.tokens.load()
        metadata, client = self.context.oauth_metadata, self.context.client_info
        if row.tokens is None or metadata is None or metadata.revocation_endpoint is None or client is None:
            return None
        token, hint = (
            (row.tokens.refresh_token, "refresh_token")
            if row.tokens.refresh_token
            else (row.tokens.access_token, "access_token")
        )
        data, headers = self.context.prepare_token_auth(
            {"token": token, "token_type_hint": hint, "client_id": client.client_id},
            {"Content-Type": "application/x-www-form-urlencoded"},
        )
        async with httpx2.AsyncClient(timeout=REFRESH_TIMEOUT_S) as http:
            response = await http.post(str(metadata.revocation_endpoint), data=data, headers=headers)
        return response.status_code


def _asks_for_scope(response: httpx2.Response) -> bool:
    """A step-up: HTTP 403 with `error="insufficient_scope"` in its challenge."""
    return (
        response.status_code == 403 and extract_field_from_www_auth(response, "error") == "insufficient_scope"
    )


def _oauth_error(response: httpx2.Response) -> tuple[str, str]:
    """The `error` and `error_description` of an OAuth error answer (RFC 6749 5.2), if any."""
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        return "(no OAuth error in the answer)", ""
    return str(body.get("error", "?")), str(body.get("error_description") or "")[:200]
