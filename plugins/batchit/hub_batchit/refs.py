"""References from one operation's arguments to the results of others.

Three forms, anywhere in `arguments` (nested in objects and lists too):

- ``{"$ref": "ID"}`` or ``{"$ref": "ID", "path": "structuredContent.items.0"}`` is replaced by a
  value from operation ID's result. The path starts at ``{"content", "structuredContent", "text",
  "isError"}`` (``text`` is the result's text blocks joined by newlines); without a path the value
  is ``structuredContent`` when the result has one, else ``text``. A path step into a string that
  holds JSON parses it first, so ``text.name`` works on a server that answers in JSON text.
- ``{"$text": "Files: {{ls}} (size {{meta.structuredContent.size}})"}`` is replaced by the
  string with each ``{{ID}}`` (the result's text) or ``{{ID.path}}`` filled in (non-strings as
  JSON).
- ``{"$literal": value}`` is replaced by `value`, untouched: the escape for arguments that must
  contain a ``$ref`` key themselves (a JSON Schema, say).

An operation with references waits for the operations it names and is skipped if one of them did
not succeed. Unknown ids and cycles are refused before anything runs.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from .results import Result

PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_-]*)((?:\.[^{}\s.]+)*)\s*\}\}")
REF_KEYS = {"$ref", "path"}


class RefError(ValueError):
    """A malformed reference, or a path that does not lead anywhere."""


@dataclass(frozen=True)
class Ref:
    id: str
    path: tuple[str, ...]
    where: str


def _parse_path(path: Any, where: str) -> tuple[str, ...]:
    if path is None or path == "":
        return ()
    if isinstance(path, str):
        return tuple(path.split("."))
    if isinstance(path, list) and all(isinstance(p, str | int) for p in path):
        return tuple(str(p) for p in path)
    raise RefError(f"{where}: path must be a dotted string such as 'structuredContent.items.0'")


def find_refs(value: Any, where: str) -> Iterator[Ref]:
    """Every reference in `value`, checking each one's form; `where` names the place in errors."""
    if isinstance(value, dict):
        if "$literal" in value:
            if len(value) != 1:
                raise RefError(f"{where}: a $literal object has no other keys")
            return
        if "$ref" in value:
            if not isinstance(value["$ref"], str) or not set(value) <= REF_KEYS:
                raise RefError(
                    f'{where}: a reference is {{"$ref": "ID", "path": "..."}} and nothing else '
                    '(wrap a literal "$ref" object in {"$literal": ...})'
                )
            yield Ref(value["$ref"], _parse_path(value.get("path"), where), where)
            return
        if "$text" in value:
            if len(value) != 1 or not isinstance(value["$text"], str):
                raise RefError(
                    f'{where}: a splice is {{"$text": "... {{{{ID.path}}}} ..."}} and nothing else'
                )
            for match in PLACEHOLDER.finditer(value["$text"]):
                yield Ref(match.group(1), tuple(match.group(2).split(".")[1:]), where)
            return
        for key, item in value.items():
            yield from find_refs(item, f"{where}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from find_refs(item, f"{where}.{i}")


def result_root(result: Result) -> dict[str, Any]:
    """What a reference path starts from."""
    return {
        "content": result.content,
        "structuredContent": result.structured,
        "text": result.text,
        "isError": result.is_error,
    }


def follow(root: dict[str, Any], path: tuple[str, ...], ref_id: str) -> Any:
    if not path:
        return root["structuredContent"] if root["structuredContent"] is not None else root["text"]
    value: Any = root
    walked = ref_id
    for step in path:
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                raise RefError(f"{walked} is text, not JSON, so it has no {step!r}") from None
            except RecursionError:
                raise RefError(f"{walked} is JSON nested too deep to read") from None
        if isinstance(value, dict):
            if step not in value:
                keys = ", ".join(sorted(map(str, value))) or "none"
                raise RefError(f"{walked} has no key {step!r} (keys: {keys})")
            value = value[step]
        elif isinstance(value, list):
            if not step.isdigit():
                raise RefError(f"{walked} is a list; {step!r} is not an index (0, 1, ...)")
            if int(step) >= len(value):
                raise RefError(f"{walked} has {len(value)} items; there is no item {step}")
            value = value[int(step)]
        else:
            raise RefError(f"{walked} is {json.dumps(value)}, which has no {step!r}")
        walked += f".{step}"
    return value


def resolve(value: Any, roots: Mapping[str, dict[str, Any]]) -> Any:
    """`value` with every reference replaced from `roots` (id -> `result_root`)."""
    if isinstance(value, dict):
        if "$literal" in value:
            return value["$literal"]
        if "$ref" in value:
            ref_id = value["$ref"]
            return follow(roots[ref_id], _parse_path(value.get("path"), ""), ref_id)
        if "$text" in value:

            def fill(match: re.Match[str]) -> str:
                ref_id, path = match.group(1), tuple(match.group(2).split(".")[1:])
                found = follow(roots[ref_id], path, ref_id) if path else roots[ref_id]["text"]
                return found if isinstance(found, str) else json.dumps(found, ensure_ascii=False)

            return PLACEHOLDER.sub(fill, value["$text"])
        return {key: resolve(item, roots) for key, item in value.items()}
    if isinstance(value, list):
        return [resolve(item, roots) for item in value]
    return value


def has_refs(value: Any) -> bool:
    """Whether `value` holds any reference or $literal (a quick test to skip `resolve`)."""
    if isinstance(value, dict):
        return bool({"$ref", "$text", "$literal"} & value.keys()) or any(has_refs(v) for v in value.values())
    if isinstance(value, list):
        return any(has_refs(v) for v in value)
    return False
