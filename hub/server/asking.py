"""How a tool call reaches the client that made it: questions (sampling, elicitation, roots) and
log messages, in the client's protocol era (the `ClientChannel` a `hub.ToolCall` holds).

- **Handshake era** (`CallChannel`): a question is a JSON-RPC request to the client on the
  call's own channel (its SSE stream on streamable HTTP), sent by the SDK session or, on the
  line transports, by `LinePusher` (the shortcut answers those calls without the SDK); log
  messages go the same way, filtered by the level the client set (`logging/setLevel`). A URL
  elicitation without an `elicitationId` (a 2026-07-28 server's) gets one, which this era needs.
- **2026-07-28** (`Parking`, SEP-2322): the era has no requests to the client. A call whose
  client declared sampling, elicitation or roots runs in a task of its own; when it asks, the
  `tools/call` is answered with an `input_required` result carrying the questions and a
  `requestState` token, and the call waits, parked, until the client calls again with the
  answers (`inputResponses`) and the token; then the hub waits for the call's next question or
  its result. The token is random (unguessable) and bound to the tool and its arguments; a
  call whose client does not come back within `PARK_TTL_S` is cancelled (downstream too).
  Log messages and progress ride the round in progress; those sent between rounds wait for
  the next one.

`ClientState` is what the hub keeps of one client connection for this: declared capabilities,
log level, how to reach it outside a call.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.lowlevel
import mcp_types as types
import structlog
from mcp.shared.exceptions import MCPError

from hub.wire.jsonrpc import ProgressFn
from hub.wire.levels import LOG_LEVELS, level_passes

__all__ = [
    "ASKING",
    "PARK_PREFIX",
    "PARK_TTL_S",
    "CallChannel",
    "ClientState",
    "Inbound",
    "LinePusher",
    "Parking",
    "askable",
]

log = structlog.get_logger("hub.server")

#: Client capabilities a tool call may ask of.
ASKING = ("sampling", "elicitation", "roots")
PARK_PREFIX = "hub.parked."
PARK_TTL_S = 300.0  # a parked call waits this long for the client's answers, then is cancelled
SETTLE_CHECKPOINTS = 8  # scheduler turns a round waits for more questions asked at the same time
LOG_BACKLOG = 100  # log messages kept for the next round of a parked call
STANDALONE_WAIT_S = 60.0  # for a client's answer to a request outside any call

Request = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]
Notify = Callable[[str, dict[str, Any]], Awaitable[None]]


def askable(capabilities: dict[str, Any]) -> bool:
    """Whether a client with `capabilities` can be asked anything."""
    return any(kind in capabilities for kind in ASKING)


@dataclass(eq=False)
class ClientState:
    """One client connection to the hub (the key of its session: compared by identity)."""

    capabilities: dict[str, Any] = field(default_factory=dict)  # declared at initialize
    modern: bool = False  # speaks 2026-07-28 (a line connection's first request says)
    log_level: str | None = None  # from logging/setLevel
    request: Request | None = None  # a request outside any call (the standalone channel)
    notify: Notify | None = None  # a notification outside any call
    open: bool = True
    subscriptions: set[str] = field(default_factory=set)  # resource URIs (resources/subscribe)
    on_close: list[Callable[[ClientState], Awaitable[None]]] = field(default_factory=list)

    def __hash__(self) -> int:
        return id(self)

    async def close(self) -> None:
        """The connection ended: whoever kept something of it is told (once)."""
        if not self.open:
            return
        self.open = False
        callbacks, self.on_close = self.on_close, []
        for callback in callbacks:
            try:
                await callback(self)
            except Exception:
                log.exception("cleaning up after a client failed")


@dataclass
class Inbound:
    """One `tools/call` request's client: what a channel needs to reach it."""

    modern: bool
    capabilities: dict[str, Any]
    log_level: str | None
    state: ClientState | None = None
    request: Request | None = None  # a request on this call's channel (handshake era)
    notify: Notify | None = None  # a notification on this call's channel
    progress: ProgressFn | None = None


def _url_elicitation_id(method: str, params: dict[str, Any], *, modern: bool) -> dict[str, Any]:
    """A URL elicitation as the client's era wants it: with an `elicitationId` for the handshake
    era (a 2026-07-28 server sends none), without one for 2026-07-28 (which removed it)."""
    if method != "elicitation/create" or params.get("mode") != "url":
        return params
    if modern:
        return {k: v for k, v in params.items() if k != "elicitationId"}
    if params.get("elicitationId"):
        return params
    return {**params, "elicitationId": uuid.uuid4().hex}


def _log_passes(params: dict[str, Any], level: str | None, *, required: bool) -> bool:
    if level is None:
        return not required
    return level_passes(params.get("level"), level) if level in LOG_LEVELS else True


class CallChannel:
    """A call's way to its client when it is not parked (see the module docstring): in the
    handshake era questions and log messages go on the call's channel; a 2026-07-28 client
    whose call is not parked (it declared nothing to ask) gets the log messages of its level."""

    def __init__(self, inbound: Inbound) -> None:
        self.inbound = inbound

    @property
    def session_key(self) -> Hashable | None:
        return self.inbound.state

    @property
    def capabilities(self) -> dict[str, Any]:
        return self.inbound.capabilities

    @property
    def log_level(self) -> str | None:
        return self.inbound.log_level

    async def request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        if self.inbound.request is None or self.inbound.modern:
            raise MCPError(types.INVALID_REQUEST, f"this call's client cannot be sent {method} now")
        try:
            return await self.inbound.request(method, _url_elicitation_id(method, params, modern=False))
        except MCPError:
            raise
        except Exception as exc:  # no back channel (a request answered as plain JSON), a closed stream
            raise MCPError(types.INVALID_REQUEST, f"the client cannot be sent {method} here: {exc}") from None

    async def notify_log(self, params: dict[str, Any]) -> None:
        if self.inbound.notify is not None and _log_passes(
            params, self.inbound.log_level, required=self.inbound.modern
        ):
            await self.inbound.notify("notifications/message", params)

    def outside(self) -> CallChannel | None:
        state = self.inbound.state
        if self.inbound.modern or state is None or not state.open or state.request is None:
            return None
        return _StandaloneChannel(state)


class _StandaloneChannel(CallChannel):
    """A handshake-era client outside any call: its connection's standalone channel. Log
    messages reach it only if it asked for a level."""

    def __init__(self, state: ClientState) -> None:
        super().__init__(
            Inbound(False, state.capabilities, state.log_level, state, state.request, state.notify)
        )

    @property
    def log_level(self) -> str | None:
        return self.inbound.state.log_level if self.inbound.state is not None else None

    async def request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        # Outside a call nothing ends the wait for the client (an HTTP client without its GET
        # stream never gets the request): bounded.
        with anyio.move_on_after(STANDALONE_WAIT_S):
            return await super().request(method, params)
        raise MCPError(
            types.REQUEST_TIMEOUT, f"the client did not answer {method} within {STANDALONE_WAIT_S:g} s"
        )

    async def notify_log(self, params: dict[str, Any]) -> None:
        if self.inbound.notify is not None and _log_passes(params, self.log_level, required=True):
            await self.inbound.notify("notifications/message", params)


class LinePusher:
    """Requests to a client on a line transport (stdio, the shared socket), outside the SDK: one
    line out with an id of the hub's own (``hub-N``, never one the SDK session uses), the
    answer taken from the input (`answer`) before the SDK sees it."""

    def __init__(self, emit: Callable[[str], Awaitable[None]]) -> None:
        self._emit = emit
        self._ids = itertools.count(1)
        self._waiting: dict[str, tuple[anyio.Event, list[dict[str, Any]]]] = {}
        self.closed = False

    async def request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        if self.closed:
            raise MCPError(types.CONNECTION_CLOSED, "the client's connection closed")
        request_id = f"hub-{next(self._ids)}"
        event, box = self._waiting[request_id] = (anyio.Event(), [])
        line = json.dumps({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params})
        try:
            await self._emit(line + "\n")
            await event.wait()
        finally:
            self._waiting.pop(request_id, None)
        answer = box[0]
        if "result" in answer and isinstance(answer["result"], dict):
            result: dict[str, Any] = answer["result"]
            return result
        error = answer.get("error")
        if not isinstance(error, dict):
            error = {}
        code = error.get("code")
        raise MCPError(
            code if type(code) is int else types.INTERNAL_ERROR,
            str(error.get("message", "")),
            error.get("data"),
        )

    async def notify(self, method: str, params: dict[str, Any]) -> None:
        if not self.closed:
            await self._emit(json.dumps({"jsonrpc": "2.0", "method": method, "params": params}) + "\n")

    def answer(self, line: str) -> bool:
        """Whether `line` answered one of this pusher's requests (it is taken, then)."""
        if not self._waiting or '"hub-' not in line:
            return False
        try:
            message = json.loads(line)
        except (ValueError, RecursionError):
            return False
        if type(message) is not dict or "method" in message:
            return False
        waiting = self._waiting.get(message.get("id"))  # type: ignore[arg-type]
        if waiting is None:
            return False
        event, box = waiting
        if not box:
            box.append(message)
            event.set()
        return True

    def close(self) -> None:
        """The connection ended: requests still waiting fail."""
        self.closed = True
        for event, box in self._waiting.values():
            if not box:
                box.append(
                    {"error": {"code": types.CONNECTION_CLOSED, "message": "the client's connection closed"}}
                )
                event.set()


# -- 2026-07-28: parked calls -----------------------------------------------------------------


@dataclass
class _Question:
    method: str
    params: dict[str, Any]
    answered: anyio.Event = field(default_factory=anyio.Event)
    answer: Any = None
    sent: bool = False


class _Parked:
    """One call of a 2026-07-28 client that may ask it questions (see `Parking`)."""

    def __init__(self, token: str, tool: str, digest: str, ttl_s: float) -> None:
        self.token = token
        self.tool = tool
        self.digest = digest
        self.ttl_s = ttl_s
        self.scope = anyio.CancelScope()
        self.questions: dict[str, _Question] = {}
        self.keys = itertools.count(1)
        self.changed = anyio.Event()
        self.result: dict[str, Any] | None = None
        self.round: Inbound | None = None
        self.backlog: list[dict[str, Any]] = []
        self.expires_at = float("inf")

    def poke(self) -> None:
        self.changed.set()

    async def attach(self, inbound: Inbound) -> None:
        """A round of the client's begins: its log messages and progress ride it."""
        self.round = inbound
        backlog, self.backlog = self.backlog, []
        for params in backlog:
            await self.send_log(params)

    async def send_log(self, params: dict[str, Any]) -> None:
        current = self.round
        if current is None:
            self.backlog = [*self.backlog[-(LOG_BACKLOG - 1) :], params]
        elif current.notify is not None and _log_passes(params, current.log_level, required=True):
            await current.notify("notifications/message", params)

    async def progress(self, done: float, total: float | None, message: str | None) -> None:
        current = self.round
        if current is not None and current.progress is not None:
            await current.progress(done, total, message)


class _ParkedChannel:
    """A parked call's way to its client: questions become `input_required` rounds."""

    def __init__(self, parked: _Parked, inbound: Inbound, expire: Callable[[_Parked], None]) -> None:
        self.parked = parked
        self.inbound = inbound
        self.expire = expire

    @property
    def session_key(self) -> Hashable | None:
        return self.inbound.state

    @property
    def capabilities(self) -> dict[str, Any]:
        current = self.parked.round
        return current.capabilities if current is not None else self.inbound.capabilities

    @property
    def log_level(self) -> str | None:
        current = self.parked.round
        return current.log_level if current is not None else self.inbound.log_level

    async def request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        parked = self.parked
        key = f"q{next(parked.keys)}"
        question = parked.questions[key] = _Question(method, _url_elicitation_id(method, params, modern=True))
        parked.poke()
        with anyio.move_on_after(parked.ttl_s):
            await question.answered.wait()
        parked.questions.pop(key, None)
        if not question.answered.is_set():
            self.expire(parked)  # the call is cancelled here, as if its client had cancelled it
            await anyio.lowlevel.checkpoint()
            raise MCPError(
                types.REQUEST_TIMEOUT,
                f"the client did not answer {method} within {parked.ttl_s:g} s; the call is cancelled",
            )
        if not isinstance(question.answer, dict):
            raise MCPError(types.INVALID_PARAMS, f"the client's answer to {method} is not an object")
        return question.answer

    async def notify_log(self, params: dict[str, Any]) -> None:
        await self.parked.send_log(params)

    def outside(self) -> None:
        return None  # a 2026-07-28 client is reached only within a call


Execute = Callable[[ProgressFn, Any], Awaitable[dict[str, Any]]]


class Parking:
    """The parked calls of 2026-07-28 clients (see the module docstring).

    `start` runs a call in a task of its own (`spawn`: the hub's task group) and gives the
    first answer: the result, or `input_required`; `resume` takes a retry's answers to a parked
    call and gives the next answer."""

    def __init__(self, spawn: Callable[..., None], ttl_s: float = PARK_TTL_S) -> None:
        self.spawn = spawn
        self.ttl_s = ttl_s
        self.parked: dict[str, _Parked] = {}

    @staticmethod
    def digest(tool: str, arguments: Any) -> str:
        text = json.dumps([tool, arguments], sort_keys=True, ensure_ascii=False, default=str)
        return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()

    async def start(self, tool: str, arguments: Any, inbound: Inbound, execute: Execute) -> dict[str, Any]:
        token = PARK_PREFIX + secrets.token_urlsafe(24)
        parked = _Parked(token, tool, self.digest(tool, arguments), self.ttl_s)
        await parked.attach(inbound)
        channel = _ParkedChannel(parked, inbound, self.cancel)

        async def run() -> None:
            with parked.scope:
                try:
                    parked.result = await execute(parked.progress, channel)
                except Exception as exc:  # forward() turns failures into results; this is a bug
                    log.exception("a parked call failed", tool=tool)
                    parked.result = _error(f"{tool} failed: {exc}")
            if parked.result is None:
                parked.result = _error(f"{tool} was cancelled")
            parked.poke()

        self.spawn(run, name=f"hub:parked {tool}")
        return await self._next(parked)

    async def resume(
        self, tool: str, arguments: Any, params: dict[str, Any], inbound: Inbound
    ) -> dict[str, Any]:
        token = params.get("requestState")
        parked = self.parked.get(token) if isinstance(token, str) else None
        if parked is None or time.monotonic() > parked.expires_at:
            raise MCPError(
                types.INVALID_PARAMS,
                f"requestState is unknown or expired (a call waits {self.ttl_s:g} s for its answers); call {tool} again",
            )
        if parked.tool != tool or parked.digest != self.digest(tool, arguments):
            raise MCPError(
                types.INVALID_PARAMS, "requestState belongs to another call: send the same tool and arguments"
            )
        responses = params.get("inputResponses")
        for key, answer in (responses if isinstance(responses, dict) else {}).items():
            question = parked.questions.get(key)
            if question is not None and question.sent and not question.answered.is_set():
                question.answer = answer
                question.answered.set()
        await parked.attach(inbound)
        return await self._next(parked)

    async def _next(self, parked: _Parked) -> dict[str, Any]:
        """The call's result, or its questions not yet answered as an `input_required` result."""
        self.parked.pop(parked.token, None)
        try:
            while True:
                if parked.result is not None:
                    return parked.result
                waiting = {k: q for k, q in parked.questions.items() if not q.answered.is_set()}
                if waiting:
                    for _ in range(SETTLE_CHECKPOINTS):  # questions asked together go together
                        await anyio.lowlevel.checkpoint()
                    return self._park(parked)
                parked.changed = anyio.Event()
                await parked.changed.wait()
        except BaseException:  # the client gave up on the call (cancelled), or the hub stops
            self.cancel(parked)
            raise

    def _park(self, parked: _Parked) -> dict[str, Any]:
        requests = {}
        for key, question in parked.questions.items():
            if not question.answered.is_set():
                question.sent = True
                requests[key] = {"method": question.method, "params": question.params}
        parked.round = None
        parked.expires_at = time.monotonic() + self.ttl_s
        self.parked[parked.token] = parked
        self._expire()
        return {"resultType": "input_required", "inputRequests": requests, "requestState": parked.token}

    def cancel(self, parked: _Parked) -> None:
        """End a parked call: its token is forgotten and its task cancelled."""
        self.parked.pop(parked.token, None)
        parked.scope.cancel()

    def _expire(self) -> None:
        now = time.monotonic()
        for parked in list(self.parked.values()):
            if now > parked.expires_at:
                self.cancel(parked)


def _error(text: str) -> dict[str, Any]:
    return {"content": [{"type": "text", "text": text}], "isError": True}
