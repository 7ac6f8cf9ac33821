"""JSON-RPC hygiene in front of the SDK: every malformed message gets the error the spec names.

The SDK's transports parse each incoming message with pydantic; a message that fails (not JSON,
a lone UTF-16 surrogate, nesting past the parser's limit, a batch array, ``"jsonrpc": "1.0"``,
``params`` that is not an object, an id of the wrong type) becomes an exception the server drops,
so the client waits forever. `MessageCheck` sits between the wire and the SDK, for stdio and
HTTP alike: a message the SDK parses goes through untouched (the common case costs nothing
extra), one it cannot parse is diagnosed here and answered with

- ``-32700`` parse error: not JSON, or not UTF-8;
- ``-32600`` invalid request: not an object, a batch array (MCP has none since 2025-06-18),
  ``jsonrpc`` other than ``"2.0"``, a missing or non-string ``method``, an id that is not a
  string or integer; and, over stdio, a handshake-era request before ``initialize``;
- ``-32602`` invalid params: ``params`` not an object, a lone surrogate in a string, nesting
  deeper than `MAX_DEPTH`;

with the request's id whenever it can be recovered, else ``null``. Notifications (no id) that
are malformed are dropped with a log line, as JSON-RPC forbids answering them.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

import mcp_types as types
import structlog
from mcp.shared.message import SessionMessage

from hub.wire.envelope import VERSION_KEY
from hub.wire.jsonrpc import error_response, valid_id

__all__ = ["MAX_DEPTH", "MessageCheck", "diagnose", "problem_in"]

log = structlog.get_logger("hub.protocol")

PARSE_ERROR = types.PARSE_ERROR
INVALID_REQUEST = types.INVALID_REQUEST
INVALID_PARAMS = types.INVALID_PARAMS
# The SDK's JSON parser (jiter) stops at 200 levels, the envelope included.
MAX_DEPTH = 190
# Requests a handshake-era client may send before `initialize` (the modern era needs none).
BEFORE_INITIALIZE = {"initialize", "ping", "server/discover"}
_ID_AT_TOP = re.compile(
    r'^\s*\{\s*(?:"[^"\\]*"\s*:\s*(?:"[^"\\]*"|[-\d.eE+]+)\s*,\s*)*"id"\s*:\s*("[^"\\]*"|-?\d+)'
)


def _recover_id(text: str) -> Any:
    """The id of a message too broken to parse, when it stands near the start of the object."""
    found = _ID_AT_TOP.match(text[:4096])
    if found is None:
        return None
    try:
        value = json.loads(found.group(1))
    except ValueError:
        return None
    return value if valid_id(value) else None


def problem_in(value: Any) -> tuple[str, str] | None:
    """(where, what) for the first lone surrogate or too-deep nesting in a parsed value."""
    stack: list[tuple[Any, str, int]] = [(value, "", 0)]
    while stack:
        item, where, depth = stack.pop()
        if depth > MAX_DEPTH:
            return where or "(message)", f"JSON nested deeper than {MAX_DEPTH} levels"
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError as exc:
                return (
                    where or "(message)",
                    f"a string holds a lone UTF-16 surrogate ({item[exc.start]!r}); send valid Unicode",
                )
        elif isinstance(item, dict):
            for key, child in item.items():
                stack.append((key, where, depth + 1))
                stack.append((child, f"{where}.{key}" if where else str(key), depth + 1))
        elif isinstance(item, list):
            for index, child in enumerate(item):
                stack.append((child, f"{where}[{index}]", depth + 1))
    return None


def diagnose(text: str) -> list[dict[str, Any]] | dict[str, Any] | None:
    """The error answer(s) for a message the SDK could not parse; None for a broken notification
    (never answered). A batch array gets an array: one error per request in it."""
    try:
        message = json.loads(text)
    except RecursionError:
        return error_response(
            _recover_id(text), INVALID_PARAMS, f"JSON nested deeper than {MAX_DEPTH} levels"
        )
    except ValueError as exc:
        return error_response(_recover_id(text), PARSE_ERROR, f"parse error: not valid JSON ({exc})")
    if isinstance(message, list):
        if not message:
            return error_response(None, INVALID_REQUEST, "invalid request: an empty batch array")
        answers = [
            error_response(
                item.get("id") if isinstance(item, dict) and valid_id(item.get("id")) else None,
                INVALID_REQUEST,
                "invalid request: JSON-RPC batch arrays are not supported by MCP; send one message per line",
            )
            for item in message
            if not (isinstance(item, dict) and "method" in item and "id" not in item)
        ]
        return answers or None
    if not isinstance(message, dict):
        return error_response(None, INVALID_REQUEST, "invalid request: a message must be a JSON object")
    return _check_object(message)


def _check_object(message: dict[str, Any]) -> dict[str, Any] | None:
    has_id = "id" in message
    request_id = message.get("id")
    answer_id = request_id if valid_id(request_id) else None
    is_reply = "method" not in message and ("result" in message or "error" in message)
    problem: tuple[int, str] | None = None
    if message.get("jsonrpc") != "2.0":
        problem = (
            INVALID_REQUEST,
            f'invalid request: jsonrpc must be "2.0" (got {json.dumps(message.get("jsonrpc"))[:40]})',
        )
    elif has_id and not valid_id(request_id):
        problem = (INVALID_REQUEST, "invalid request: id must be a string or an integer")
    elif not is_reply and not isinstance(message.get("method"), str):
        problem = (INVALID_REQUEST, "invalid request: method must be a string")
    elif "params" in message and not isinstance(message["params"], dict):
        problem = (
            INVALID_PARAMS,
            f"invalid params: params must be an object (got {type(message['params']).__name__})",
        )
    else:
        found = problem_in(message)
        if found is not None:
            where, what = found
            where = where if len(where) <= 80 else where[:60] + "...(deeper)"
            problem = (INVALID_PARAMS, f"invalid params: {where}: {what}")
    if problem is None:
        problem = (INVALID_REQUEST, "invalid request: not a JSON-RPC 2.0 request, notification or response")
    if not has_id and isinstance(message.get("method"), str):
        log.warning("dropped a malformed notification", method=message["method"], problem=problem[1])
        return None
    if is_reply:
        log.warning("dropped a malformed response", problem=problem[1])
        return None
    return error_response(answer_id, *problem)


@dataclass
class MessageCheck:
    """Parses one incoming message for the SDK or answers it. One per connection: over stdio it
    also remembers whether a handshake-era client said `initialize`."""

    track_initialize: bool = False
    initialized: bool = False
    _adapter: Any = field(default=types.jsonrpc_message_adapter, repr=False)

    def parse(self, text: str) -> tuple[SessionMessage | None, Any]:
        """(message for the SDK, None) or (None, answer to send back; None to send nothing)."""
        try:
            message = self._adapter.validate_json(text, by_name=False)
        except ValueError:
            return None, diagnose(text)
        if isinstance(message, types.JSONRPCNotification) and '"id"' in text:
            # The SDK reads a request with an id of the wrong type (null, 1.5, true, {}) as a
            # notification, so it would never be answered.
            try:
                raw = json.loads(text)
            except ValueError:  # pragma: no cover - the SDK parsed it
                raw = None
            if isinstance(raw, dict) and "id" in raw:
                return None, _check_object(raw)
        if isinstance(message, types.JSONRPCResponse | types.JSONRPCError) and '"method"' in text:
            # A request that also carries `result` or `error` reads as a response, which the SDK
            # would drop: the request would never be answered.
            try:
                raw = json.loads(text)
            except ValueError:  # pragma: no cover - it parsed above
                raw = None
            if isinstance(raw, dict) and isinstance(raw.get("method"), str):
                key = "result" if "result" in raw else "error"
                return None, error_response(
                    message.id,
                    INVALID_REQUEST,
                    f"invalid request: a request ({raw['method']}) cannot carry {key!r}; send it without",
                )
        if self.track_initialize and isinstance(message, types.JSONRPCRequest):
            if message.method == "initialize":
                self.initialized = True
            elif not self.initialized and message.method not in BEFORE_INITIALIZE:
                meta = (message.params or {}).get("_meta")
                if not (isinstance(meta, dict) and VERSION_KEY in meta):
                    return None, error_response(
                        message.id,
                        INVALID_REQUEST,
                        f"the session is not initialized: send initialize before {message.method} "
                        "(or use protocol 2026-07-28, which needs no handshake)",
                    )
        return SessionMessage(message), None
