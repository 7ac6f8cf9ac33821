"""`compact_schema`: a pydantic-generated JSON Schema without what costs a model tokens and tells
it nothing (every tool's schema is sent in every turn)."""

from __future__ import annotations

from typing import Any

__all__ = ["compact_schema"]

# Keywords whose value is a schema, a list of schemas, or a map of name -> schema. Everything
# else (enum, const, default, examples, required) is data and is left alone, so a property that
# happens to be called "title" keeps its name.
_SUBSCHEMA = ("items", "additionalProperties", "not", "if", "then", "else", "contains", "propertyNames")
_SCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
_SCHEMA_MAPS = ("properties", "patternProperties", "$defs", "dependentSchemas")
_DEF_REF = "#/$defs/"


def compact_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """A pydantic-generated JSON Schema without what costs a model tokens and tells it nothing.

    Every tool's schema is sent in every turn, so: no generated `title`s; no
    ``additionalProperties: false`` (unknown arguments are still refused, by name, when the
    arguments are validated against the model); an optional field
    (``X | None = None``) is shown as ``X`` (leaving it out means None, and null is still
    accepted, since pydantic validates the arguments); definitions used once are inlined; the
    model's docstring (the top-level description) is left to the tool's description.
    """
    defs: dict[str, Any] = dict(schema.get("$defs") or {})
    compactor = _Compactor(defs, _inlinable(schema, defs))
    top = {k: v for k, v in schema.items() if k != "$defs"}
    ref = top.pop("$ref", None)
    if isinstance(ref, str) and ref.startswith(_DEF_REF):  # a recursive model: the body is a def
        top = {**defs[ref[len(_DEF_REF) :]], **top}
    top.pop("description", None)
    result = compactor.clean(top)
    kept = {name: compactor.clean(body) for name, body in defs.items() if name not in compactor.inline}
    if kept:
        result["$defs"] = kept
    return result  # type: ignore[no-any-return]


def _refs(node: Any, found: set[str], uses: dict[str, int]) -> set[str]:
    """The definitions `node` refers to (added to `found`), each use counted in `uses`."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(_DEF_REF):
            name = ref[len(_DEF_REF) :]
            found.add(name)
            uses[name] = uses.get(name, 0) + 1
        for key, value in node.items():
            if key != "$defs":
                _refs(value, found, uses)
    elif isinstance(node, list):
        for value in node:
            _refs(value, found, uses)
    return found


def _inlinable(schema: dict[str, Any], defs: dict[str, Any]) -> set[str]:
    """Definitions used once (anywhere, other definitions included) and not recursive: these are
    written where they are used."""
    uses: dict[str, int] = {}
    _refs(schema, set(), uses)
    inside = {name: _refs(body, set(), uses) for name, body in defs.items()}

    def reaches(start: str) -> set[str]:
        seen: set[str] = set()
        todo = list(inside.get(start, ()))
        while todo:
            name = todo.pop()
            if name not in seen:
                seen.add(name)
                todo.extend(inside.get(name, ()))
        return seen

    return {name for name in defs if uses.get(name, 0) == 1 and name not in reaches(name)}


class _Compactor:
    """Cleans schema nodes, inlining the definitions in `inline`."""

    def __init__(self, defs: dict[str, Any], inline: set[str]) -> None:
        self.defs = defs
        self.inline = inline

    def clean(self, node: Any) -> Any:
        if not isinstance(node, dict):
            return node
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(_DEF_REF) and ref[len(_DEF_REF) :] in self.inline:
            siblings = {k: v for k, v in node.items() if k != "$ref"}
            return self.clean({**self.defs[ref[len(_DEF_REF) :]], **siblings})
        out: dict[str, Any] = {}
        for key, value in node.items():
            if (key == "title" and isinstance(value, str)) or (
                key == "additionalProperties" and value is False
            ):
                continue
            if key in _SUBSCHEMA and isinstance(value, dict):
                out[key] = self.clean(value)
            elif key in _SCHEMA_LISTS and isinstance(value, list):
                out[key] = [self.clean(v) for v in value]
            elif key in _SCHEMA_MAPS and isinstance(value, dict):
                out[key] = {name: self.clean(v) for name, v in value.items()}
            else:
                out[key] = value
        return _without_optional_null(out)


def _without_optional_null(out: dict[str, Any]) -> dict[str, Any]:
    """``anyOf: [X, null]`` with ``default: null`` shown as ``X`` (null is still accepted)."""
    options = out.get("anyOf")
    if "default" in out and out["default"] is None and isinstance(options, list):
        rest = [o for o in options if o != {"type": "null"}]
        if len(rest) < len(options) and rest:
            del out["default"], out["anyOf"]
            if len(rest) == 1:
                out = {**rest[0], **out}
            else:
                out["anyOf"] = rest
    return out
