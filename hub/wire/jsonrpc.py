"""Small JSON-RPC helpers both sides use: what a valid request id is, an error response, the
shape of a progress callback (a caller's progress, from a tool up to a client, or from a
downstream server up to the tool that called it), and the id of a message that cannot be read
whole (`recover_id`: a line over the size limit, or not valid UTF-8)."""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Awaitable, Callable
from json.decoder import scanstring  # type: ignore[attr-defined]
from typing import Any, TypeAlias

__all__ = ["NO_ID", "ProgressFn", "error_response", "recover_id", "valid_id"]

#: Where a caller's progress goes: (progress, total, message).
ProgressFn: TypeAlias = Callable[[float, float | None, str | None], Awaitable[None]]


def valid_id(value: Any) -> bool:
    """A JSON-RPC request id as MCP allows it: a string or an integer (not a boolean)."""
    return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


def error_response(request_id: Any, code: int, message: str) -> dict[str, Any]:
    """A JSON-RPC error response object."""
    return {"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": message}}


_NUMBER = re.compile(r"-?(?:0|[1-9]\d*)(?![\d.eE])")
# The top-level id at the very end of a line (`...,"id":7}`): where the TypeScript SDK (Claude
# Code) puts it, after `params`. Only a member of the outermost object ends a line this way.
_TAIL_ID = re.compile(rb'[{,]\s*"id"\s*:\s*(-?(?:0|[1-9]\d*)|"(?:[^"\\]|\\.)*")\s*}\s*$')
NO_ID = object()  # what `recover_id` returns when no id can be found


def recover_id(head: bytes, tail: bytes = b"") -> Any:
    """The request id of a JSON-RPC message known only by its first bytes (`head`) and last
    (`tail`): a line too long to read whole, or not valid UTF-8. `NO_ID` when neither shows a
    valid one (a string or an integer as a member of the outermost object)."""
    found = _id_in_head(head.decode("utf-8", errors="replace"))
    if found is NO_ID and tail:
        match = _TAIL_ID.search(tail)
        if match is not None:
            with contextlib.suppress(ValueError):
                found = json.loads(match.group(1))
    return found if valid_id(found) else NO_ID


def _id_in_head(text: str) -> Any:
    """The value of the outermost object's "id" member, read from the start of `text` (which
    may stop anywhere): scan members at depth 1, stepping over nested values and strings."""
    start = text.find("{")
    if start < 0 or text[:start].strip():
        return NO_ID
    i, depth, key_next, n = start + 1, 1, True, len(text)
    while i < n:
        c = text[i]
        if c == '"':
            try:
                value, end = scanstring(text, i + 1)
            except ValueError:  # the string runs past what is known
                return NO_ID
            if depth == 1 and key_next:
                j = _skip_space(text, end)
                if j >= n or text[j] != ":":
                    return NO_ID
                j = _skip_space(text, j + 1)
                if value == "id":
                    return _scalar_at(text, j)
                key_next, i = False, j
                continue
            i = end
            continue
        if c in "{[":
            depth += 1
        elif c in "}]":
            depth -= 1
            if depth == 0:
                return NO_ID
        elif c == "," and depth == 1:
            key_next = True
        i += 1
    return NO_ID


def _skip_space(text: str, i: int) -> int:
    while i < len(text) and text[i] in " \t\r\n":
        i += 1
    return i


def _scalar_at(text: str, i: int) -> Any:
    if i < len(text) and text[i] == '"':
        try:
            return scanstring(text, i + 1)[0]
        except ValueError:
            return NO_ID
    match = _NUMBER.match(text, i)
    return int(match.group()) if match and match.end() < len(text) else NO_ID
