"""`call_tool_raw`: a `tools/call` on a downstream session as plain JSON-RPC, its result the dict
the server sent, without the SDK's per-call pydantic work.

For a stdio server the connection cache started, the request goes straight onto the server's
stdin (`hub.client.stdio.StdioDownstream`, registered here by `attach_stdio`) and its answer is
matched as it is read; for any other session it goes out on the session's own dispatcher
(`hub.client.sdk`).
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from typing import Any

import anyio
from mcp import ClientSession
from mcp.shared.exceptions import MCPError
from mcp.shared.inbound import MCP_NAME_HEADER, encode_header_value
from mcp.types import INTERNAL_ERROR, REQUEST_TIMEOUT
from mcp_types import LOG_LEVEL_META_KEY
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

import hub.telemetry as telemetry
from hub.client.asking import MAX_INPUT_ROUNDS, STATE_ONLY_WAIT_S, Caller, answer_inputs
from hub.client.sdk import send_raw_request, stamp_request
from hub.client.stdio import StdioDownstream
from hub.wire.jsonrpc import ProgressFn

__all__ = ["attach_stdio", "call_tool_raw"]

# The lean client under each session of a stdio server the cache started: `call_tool_raw` sends
# past the session on it. Weak: an entry goes with its session.
_STDIO: weakref.WeakKeyDictionary[ClientSession, StdioDownstream] = weakref.WeakKeyDictionary()


def attach_stdio(session: ClientSession, downstream: StdioDownstream) -> None:
    """Send `session`'s raw calls straight onto `downstream`'s stdin from now on."""
    _STDIO[session] = downstream


async def call_tool_raw(
    session: ClientSession,
    name: str,
    arguments: Mapping[str, Any] | None,
    *,
    progress: ProgressFn | None = None,
    timeout_s: float | None = None,
    caller: Caller | None = None,
) -> dict[str, Any]:
    """`tools/call` on `session` as plain JSON-RPC: the result as the server sent it (a dict).

    The request is stamped for the negotiated protocol version as the session would stamp it;
    progress reaches `progress`; a caller that is cancelled, or `timeout_s` passing, sends
    `notifications/cancelled`. No request or result model, no per-version re-validation of the
    result, no output-schema check (a server's `validate_output` option asks for that path).
    A 2026-07-28 server that answers `input_required` has its questions put to `caller` (the
    hub's client whose call this is: `hub.client.asking`) and the call retried with the answers,
    up to `MAX_INPUT_ROUNDS` times; the client's log level goes with each request.
    Raises `MCPError` like `ClientSession.call_tool` (`CONNECTION_CLOSED` when the server went
    away, `REQUEST_TIMEOUT` after `timeout_s`).
    """
    params: dict[str, Any] = {"name": name}
    if arguments is not None:
        params["arguments"] = arguments
    level = caller.log_level if caller is not None else None
    if level is not None and session.protocol_version in MODERN_PROTOCOL_VERSIONS:
        params["_meta"] = {LOG_LEVEL_META_KEY: level}
    result = await _send(session, name, params, progress, timeout_s, caller)
    rounds = 0
    while result.get("resultType") == "input_required":
        rounds += 1
        if rounds > MAX_INPUT_ROUNDS:
            raise MCPError(
                INTERNAL_ERROR,
                f"tool {name!r} asked for input more than {MAX_INPUT_ROUNDS} times in one call",
            )
        requests = result.get("inputRequests")
        retry = dict(params)
        if requests:
            retry["inputResponses"] = await answer_inputs(caller, name, requests)
        else:  # only state: the server is still working; ask again shortly
            await anyio.sleep(STATE_ONLY_WAIT_S[min(rounds, len(STATE_ONLY_WAIT_S)) - 1])
        if "requestState" in result:
            retry["requestState"] = result["requestState"]
        result = await _send(session, name, retry, progress, timeout_s, caller)
    return result


async def _send(
    session: ClientSession,
    name: str,
    params: dict[str, Any],
    progress: ProgressFn | None,
    timeout_s: float | None,
    caller: Caller | None = None,
) -> dict[str, Any]:
    """One `tools/call` request (see `call_tool_raw`); `params` gets the stamp (a retry's again)."""
    opts: dict[str, Any] = {}
    stamp_request(session, "tools/call", params, opts)  # protocol version header or _meta
    lean = _STDIO.get(session)
    if lean is not None and telemetry.STATE.on:  # the SDK's session path traces itself
        with telemetry.downstream_span(name, params):
            return await _send_lean(lean, params, progress, timeout_s, caller)
    if lean is not None:  # a stdio server the cache started: past the session, on its pipe
        if timeout_s is None:
            return await lean.request("tools/call", params, progress=progress, caller=caller)
        with anyio.move_on_after(timeout_s):
            return await lean.request("tools/call", params, progress=progress, caller=caller)
        raise MCPError(REQUEST_TIMEOUT, "Request 'tools/call' timed out")  # the SDK's words
    headers = opts.setdefault("headers", {})
    headers.setdefault(MCP_NAME_HEADER, encode_header_value(name))
    if timeout_s is not None:
        opts["timeout"] = timeout_s
    if progress is not None:
        opts["on_progress"] = progress
    return await send_raw_request(session, "tools/call", params, opts)


async def _send_lean(
    lean: StdioDownstream,
    params: dict[str, Any],
    progress: ProgressFn | None,
    timeout_s: float | None,
    caller: Caller | None,
) -> dict[str, Any]:
    """`_send`'s stdio path: the request onto the server's own pipe."""
    if timeout_s is None:
        return await lean.request("tools/call", params, progress=progress, caller=caller)
    with anyio.move_on_after(timeout_s):
        return await lean.request("tools/call", params, progress=progress, caller=caller)
    raise MCPError(REQUEST_TIMEOUT, "Request 'tools/call' timed out")  # the SDK's words
