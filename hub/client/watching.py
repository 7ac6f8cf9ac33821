"""Resources the hub's clients subscribed to, followed on each downstream connection (`Watching`).

The hub subscribes to a resource on the server that serves it when the first of its clients
subscribes, and drops the subscription when the last one leaves (`hub.server.app` counts them;
`watch` / `unwatch` here are per server and URI). Every connection to that server follows the
set for its life, in the server's era:

- a handshake-era server gets `resources/subscribe` and `resources/unsubscribe` as the set
  changes (again for every URI after a restart);
- a 2026-07-28 server gets one `subscriptions/listen` stream carrying list changes and the
  set's URIs; when the set changes a new stream is opened and acknowledged before the old one
  is closed, so no update falls between them (an update may come twice while both are open,
  which is harmless: it says "read it again").

`notifications/resources/updated` and list changes come in on the session's message handler
either way (the SDK tees listen-stream events there), where the hub's plugins hear them.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Any

import anyio
import anyio.abc
import structlog
from mcp import ClientSession
from mcp.client.subscriptions import SubscriptionLost, listen
from mcp.shared.exceptions import MCPDeprecationWarning, MCPError
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

__all__ = ["Watching", "serves_listen"]

log = structlog.get_logger("hub.connections")


def serves_listen(capabilities: Any) -> bool:
    """Whether a 2026-07-28 server serves `subscriptions/listen` (it advertises a list change or
    subscriptions exactly when it does)."""
    if capabilities is None:
        return False
    return any(
        getattr(part, "list_changed", None) or getattr(part, "subscribe", None)
        for part in (capabilities.tools, capabilities.prompts, capabilities.resources)
        if part is not None
    )


class Watching:
    """The resource URIs to follow on each server, and the connections following them."""

    def __init__(self) -> None:
        self.uris: dict[str, set[str]] = {}
        self._changed: dict[str, anyio.Event] = {}

    def watch(self, server: str, uri: str) -> None:
        """Follow `uri` on `server` from now on (its connections subscribe)."""
        self._update(server, lambda uris: uris.add(uri))

    def unwatch(self, server: str, uri: str) -> None:
        """Stop following `uri` on `server`."""
        self._update(server, lambda uris: uris.discard(uri))

    def _update(self, server: str, change: Any) -> None:
        uris = self.uris.setdefault(server, set())
        before = set(uris)
        change(uris)
        changed = self._changed.pop(server, None) if uris != before else None
        if changed is not None:
            changed.set()

    def _next_change(self, server: str) -> anyio.Event:
        return self._changed.setdefault(server, anyio.Event())

    async def follow(self, server: str, session: ClientSession, capabilities: Any) -> None:
        """Keep `session` subscribed to `server`'s watched URIs until cancelled."""
        if session.protocol_version in MODERN_PROTOCOL_VERSIONS:
            if serves_listen(capabilities):
                await self._listen(server, session)
            return
        resources = getattr(capabilities, "resources", None)
        if resources is not None and resources.subscribe:
            await self._subscribe(server, session)

    async def _subscribe(self, server: str, session: ClientSession) -> None:
        applied: set[str] = set()
        while True:
            changed = self._next_change(server)
            wanted = set(self.uris.get(server, ()))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", MCPDeprecationWarning)
                for uri in sorted(wanted - applied):
                    await _quietly(session.subscribe_resource(uri), server, "subscribe", uri)
                for uri in sorted(applied - wanted):
                    await _quietly(session.unsubscribe_resource(uri), server, "unsubscribe", uri)
            applied = wanted
            await changed.wait()

    async def _listen(self, server: str, session: ClientSession) -> None:
        async with anyio.create_task_group() as tg:
            current: anyio.CancelScope | None = None
            while True:
                changed = self._next_change(server)
                wanted = sorted(self.uris.get(server, ()))
                try:
                    scope = await tg.start(self._one_stream, session, wanted)
                except (MCPError, RuntimeError) as exc:
                    log.info("downstream subscriptions/listen refused", server=server, error=str(exc))
                    scope = None
                if current is not None:
                    current.cancel()  # after the new stream was acknowledged: make before break
                current = scope
                await changed.wait()

    @staticmethod
    async def _one_stream(
        session: ClientSession,
        uris: list[str],
        task_status: anyio.abc.TaskStatus[anyio.CancelScope] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        with anyio.CancelScope() as scope:
            async with listen(
                session,
                tools_list_changed=True,
                prompts_list_changed=True,
                resources_list_changed=True,
                resource_subscriptions=uris,
            ) as subscription:
                task_status.started(scope)
                try:
                    async for _ in subscription:  # each event is teed to the session's message handler
                        pass
                except (SubscriptionLost, MCPError) as exc:
                    log.info("downstream subscriptions/listen stream ended", error=str(exc))


async def _quietly(request: Any, server: str, what: str, uri: str) -> None:
    with contextlib.suppress(MCPError):
        try:
            await request
        except MCPError as exc:
            log.info(f"downstream resources/{what} refused", server=server, uri=uri, error=str(exc))
            raise
