"""Where the dashboard's data comes from: a shared hub process, asked over its control socket.

Why ask a process rather than read the store: what matters most lives only in that process's
memory (which slot runs what, since when, the queue, each downstream server's state and its
tools' latencies, the sessions connected), and a plugin's panel is rendered by the plugin itself,
which owns its tables. The control socket is already there (`hub status` and `hub stop` use it),
private to its user, and costs nothing while no dashboard asks; the page needs no port of the
shared process, and a dashboard that crashes cannot take it down.

Which process: the one `--hub` names (an instance id), else the launch's own (what `hub serve`
here would bridge to), else the newest on the state directory; the page links to the others.
When none runs, the page shows what the store says (the budget, its chart, the hubs) and says so,
and picks a process up as soon as one starts.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import anyio
import structlog

from hub.launch.control import ControlError, ask

__all__ = ["ACTION_TIMEOUT_S", "Source", "Target"]

log = structlog.get_logger("hub.dashboard")
ACTION_TIMEOUT_S = 30.0  # a pool task's cancel waits for its process to end
ASK_TIMEOUT_S = 5.0
TARGETS_EVERY_S = 3.0

#: A shared process as `hub status` describes it (`hub.cli.status.shared_processes`).
Target = dict[str, Any]


class Source:
    """Snapshots of the chosen hub, cached for `interval_s` so every open page shares them."""

    def __init__(
        self,
        targets: Callable[[], list[Target]],
        *,
        launch_key: str | None = None,
        interval_s: float = 1.0,
        store_view: Callable[[], Any] | None = None,
    ) -> None:
        self._targets_fn = targets
        self.launch_key = launch_key
        self.interval_s = interval_s
        self._store_view = store_view  # async () -> what the store alone shows, when no process answers
        self.targets: list[Target] = []
        self._targets_at = float("-inf")
        self._cache: dict[str | None, tuple[float, dict[str, Any]]] = {}
        self._lock = anyio.Lock()
        self._spend: dict[tuple[str | None, int], dict[str, Any]] = {}

    async def _refresh_targets(self, force: bool = False) -> None:
        if force or time.monotonic() - self._targets_at >= TARGETS_EVERY_S:
            self.targets = await anyio.to_thread.run_sync(self._targets_fn)
            self._targets_at = time.monotonic()

    def choose(self, wanted: str | None) -> Target | None:
        """The target `wanted` names (an instance id), else the launch's, else the newest."""
        answering = [t for t in self.targets if t.get("answers") and t.get("socket")]
        for target in answering:
            if wanted and target.get("instance") == wanted:
                return target
        for target in answering:
            if self.launch_key and target.get("key") == self.launch_key:
                return target
        return max(answering, key=lambda t: -float(t.get("uptime_s") or 0), default=None)

    async def snapshot(self, wanted: str | None = None) -> dict[str, Any]:
        """What the chosen hub shows now (cached for `interval_s`): its answer to ``dashboard``,
        plus ``target`` and ``targets``; or what the store alone says, with ``problem``."""
        async with self._lock:
            cached = self._cache.get(wanted)
            if cached is not None and time.monotonic() - cached[0] < self.interval_s:
                return cached[1]
            snapshot = await self._take(wanted)
            self._cache[wanted] = (time.monotonic(), snapshot)
            return snapshot

    async def _take(self, wanted: str | None) -> dict[str, Any]:
        await self._refresh_targets()
        target = self.choose(wanted)
        problem = None
        if target is not None:
            try:
                answer = await self._ask(target, "dashboard")
            except ControlError as exc:
                problem = str(exc)
                await self._refresh_targets(force=True)
            else:
                return {**answer, "target": target, "targets": self.targets, "problem": self._missing(wanted)}
        snapshot = await self._store_view() if self._store_view is not None else {}
        snapshot["problem"] = problem or (
            "no shared hub process is running for this state directory: start a Claude Code session "
            "(or `hub serve`) with this configuration, and this page follows it"
        )
        return {**snapshot, "target": None, "targets": self.targets}

    def _missing(self, wanted: str | None) -> str | None:
        """What to say when the page asked for a process that is not there (now)."""
        if not wanted or any(t.get("instance") == wanted and t.get("answers") for t in self.targets):
            return None
        return f"no shared hub process {wanted} answers on this state directory: showing another one"

    async def spend_rows(self, snapshot: dict[str, Any], since: datetime) -> list[dict[str, Any]] | None:
        """The ledger by hour since `since`, from the snapshot's hub, asked again only when its
        ledger moved; None when it cannot be had."""
        target = snapshot.get("target")
        if target is None:
            return snapshot.get("spend_rows")
        key = (target.get("instance"), int(snapshot.get("ledger_mark") or 0))
        cached = self._spend.get(key)
        if cached is not None and cached["since"] == since:
            rows: list[dict[str, Any]] = cached["rows"]
            return list(rows)
        try:
            answer = await self._ask(target, "dashboard_spend", since=since.isoformat())
        except ControlError:
            return None
        got = answer.get("rows")
        rows = got if isinstance(got, list) else []
        self._spend = {key: {"since": since, "rows": rows}}
        return list(rows)

    async def act(self, wanted: str | None, **question: Any) -> dict[str, Any]:
        """Run a panel's action on the chosen hub: ``{"ok", "message"}``."""
        await self._refresh_targets()
        target = self.choose(wanted)
        if target is None:
            return {"ok": False, "message": "no shared hub process answers, so nothing was done"}
        try:
            answer = await self._ask(target, "dashboard_action", timeout_s=ACTION_TIMEOUT_S, **question)
        except ControlError as exc:
            return {"ok": False, "message": str(exc)}
        self._cache.clear()  # the next snapshot shows what the action did
        return answer

    async def _ask(
        self, target: Target, question: str, timeout_s: float = ASK_TIMEOUT_S, **params: Any
    ) -> dict[str, Any]:
        def asking() -> dict[str, Any]:
            return ask(target["socket"], question, timeout_s=timeout_s, **params)

        answer = await anyio.to_thread.run_sync(asking)
        if "error" in answer and len(answer) == 1:
            raise ControlError(f"the shared process refused the question: {answer['error']}")
        return answer
