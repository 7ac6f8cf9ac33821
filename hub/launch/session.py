"""One client's session on lines: the stdio transport (`hub.server.stdio`) plus what the process
layout adds around it. `serve_stdio` serves the client on this process's stdin and stdout
(`hub serve --no-share`); `serve_fds` serves a client whose descriptors a bridge handed over to the
shared process (`hub.launch.shared_process`). Around the transport, a session:

- records the answers to list requests for the next fast start (`hub.launch.fast_start`), serves
  first what the fast start held back, asks the hub the questions the fast start answered, and
  tells the client `list_changed` when an answer turned out to differ;
- tells the bridge of each request before it is read (the reader's `Journal`) and of each
  answer as it goes out (`Events`), so that if this process dies the bridge answers every
  request in flight once and replays the handshake to a new one (`hub.launch.handoff`);
- after such a replay, does not answer twice what the client already had (`swallow`).
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import TYPE_CHECKING, Any

import structlog

from hub.launch.fast_start import TRACKED, AnswerCache, EarlyAnswers, check_requests
from hub.server.stdio import Events, event_loop_stdout, private_stdin, stdio_transport
from hub.wire.envelope import ACKNOWLEDGED, LISTEN, SUBSCRIPTION_KEY
from hub.wire.fds import FdWriter, Journal, LineReader, pollable
from hub.wire.jsonrpc import valid_id

if TYPE_CHECKING:
    from hub.server.app import HubServer

__all__ = ["serve_fds", "serve_stdio"]

log = structlog.get_logger("hub.launch")


async def serve_stdio(
    server: HubServer,
    cache: AnswerCache | None = None,
    early: EarlyAnswers | None = None,
    *,
    limit: int | None = None,
) -> None:
    """Serve one client over stdin/stdout until it closes stdin.

    `cache` keeps the answers to list requests for the next fast start (see
    `hub.launch.fast_start`); `early` is what that fast start did before the hub was up: input it
    held back (served first) and requests it answered (asked again here; if an answer
    differs, clients get list_changed). Request lines over `limit` bytes are refused.
    """
    session = _Session(server, cache, early)
    with (
        private_stdin(session.initial, session.on_request, limit=limit) as stdin,
        event_loop_stdout(session.on_answer) as stdout,
    ):
        await session.serve(stdin, stdout)


async def serve_fds(
    server: HubServer,
    in_fd: int,
    out_fd: int,
    *,
    cache: AnswerCache | None = None,
    early: EarlyAnswers | None = None,
    replay: bytes = b"",
    swallow: set[Any] | None = None,
    events: Events | None = None,
    journal: Journal | None = None,
    limit: int | None = None,
    skip_first: bool = False,
) -> None:
    """Serve one client on descriptors handed over by its bridge (`hub.launch.shared_process`), until input
    ends, as `serve_stdio` does on stdin/stdout. `replay` is read first (a dead process's
    handshake, replayed by the bridge); answers to the requests in `swallow` are not written
    (the client had them), nor the acknowledgements of those subscriptions. The bridge hears
    of what is read (`journal`) and written (`events`); lines over `limit` bytes are refused;
    `skip_first`: the input begins inside a line a dead process had begun (dropped)."""
    session = _Session(server, cache, early, replay=replay, swallow=swallow, events=events)
    terminal = os.isatty(out_fd)  # left blocking (the user's terminal): written from a thread
    if pollable(out_fd) and not terminal:
        os.set_blocking(out_fd, False)
    reader = LineReader(
        in_fd, session.initial, session.on_request, limit=limit, journal=journal, skip_first=skip_first
    )
    await session.serve(reader, FdWriter(out_fd, session.on_answer, threaded=terminal))


class _Session:
    """One client's session on lines: the fast start's checks, the answer cache, and what the
    bridge is told and spared (see `serve_fds`)."""

    def __init__(
        self,
        server: HubServer,
        cache: AnswerCache | None,
        early: EarlyAnswers | None,
        *,
        replay: bytes = b"",
        swallow: set[Any] | None = None,
        events: Events | None = None,
    ) -> None:
        self.server = server
        self.cache = cache
        self.events = events
        self.swallow = set(swallow or ())
        checks = check_requests(early) if early is not None else []
        self.check_ids = {request_id for request_id, _ in checks}
        self.changed: set[str] = set()
        self.acknowledged = set(early.acknowledged) if early is not None else set()
        self.initial = (
            replay + (early.held if early else b"") + b"".join(line.encode() + b"\n" for _, line in checks)
        )
        if early is not None and early.answered:
            log.info("answered list requests from the last run while starting", requests=len(early.answered))

    def on_request(self, line: str) -> None:
        """Each line as it is read (before anything answers it): the answer cache sees
        requests (the bridge heard of them before they were read: the reader's journal)."""
        if self.cache is not None:
            self.cache.saw_request(line)

    def on_answer(self, line: str) -> bool:
        """Keep answers for the next start; False drops the line (a check's answer, error or
        not; a second acknowledgement of a subscription the fast start acknowledged; an answer
        the client had)."""
        if self.swallow and not self._spared(line):
            return False
        if self.cache is None:
            return True
        seen = self.cache.saw_answer(line)
        if seen is None:
            return True
        request_id, key, differs = seen
        if differs:
            self.cache.save()
        if differs is not None and request_id in self.acknowledged and key.startswith(f"{LISTEN}|"):
            self.acknowledged.discard(request_id)
            return False
        if request_id not in self.check_ids:
            return True
        self.check_ids.discard(request_id)
        kind = TRACKED.get(key.split("|", 1)[0])
        if differs and kind:
            self.changed.add(kind)
        if not self.check_ids:
            for item in sorted(self.changed):
                self.server.notify_changed(item)  # type: ignore[arg-type]
            if self.changed:
                log.info(
                    "the start-up answers were out of date; clients were told", lists=sorted(self.changed)
                )
        return False

    def _spared(self, line: str) -> bool:
        """False for an answer to a replayed request, or the acknowledgement of a replayed listen."""
        try:
            message = json.loads(line)
        except ValueError:
            return True
        if not isinstance(message, dict):
            return True
        if "method" not in message:
            request_id = message.get("id")
            if not valid_id(request_id):
                return True
            # A replayed listen that is answered has ended: no acknowledgement will follow.
            self.swallow.discard(("ack", request_id))
            if request_id in self.swallow:
                self.swallow.discard(request_id)
                return False
            return True
        if message.get("method") == ACKNOWLEDGED:
            subscription = ((message.get("params") or {}).get("_meta") or {}).get(SUBSCRIPTION_KEY)
            if ("ack", subscription) in self.swallow:
                self.swallow.discard(("ack", subscription))
                return False
        return True

    async def serve(self, reader: LineReader, writer: FdWriter) -> None:
        server = self.server
        try:
            async with stdio_transport(reader, writer, server.dispatch, self.events) as (read, write):
                await server.mcp.run(read, write, server.mcp.create_initialization_options())
        finally:
            if self.cache is not None:
                with contextlib.suppress(OSError):
                    self.cache.save()
