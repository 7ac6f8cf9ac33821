"""A remote MCP server behind OAuth 2.1, with its own authorization server, in one process: what
`hub servers login` and the hub's token handling are tested against.

Built from the MCP SDK's server pieces: `MCPServer(auth=AuthSettings(...),
auth_server_provider=...)` mounts the authorization server's routes (metadata, /authorize,
/token, /register, /revoke), the protected-resource metadata, and /mcp (or /sse) behind bearer
auth answering 401 with `WWW-Authenticate: Bearer ..., resource_metadata="..."`.

How it behaves, for the tests:

- /authorize approves at once: a GET redirects to the client's redirect URI with code, state
  and iss (RFC 9207); a loopback redirect URI matches on any port (RFC 8252 7.3);
- access tokens live `--access-ttl` seconds; refresh tokens rotate, and a refresh token used a
  second time is refused and revokes its whole grant;
- tools `whoami` (scope mcp) and `admin_echo` (scope admin: a token without it gets HTTP 403
  `insufficient_scope` naming the scope, the MCP step-up);
- `--static-token T`: `Authorization: Bearer T` is accepted too (for headers and bearer tests);
- `GET /_test/stats`: refresh-token uses (hashes only), `POST /_test/revoke_all`.

    oauth_server.py [--access-ttl 2] [--no-register] [--client ID:SECRET] [--transport http|sse]

prints one JSON line `{"url": ..., "base": ...}` once listening. Tokens are never printed.
Tests use `running(*args)` (the server in a subprocess) and `browse(url)` (the user's browser:
it follows the sign-in URL to the hub's loopback listener).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import secrets
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import anyio
import uvicorn
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.provider import (
    AccessToken,
    AuthorizationCode,
    AuthorizationParams,
    RefreshToken,
    TokenError,
    construct_redirect_uri,
)
from mcp.server.auth.routes import build_metadata, build_resource_metadata_url
from mcp.server.auth.settings import AuthSettings, ClientRegistrationOptions, RevocationOptions
from mcp.server.mcpserver import MCPServer
from mcp.shared.auth import OAuthClientInformationFull, OAuthToken
from pydantic import AnyHttpUrl, AnyUrl
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

SCOPES = ["mcp", "admin"]


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()[:10]


class LoopbackClient(OAuthClientInformationFull):
    """A client whose loopback redirect URI matches on any port (RFC 8252 7.3)."""

    def validate_redirect_uri(self, redirect_uri: AnyUrl | None) -> AnyUrl:
        if redirect_uri is not None and redirect_uri.host in ("127.0.0.1", "localhost"):
            for registered in self.redirect_uris or []:
                if (registered.host, registered.path) == (redirect_uri.host, redirect_uri.path):
                    return redirect_uri
        return super().validate_redirect_uri(redirect_uri)


class Provider:
    """In-memory authorization server: rotating refresh tokens, reuse revokes the grant."""

    def __init__(self, args: argparse.Namespace, issuer: str, resource: str) -> None:
        self.args, self.issuer, self.resource = args, issuer, resource
        self.clients: dict[str, OAuthClientInformationFull] = {}
        self.codes: dict[str, AuthorizationCode] = {}
        self.access: dict[str, tuple[AccessToken, str, float]] = {}  # token -> (it, grant, expiry)
        self.refresh: dict[str, dict[str, Any]] = {}  # token -> {token, grant, used}
        self.revoked: set[str] = set()
        self.events: list[dict[str, Any]] = []
        for spec in args.client or []:
            client_id, _, secret = spec.partition(":")
            self.clients[client_id] = LoopbackClient(
                client_id=client_id,
                client_secret=secret or None,
                token_endpoint_auth_method="client_secret_post" if secret else "none",
                redirect_uris=[AnyUrl("http://127.0.0.1/callback")],
                grant_types=["authorization_code", "refresh_token"],
                scope=" ".join(SCOPES),
            )

    def log(self, event: str, **fields: Any) -> None:
        self.events.append({"event": event, **fields})

    def stats(self) -> dict[str, Any]:
        uses = Counter(e["rt"] for e in self.events if e["event"].startswith("refresh"))
        return {
            "counts": dict(Counter(e["event"] for e in self.events)),
            "refresh_token_uses_max": max(uses.values(), default=0),
            "clients": sorted(self.clients),
        }

    async def get_client(self, client_id: str) -> OAuthClientInformationFull | None:
        return self.clients.get(client_id)

    async def register_client(self, client_info: OAuthClientInformationFull) -> None:
        # Any valid scope may be asked for later (a step-up), whatever the client registered with.
        client_info.scope = " ".join(SCOPES)
        self.clients[client_info.client_id] = LoopbackClient.model_validate(client_info.model_dump())
        self.log("register", client_id=client_info.client_id)

    async def authorize(self, client: OAuthClientInformationFull, params: AuthorizationParams) -> str:
        code = secrets.token_urlsafe(32)
        scopes = params.scopes or SCOPES[:1]
        self.codes[code] = AuthorizationCode(
            code=code,
            scopes=scopes,
            expires_at=time.time() + 120,
            client_id=client.client_id,
            code_challenge=params.code_challenge,
            redirect_uri=params.redirect_uri,
            redirect_uri_provided_explicitly=params.redirect_uri_provided_explicitly,
            resource=params.resource,
        )
        self.log("authorize", client_id=client.client_id, scopes=scopes, resource=params.resource)
        return construct_redirect_uri(
            str(params.redirect_uri), code=code, state=params.state, iss=self.issuer
        )

    async def load_authorization_code(self, client: Any, code: str) -> AuthorizationCode | None:
        return self.codes.get(code)

    async def exchange_authorization_code(self, client: Any, code: AuthorizationCode) -> OAuthToken:
        self.codes.pop(code.code, None)
        self.log("token", client_id=client.client_id)
        return self._issue(client.client_id, code.scopes, code.resource, secrets.token_hex(6))

    def _issue(self, client_id: str, scopes: list[str], resource: str | None, grant: str) -> OAuthToken:
        access, refresh = "at_" + secrets.token_urlsafe(24), "rt_" + secrets.token_urlsafe(24)
        expiry = time.time() + self.args.access_ttl
        it = AccessToken(
            token=access, client_id=client_id, scopes=scopes, expires_at=int(expiry) + 1, resource=resource
        )
        self.access[access] = (it, grant, expiry)
        rt = RefreshToken(token=refresh, client_id=client_id, scopes=scopes, resource=resource)
        self.refresh[refresh] = {"token": rt, "grant": grant, "used": False}
        return OAuthToken(
            access_token=access,
            token_type="Bearer",
            expires_in=self.args.access_ttl,
            scope=" ".join(scopes),
            refresh_token=refresh,
        )

    async def load_refresh_token(self, client: Any, refresh_token: str) -> RefreshToken | None:
        entry = self.refresh.get(refresh_token)
        if entry is None:
            self.log("refresh_unknown", rt=digest(refresh_token))
            return None
        return entry["token"]

    async def exchange_refresh_token(
        self, client: Any, refresh_token: RefreshToken, scopes: list[str]
    ) -> OAuthToken:
        entry = self.refresh[refresh_token.token]
        rt, grant = digest(refresh_token.token), entry["grant"]
        if grant in self.revoked:  # checked and marked without an await: atomic in this loop
            self.log("refresh_revoked", rt=rt)
            raise TokenError("invalid_grant", "refresh token revoked")
        if entry["used"]:
            self.revoked.add(grant)
            self.log("refresh_reused", rt=rt)
            raise TokenError("invalid_grant", "refresh token used twice; the grant is revoked")
        entry["used"] = True
        if self.args.refresh_delay:
            await anyio.sleep(self.args.refresh_delay)  # widens the window two refreshers would race in
        self.log("refresh", rt=rt)
        return self._issue(client.client_id, scopes, refresh_token.resource, grant)

    async def load_access_token(self, token: str) -> AccessToken | None:
        if self.args.static_token and token == self.args.static_token:
            return AccessToken(token=token, client_id="static", scopes=["mcp"], resource=self.resource)
        entry = self.access.get(token)
        if entry is None or entry[1] in self.revoked or entry[2] < time.time():
            return None
        return entry[0]

    async def revoke_token(self, token: AccessToken | RefreshToken) -> None:
        entry = self.refresh.get(token.token)
        grant = entry["grant"] if entry else self.access.get(token.token, (None, None))[1]
        if grant:
            self.revoked.add(grant)
            self.log("revoke")


class StepUp:
    """ASGI wrapper: `tools/call` of a tool needing a scope the token lacks gets HTTP 403
    `insufficient_scope` with the scope (the SDK's middleware has one scope list for all of /mcp)."""

    def __init__(self, app: Any, provider: Provider, metadata_url: str) -> None:
        self.app, self.provider, self.metadata_url = app, provider, metadata_url

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"].rstrip("/") != "/mcp":
            return await self.app(scope, receive, send)
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        sent = False

        async def replay() -> dict[str, Any]:
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        try:
            request = json.loads(body)
        except ValueError:
            request = {}
        if isinstance(request, dict) and (request.get("params") or {}).get("name") == "admin_echo":
            auth = dict(scope["headers"]).get(b"authorization", b"").decode()
            token = await self.provider.load_access_token(auth.removeprefix("Bearer "))
            if token is not None and "admin" not in token.scopes:
                challenge = (
                    f'Bearer error="insufficient_scope", scope="{" ".join([*token.scopes, "admin"])}", '
                    f'resource_metadata="{self.metadata_url}"'
                )
                answer = JSONResponse({"error": "insufficient_scope"}, 403, {"WWW-Authenticate": challenge})
                return await answer(scope, replay, send)
        return await self.app(scope, replay, send)


def build_app(args: argparse.Namespace, issuer: str) -> Any:
    endpoint = f"{issuer}/{'sse' if args.transport == 'sse' else 'mcp'}"
    provider = Provider(args, issuer, endpoint)
    settings = AuthSettings(
        issuer_url=issuer,  # a string: AnyHttpUrl would add a "/" and break the exact issuer match
        resource_server_url=endpoint,
        required_scopes=["mcp"],
        client_registration_options=ClientRegistrationOptions(
            enabled=not args.no_register, valid_scopes=SCOPES, default_scopes=["mcp"]
        ),
        revocation_options=RevocationOptions(enabled=True),
        validate_token_resource=True,
    )
    server = MCPServer("oauth-test", auth=settings, auth_server_provider=provider)

    @server.tool()
    def whoami() -> dict[str, Any]:
        """Who the bearer token says the caller is."""
        token = get_access_token()
        assert token is not None
        return {"client_id": token.client_id, "scopes": token.scopes, "token": digest(token.token)}

    @server.tool()
    def admin_echo(text: str) -> dict[str, Any]:
        """Echo, with scope admin only."""
        return {"echo": text}

    async def stats(request: Request) -> Response:
        return JSONResponse(provider.stats())

    async def revoke_all(request: Request) -> Response:
        provider.revoked.update(entry["grant"] for entry in provider.refresh.values())
        return JSONResponse(provider.stats())

    server.custom_route("/_test/stats", methods=["GET"])(stats)
    server.custom_route("/_test/revoke_all", methods=["POST"])(revoke_all)
    if args.transport == "sse":
        app: Any = server.sse_app()
    else:
        metadata_url = str(build_resource_metadata_url(AnyHttpUrl(endpoint)))
        app = StepUp(server.streamable_http_app(), provider, metadata_url)
    # The SDK's metadata advertises neither RFC 9207 `iss` support nor public clients: amended.
    metadata = build_metadata(
        settings.issuer_url, None, settings.client_registration_options, settings.revocation_options
    )
    metadata.authorization_response_iss_parameter_supported = True
    metadata.token_endpoint_auth_methods_supported = ["client_secret_post", "client_secret_basic", "none"]
    body = metadata.model_dump_json(exclude_none=True).encode()

    async def serve(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/.well-known/oauth-authorization-server":
            return await Response(body, media_type="application/json")(scope, receive, send)
        return await app(scope, receive, send)

    return serve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--access-ttl", type=int, default=2, help="access token lifetime, seconds")
    parser.add_argument("--no-register", action="store_true", help="no dynamic client registration")
    parser.add_argument("--client", action="append", help="a pre-registered client ID:SECRET")
    parser.add_argument("--refresh-delay", type=float, default=0.0, help="seconds a refresh takes")
    parser.add_argument("--transport", choices=["http", "sse"], default="http")
    parser.add_argument("--static-token", help="a bearer token accepted besides the issued ones")
    args = parser.parse_args()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    issuer = f"http://127.0.0.1:{sock.getsockname()[1]}"
    app = build_app(args, issuer)
    endpoint = f"{issuer}/{'sse' if args.transport == 'sse' else 'mcp'}"
    print(json.dumps({"url": endpoint, "base": issuer}), flush=True)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    anyio.run(lambda: server.serve(sockets=[sock]))


@dataclass
class Remote:
    """A running server, seen from a test."""

    url: str  # the MCP endpoint
    base: str

    def stats(self) -> dict[str, Any]:
        import httpx2

        return dict(httpx2.get(f"{self.base}/_test/stats", timeout=10).json())

    def revoke_all(self) -> None:
        import httpx2

        httpx2.post(f"{self.base}/_test/revoke_all", timeout=10).raise_for_status()


@contextlib.contextmanager
def running(*args: str) -> Iterator[Remote]:
    """This server in a subprocess, stopped when the block ends."""
    proc = subprocess.Popen(
        [sys.executable, __file__, *args], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    try:
        assert proc.stdout is not None
        info = json.loads(proc.stdout.readline())
        yield Remote(info["url"], info["base"])
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def browse(url: str) -> str:
    """What a user's browser does with a sign-in URL: follow the redirects (the authorization
    server approves at once) to the hub's loopback listener; the page's text."""
    import httpx2

    answer = httpx2.get(url, follow_redirects=True, timeout=30)
    return answer.text


if __name__ == "__main__":
    main()
