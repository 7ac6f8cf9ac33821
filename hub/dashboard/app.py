"""The dashboard's web app (ASGI, Starlette): the page, its server-sent events, the panels'
actions, the files panels link to, and the vendored static files.

- ``GET /`` the page, rendered now; ``?hub=INSTANCE`` picks a shared process.
- ``GET /events`` server-sent events: each live part (`hub.dashboard.render.FRAGMENTS`) as an
  event named after it, first all of them, then each one that changed, checked every
  `interval_s`; a comment every 15 s keeps proxies from closing the stream.
- ``POST /action`` (htmx: ``plugin``, ``panel``, ``action``, ``args``) runs a panel's action on
  the shared process and answers with a line for the page.
- ``GET /file?path=`` a file a panel links to right now (nothing else), as text.
- ``GET /static/NAME`` htmx, its SSE extension, uPlot and the page's own script and style.

Access: every request needs the dashboard's token, given once in the printed URL
(``?token=``, which sets a same-site cookie) or as ``Authorization: Bearer``; a request whose
``Host`` is not loopback is refused unless the dashboard listens elsewhere on purpose
(``--host``: the token is then what protects it, as for the HTTP transport). A ``POST`` must come
from the page itself (htmx's ``HX-Request`` header, and an ``Origin``, when sent, of this host).
Responses carry a content security policy allowing only the page's own files.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import anyio
import structlog
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from hub.dashboard import render
from hub.dashboard.source import Source
from hub.dashboard.spend import chart_data, since

__all__ = ["COOKIE", "STATIC", "dashboard_app"]

log = structlog.get_logger("hub.dashboard")
STATIC = Path(__file__).parent / "static"
COOKIE = "hub_dashboard"
KEEPALIVE_S = 15.0
MAX_FILE_BYTES = 50 * 1024 * 1024
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
STATIC_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}


def _loopback_host(value: str) -> bool:
    try:
        host = urlsplit(f"//{value}").hostname or ""
    except ValueError:
        return False
    if host == "localhost":
        return True
    return host.startswith("127.") or host == "::1"


class Dashboard:
    """The app's state: the source of snapshots, the token, the files panels show."""

    def __init__(self, source: Source, token: str, *, any_host: bool = False, clock: Callable[[], datetime]):
        self.source = source
        self.token = token
        self.any_host = any_host  # listening beyond loopback on purpose: the token alone guards it
        self.clock = clock
        self.linked: dict[str | None, set[str]] = {}  # per page's hub: files its panels link to now

    # -- access ------------------------------------------------------------------------------

    def refused(self, request: Request) -> Response | None:
        """Why `request` may not be served, as a response; None when it may."""
        if not self.any_host and not _loopback_host(request.headers.get("host", "")):
            return PlainTextResponse("this dashboard answers only on loopback", status_code=403)
        given = request.query_params.get("token") or request.cookies.get(COOKIE) or ""
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            given = auth[7:].strip()
        if not hmac.compare_digest(given.encode(), self.token.encode()):
            return PlainTextResponse(
                "this dashboard needs its token: open the URL `hub dashboard` printed", status_code=401
            )
        if request.method == "POST":
            origin = request.headers.get("origin")
            same = origin is None or urlsplit(origin).netloc == request.headers.get("host")
            if request.headers.get("hx-request") != "true" or not same:
                return PlainTextResponse("actions come from the dashboard's page only", status_code=403)
        return None

    def secured(self, response: Response, request: Request) -> Response:
        response.headers["content-security-policy"] = CSP
        response.headers["x-content-type-options"] = "nosniff"
        response.headers["referrer-policy"] = "no-referrer"
        response.headers["cache-control"] = "no-store"
        if request.query_params.get("token"):
            response.set_cookie(COOKIE, self.token, httponly=True, samesite="strict")
        return response

    # -- data ----------------------------------------------------------------------------------

    async def parts(self, wanted: str | None) -> dict[str, str]:
        snapshot = await self.source.snapshot(wanted)
        self.linked[wanted] = _links(snapshot.get("panels") or [])
        now = self.clock()
        rows = await self.source.spend_rows(snapshot, since(now))
        return render.fragments(snapshot, chart_data(rows, now) if rows is not None else None)

    # -- routes --------------------------------------------------------------------------------

    async def index(self, request: Request) -> Response:
        wanted = request.query_params.get("hub")
        events = "/events" + (f"?{urlencode({'hub': wanted})}" if wanted else "")
        return HTMLResponse(render.page(await self.parts(wanted), events))

    async def events(self, request: Request) -> Response:
        wanted = request.query_params.get("hub")
        return StreamingResponse(
            self._stream(wanted),
            media_type="text/event-stream",
            headers={"x-accel-buffering": "no"},
        )

    async def _stream(self, wanted: str | None) -> AsyncIterator[str]:
        sent: dict[str, str] = {}
        quiet = 0.0
        while True:
            try:
                parts = await self.parts(wanted)
            except Exception:  # one bad snapshot never ends the page's stream
                log.exception("the dashboard could not take a snapshot")
                parts = {}
            changed = [name for name, text in parts.items() if sent.get(name) != text]
            for name in changed:
                sent[name] = parts[name]
                yield _event(name, parts[name])
            quiet = 0.0 if changed else quiet + self.source.interval_s
            if quiet >= KEEPALIVE_S:
                quiet = 0.0
                yield ": keep-alive\n\n"
            await anyio.sleep(self.source.interval_s)

    async def action(self, request: Request) -> Response:
        fields = parse_qs((await request.body()).decode("utf-8", "replace"))
        form = {key: values[0] for key, values in fields.items()}
        try:
            args = json.loads(str(form.get("args") or "{}"))
        except ValueError:
            args = {}
        answer = await self.source.act(
            str(form.get("hub") or "") or None,
            plugin=str(form.get("plugin") or ""),
            panel=str(form.get("panel") or ""),
            action=str(form.get("action") or ""),
            args=args if isinstance(args, dict) else {},
        )
        kind = "ok" if answer.get("ok") else "error"
        return HTMLResponse(f'<p class="flash {kind}">{render.esc(answer.get("message"))}</p>')

    async def file(self, request: Request) -> Response:
        path = request.query_params.get("path", "")
        if not any(path in shown for shown in self.linked.values()):
            return PlainTextResponse("no panel links to that file now", status_code=404)
        target = Path(path)
        try:
            size = target.stat().st_size
        except OSError:
            return PlainTextResponse(f"{path} is not there (yet)", status_code=404)
        if not target.is_file() or size > MAX_FILE_BYTES:
            return PlainTextResponse(f"{path} is not a file the dashboard serves", status_code=404)
        return FileResponse(target, media_type="text/plain; charset=utf-8")

    async def static(self, request: Request) -> Response:
        name = request.path_params["name"]
        target = STATIC / name
        if "/" in name or not target.is_file():
            return PlainTextResponse("not found", status_code=404)
        return FileResponse(target, media_type=STATIC_TYPES.get(target.suffix, "text/plain"))


def _event(name: str, text: str) -> str:
    """One server-sent event; each line of `text` is a `data:` line (the client joins them)."""
    data = "\n".join(f"data: {line}" for line in text.splitlines() or [""])
    return f"event: {name}\n{data}\n\n"


def _links(panels: list[dict[str, Any]]) -> set[str]:
    """The paths of every `PanelLink` in the panels' tables."""
    found: set[str] = set()

    def visit(value: Any) -> None:
        if isinstance(value, list):
            for item in value:
                visit(item)
        elif isinstance(value, dict) and "link" in value and isinstance(value.get("path"), str):
            found.add(value["path"])

    for panel in panels:
        for table in (panel.get("view") or {}).get("tables") or []:
            visit(table.get("rows") or [])
    return found


def dashboard_app(
    source: Source, token: str, *, any_host: bool = False, clock: Callable[[], datetime] | None = None
) -> Starlette:
    """The ASGI app serving `source`'s hub behind `token`."""
    state = Dashboard(source, token, any_host=any_host, clock=clock or (lambda: datetime.now().astimezone()))

    def guarded(handler: Callable[[Request], Any]) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            refused = state.refused(request) if handler != state.static else None
            response = refused or await handler(request)
            return state.secured(response, request)

        return endpoint

    routes = [
        Route("/", guarded(state.index)),
        Route("/events", guarded(state.events)),
        Route("/action", guarded(state.action), methods=["POST"]),
        Route("/file", guarded(state.file)),
        Route("/static/{name}", guarded(state.static)),
    ]
    app = Starlette(routes=routes)
    app.state.dashboard = state
    return app
