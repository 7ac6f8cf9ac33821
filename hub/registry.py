"""What plugins register: tools, resources, resource templates and prompts, and the live registry.

A plugin builds these small dataclasses and hands them to the `register` callback of a hook (or
to `PluginContext.add_tool` later, at run time). The registry records which plugin contributed
each item, refuses duplicates and bad names with a message naming both plugins, and tells the
server when a list changed so connected clients get `list_changed`.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, Literal

import mcp.types as types
from pydantic import BaseModel, ValidationError

from hub.errors import ToolError

if TYPE_CHECKING:
    import jsonschema

__all__ = [
    "CLAUDE_PREFIX",
    "ProgressFn",
    "Prompt",
    "PromptArgument",
    "RegistrationError",
    "Registry",
    "Resource",
    "ResourceTemplate",
    "Tool",
    "ToolCall",
    "ToolSelection",
    "compact_schema",
]

TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
CLAUDE_PREFIX = "mcp__hub__"

# A ready `ReadResourceResult` is sent as is (the proxy passes a downstream answer through).
ResourceBody = str | bytes | dict[str, Any] | list[Any] | BaseModel | types.ReadResourceResult
ListKind = Literal["tools", "resources", "prompts"]
# Where a caller's progress goes: (progress, total, message), from a tool up to a client or from a
# downstream server up to the tool that called it.
ProgressFn = Callable[[float, float | None, str | None], Awaitable[None]]


class RegistrationError(ValueError):
    """A tool, resource or prompt that cannot be registered (bad or duplicate name)."""


class ToolCall:
    """The second argument of every tool handler: who is calling, and a way to report progress."""

    def __init__(
        self,
        tool: str,
        *,
        request_id: Any = None,
        progress: ProgressFn | None = None,
        session: Any = None,
        log: Any = None,
    ) -> None:
        self.tool = tool
        self.request_id = request_id
        self.session = session
        self.log = log
        self._progress = progress
        self._last_progress = float("-inf")

    async def report_progress(
        self, progress: float, total: float | None = None, message: str | None = None
    ) -> None:
        """Send `notifications/progress` if the caller asked for it; values must increase, others are dropped."""
        if self._progress is None or progress <= self._last_progress:
            return
        self._last_progress = progress
        await self._progress(progress, total, message)


ToolHandler = Callable[[Any, ToolCall], Awaitable[Any]]


@dataclass
class Tool:
    """A tool. `handler(args, call)` gets the validated arguments: an instance of `input_model` when
    one is given, else the argument dict checked against `input_schema`.

    The handler returns a pydantic model or dict (sent as `structuredContent` plus the same JSON
    as text), a list or scalar (wrapped as ``{"result": ...}``), a string (text), or a ready
    `mcp.types.CallToolResult`. It raises `ToolError` for failures the caller can fix.
    """

    name: str
    handler: ToolHandler
    description: str = ""
    input_model: type[BaseModel] | None = None
    input_schema: dict[str, Any] | None = None
    output_schema: dict[str, Any] | None = None
    title: str | None = None
    annotations: types.ToolAnnotations | None = None
    plugin: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if self.input_model is not None and self.input_schema is not None:
            raise RegistrationError(f"tool {self.name!r}: give input_model or input_schema, not both")

    @cached_property
    def schema(self) -> dict[str, Any]:
        if self.input_model is not None:
            schema = compact_schema(self.input_model.model_json_schema())
        else:
            schema = dict(self.input_schema or {})
        schema.setdefault("type", "object")
        schema.setdefault("properties", {})
        return schema

    @cached_property
    def _validator(self) -> jsonschema.protocols.Validator:
        import jsonschema

        cls = jsonschema.validators.validator_for(self.schema, default=jsonschema.Draft202012Validator)
        return cls(self.schema)  # type: ignore[no-any-return]

    def to_mcp(self) -> types.Tool:
        return types.Tool(
            name=self.name,
            title=self.title,
            description=self.description,
            input_schema=self.schema,
            output_schema=self.output_schema,
            annotations=self.annotations,
        )

    def validate(self, arguments: dict[str, Any] | None) -> Any:
        """The arguments as the handler wants them, or `ToolError` naming each bad field."""
        arguments = arguments or {}
        if self.input_model is not None:
            try:
                # Strict, as JSON: "yes" is not a boolean, "5" not a number, 5.5 not an integer.
                return self.input_model.model_validate_json(_as_json(arguments), strict=True)
            except ValidationError as exc:
                raise ToolError(f"invalid arguments for {self.name}: {_pydantic_problems(exc)}") from None
        if not isinstance(arguments, dict):
            raise ToolError(f"invalid arguments for {self.name}: arguments must be an object")
        _as_json(arguments)  # JSON values only, no lone surrogates (they would break the wire later)
        errors = sorted(self._validator.iter_errors(arguments), key=lambda e: list(e.absolute_path))
        if errors:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e.absolute_path) or '(arguments)'}: {_short(e.message)}"
                for e in errors[:5]
            )
            raise ToolError(f"invalid arguments for {self.name}: {problems}")
        return arguments


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
    uses: dict[str, int] = {}
    inside: dict[str, set[str]] = {}

    def refs(node: Any, found: set[str]) -> set[str]:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith(_DEF_REF):
                found.add(ref[len(_DEF_REF) :])
                uses[ref[len(_DEF_REF) :]] = uses.get(ref[len(_DEF_REF) :], 0) + 1
            for key, value in node.items():
                if key != "$defs":
                    refs(value, found)
        elif isinstance(node, list):
            for value in node:
                refs(value, found)
        return found

    refs(schema, set())
    for name, body in defs.items():
        inside[name] = refs(body, set())

    def reaches(start: str) -> set[str]:
        seen: set[str] = set()
        todo = list(inside.get(start, ()))
        while todo:
            name = todo.pop()
            if name not in seen:
                seen.add(name)
                todo.extend(inside.get(name, ()))
        return seen

    inline = {name for name in defs if uses.get(name, 0) == 1 and name not in reaches(name)}

    def clean(node: Any) -> Any:
        if not isinstance(node, dict):
            return node
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(_DEF_REF) and ref[len(_DEF_REF) :] in inline:
            siblings = {k: v for k, v in node.items() if k != "$ref"}
            return clean({**defs[ref[len(_DEF_REF) :]], **siblings})
        out: dict[str, Any] = {}
        for key, value in node.items():
            if (key == "title" and isinstance(value, str)) or (
                key == "additionalProperties" and value is False
            ):
                continue
            if key in _SUBSCHEMA and isinstance(value, dict):
                out[key] = clean(value)
            elif key in _SCHEMA_LISTS and isinstance(value, list):
                out[key] = [clean(v) for v in value]
            elif key in _SCHEMA_MAPS and isinstance(value, dict):
                out[key] = {name: clean(v) for name, v in value.items()}
            else:
                out[key] = value
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

    top = {k: v for k, v in schema.items() if k != "$defs"}
    ref = top.pop("$ref", None)
    if isinstance(ref, str) and ref.startswith(_DEF_REF):  # a recursive model: the body is a def
        top = {**defs[ref[len(_DEF_REF) :]], **top}
    top.pop("description", None)
    result = clean(top)
    kept = {name: clean(body) for name, body in defs.items() if name not in inline}
    if kept:
        result["$defs"] = kept
    return result  # type: ignore[no-any-return]


def _as_json(arguments: Any) -> str:
    """The arguments as JSON text (they came as JSON; an in-process client may pass other values)."""
    try:
        text = json.dumps(arguments, allow_nan=False, ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise ToolError(f"arguments must be JSON values: {exc}") from None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:  # only an in-process client can get one this far
        raise ToolError(
            f"arguments hold a lone UTF-16 surrogate ({text[exc.start]!r}); send valid Unicode"
        ) from None
    return text


def _short(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _pydantic_problems(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors()[:5]:
        where = ".".join(str(part) for part in error["loc"]) or "(arguments)"
        message = "unknown field" if error["type"] == "extra_forbidden" else error["msg"]
        if error["type"] not in ("missing", "extra_forbidden") and isinstance(
            error.get("input"), str | int | float
        ):
            message += f" (got {_short(repr(error['input']), 60)})"
        problems.append(f"{where}: {message}")
    return "; ".join(problems)


@dataclass
class Resource:
    """A fixed resource; `read()` returns text, bytes, or JSON-ready data (sent as JSON)."""

    uri: str
    name: str
    read: Callable[[], Awaitable[ResourceBody]]
    description: str = ""
    mime_type: str | None = "application/json"
    title: str | None = None
    plugin: str = field(default="", compare=False)

    def to_mcp(self) -> types.Resource:
        return types.Resource(
            uri=self.uri,
            name=self.name,
            title=self.title,
            description=self.description,
            mime_type=self.mime_type,
        )


TEMPLATE_VARIABLE = re.compile(r"\{([+#]?)([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass
class ResourceTemplate:
    """A family of resources such as ``pool://slots/{id}``; `read(params)` gets ``{"id": ...}``.

    ``{name}`` matches one path segment; ``{+name}`` (and ``{#name}``) match the rest, slashes
    included, as in RFC 6570. `expand(params)` gives the URI back.
    """

    uri_template: str
    name: str
    read: Callable[[dict[str, str]], Awaitable[ResourceBody]]
    description: str = ""
    mime_type: str | None = "application/json"
    title: str | None = None
    plugin: str = field(default="", compare=False)

    @cached_property
    def _pattern(self) -> re.Pattern[str]:
        regex, end = "", 0
        for found in TEMPLATE_VARIABLE.finditer(self.uri_template):
            operator, name = found.groups()
            prefix = "#" if operator == "#" else ""
            regex += re.escape(self.uri_template[end : found.start()]) + re.escape(prefix)
            regex += f"(?P<{name}>.+)" if operator else f"(?P<{name}>[^/?#]+)"
            end = found.end()
        return re.compile(regex + re.escape(self.uri_template[end:]))

    def match(self, uri: str) -> dict[str, str] | None:
        found = self._pattern.fullmatch(uri)
        return None if found is None else found.groupdict()

    def expand(self, params: dict[str, str]) -> str:
        def value(found: re.Match[str]) -> str:
            operator, name = found.groups()
            return ("#" if operator == "#" else "") + params[name]

        return TEMPLATE_VARIABLE.sub(value, self.uri_template)

    def to_mcp(self) -> types.ResourceTemplate:
        return types.ResourceTemplate(
            uri_template=self.uri_template,
            name=self.name,
            title=self.title,
            description=self.description,
            mime_type=self.mime_type,
        )


@dataclass
class PromptArgument:
    name: str
    description: str = ""
    required: bool = False


@dataclass
class Prompt:
    """A prompt template; `render(arguments)` returns the text of one user message, messages, or a
    ready `GetPromptResult`."""

    name: str
    render: Callable[[dict[str, str]], Awaitable[str | list[types.PromptMessage] | types.GetPromptResult]]
    description: str = ""
    arguments: list[PromptArgument] = field(default_factory=list)
    title: str | None = None
    plugin: str = field(default="", compare=False)

    def to_mcp(self) -> types.Prompt:
        return types.Prompt(
            name=self.name,
            title=self.title,
            description=self.description,
            arguments=[
                types.PromptArgument(name=a.name, description=a.description, required=a.required)
                for a in self.arguments
            ],
        )

    def check_arguments(self, arguments: dict[str, str] | None) -> dict[str, str]:
        arguments = dict(arguments or {})
        problems = argument_problems(self.arguments, arguments)
        if problems:
            raise ToolError(f"prompt {self.name}: {problems}")
        return arguments


def argument_problems(
    declared: Sequence[Any], given: Mapping[str, Any], *, blank_is_missing: bool = False
) -> str:
    """What is wrong with `given` for arguments `declared` (objects with `name` and `required`):
    missing required ones and unknown ones, in one message; "" when nothing is."""
    known = {a.name for a in declared}
    missing = [
        a.name
        for a in declared
        if a.required and (a.name not in given or (blank_is_missing and not str(given[a.name]).strip()))
    ]
    unknown = sorted(set(given) - known)
    problems = []
    if missing:
        problems.append(f"missing required argument(s): {', '.join(missing)}")
    if unknown:
        problems.append(
            f"unknown argument(s): {', '.join(unknown)} (it takes: {', '.join(sorted(known)) or 'none'})"
        )
    return "; ".join(problems)


Registrable = Tool | Resource | ResourceTemplate | Prompt


@dataclass(frozen=True)
class ToolSelection:
    """`[plugins.NAME] tools = [...]` and/or `hide = [...]`: which of a plugin's tools are served."""

    keep: frozenset[str] | None = None
    hide: frozenset[str] = frozenset()

    def allows(self, name: str) -> bool:
        return (self.keep is None or name in self.keep) and name not in self.hide

    def named(self) -> dict[str, frozenset[str]]:
        """The names the user wrote, by key."""
        return {"tools": self.keep or frozenset(), "hide": self.hide}


class Registry:
    """Everything the hub serves, with the plugin that contributed each item.

    `on_change(kind)` is called after every change so the server can tell connected clients.
    """

    def __init__(
        self,
        *,
        warn: Callable[[str], None] | None = None,
        selection: Callable[[str], ToolSelection | None] | None = None,
    ) -> None:
        self.tools: dict[str, Tool] = {}
        # The user's choice of each plugin's tools, and every tool name each plugin offered
        # (served or not), so a misspelt name in `tools`/`hide` can be found.
        self.selection: Callable[[str], ToolSelection | None] = selection or (lambda plugin: None)
        self.offered: dict[str, set[str]] = {}
        self.resources: dict[str, Resource] = {}
        self.templates: dict[str, ResourceTemplate] = {}
        self.prompts: dict[str, Prompt] = {}
        self.on_change: Callable[[ListKind], None] = lambda kind: None
        self._warn = warn or (lambda message: None)

    def add(self, item: Registrable, plugin: str) -> None:
        """Register `item` for `plugin`; `RegistrationError` if its name is bad or taken."""
        item.plugin = plugin
        if isinstance(item, Tool):
            self._check_tool_name(item.name)
            self.offered.setdefault(plugin, set()).add(item.name)
            selection = self.selection(plugin)
            if selection is not None and not selection.allows(item.name):
                return  # left out by the user's [plugins.NAME] tools / hide
            self._claim(self.tools, item.name, item, "tool")
            self.on_change("tools")
        elif isinstance(item, Resource):
            self._claim(self.resources, item.uri, item, "resource")
            self.on_change("resources")
        elif isinstance(item, ResourceTemplate):
            self._claim(self.templates, item.uri_template, item, "resource template")
            self.on_change("resources")
        elif isinstance(item, Prompt):
            self._claim(self.prompts, item.name, item, "prompt")
            self.on_change("prompts")
        else:
            raise RegistrationError(
                f"cannot register {item!r}: expected Tool, Resource, ResourceTemplate or Prompt"
            )

    def _check_tool_name(self, name: str) -> None:
        if not TOOL_NAME.fullmatch(name):
            raise RegistrationError(
                f"tool name {name!r} is not allowed: use 1-64 letters, digits, '_' or '-' "
                "(the Anthropic API accepts nothing else)"
            )
        if len(CLAUDE_PREFIX) + len(name) > 64:
            self._warn(
                f"tool {name!r}: Claude Code will call it {CLAUDE_PREFIX}{name} "
                f"({len(CLAUDE_PREFIX) + len(name)} characters), over the 64 the API accepts; give it a shorter name"
            )

    @staticmethod
    def _claim(table: dict[str, Any], key: str, item: Registrable, what: str) -> None:
        existing = table.get(key)
        if existing is not None:
            raise RegistrationError(
                f"{what} {key!r} from plugin {item.plugin!r} clashes with the one from plugin {existing.plugin!r}"
            )
        table[key] = item

    def remove(self, kind: ListKind, key: str) -> bool:
        table: dict[str, Any]
        if kind == "tools":
            table = self.tools
        elif kind == "prompts":
            table = self.prompts
        else:
            table = self.resources if key in self.resources else self.templates
        if table.pop(key, None) is None:
            return False
        self.on_change(kind)
        return True

    def remove_plugin(self, plugin: str) -> None:
        """Drop everything `plugin` registered."""
        groups: list[tuple[ListKind, list[dict[str, Any]]]] = [
            ("tools", [self.tools]),
            ("resources", [self.resources, self.templates]),
            ("prompts", [self.prompts]),
        ]
        for kind, tables in groups:
            changed = False
            for table in tables:
                for key in [k for k, v in table.items() if v.plugin == plugin]:
                    del table[key]
                    changed = True
            if changed:
                self.on_change(kind)

    def selection_problems(self, plugin: str) -> list[tuple[str, str]]:
        """(key, message) for each name in `plugin`'s `tools` / `hide` that it never offered."""
        selection = self.selection(plugin)
        if selection is None:
            return []
        offered = sorted(self.offered.get(plugin, ()))
        problems = []
        for key, names in selection.named().items():
            for name in sorted(names - set(offered)):
                close = difflib.get_close_matches(name, offered, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                problems.append((key, f"plugin {plugin!r} has no tool {name!r}{hint}"))
        return problems

    def hidden(self, plugin: str) -> list[str]:
        """`plugin`'s tools left out by the user's `tools` / `hide`."""
        return sorted(
            name
            for name in self.offered.get(plugin, ())
            if name not in self.tools or self.tools[name].plugin != plugin
        )

    def contributions(self, plugin: str) -> dict[str, list[str]]:
        hidden = self.hidden(plugin)
        return {
            **({"hidden_tools": hidden} if hidden else {}),
            "tools": sorted(k for k, v in self.tools.items() if v.plugin == plugin),
            "resources": sorted(
                [k for k, v in self.resources.items() if v.plugin == plugin]
                + [k for k, v in self.templates.items() if v.plugin == plugin]
            ),
            "prompts": sorted(k for k, v in self.prompts.items() if v.plugin == plugin),
        }

    def find_resource(self, uri: str) -> tuple[Resource | ResourceTemplate, dict[str, str]] | None:
        if uri in self.resources:
            return self.resources[uri], {}
        for template in self.templates.values():
            params = template.match(uri)
            if params is not None:
                return template, params
        return None


def dump_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)
