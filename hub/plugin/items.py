"""What a plugin registers: tools (`Tool`, and `ForwardedTool` for one whose handler returns a
result as wire JSON), resources (`Resource`, `ResourceTemplate`) and prompts (`Prompt`), and
`ToolCall`, what a tool handler is given besides its arguments.

A plugin builds these small dataclasses and hands them to the `register` callback of a hook (or
to `PluginContext.add_tool` later, at run time); `hub.plugin.registry.Registry` keeps them.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Awaitable, Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import mcp.types as types
from mcp.shared.exceptions import MCPError
from pydantic import BaseModel, ValidationError

from hub.errors import ToolError
from hub.plugin.schema import compact_schema
from hub.wire.jsonrpc import ProgressFn

if TYPE_CHECKING:
    import jsonschema

__all__ = [
    "CLAUDE_PREFIX",
    "TOOL_NAME",
    "ClientChannel",
    "Complete",
    "ForwardedTool",
    "Prompt",
    "PromptArgument",
    "RawResult",
    "RegistrationError",
    "Resource",
    "ResourceBody",
    "ResourceTemplate",
    "Tool",
    "ToolCall",
    "argument_problems",
    "dump_json",
]

TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
CLAUDE_PREFIX = "mcp__hub__"

# A ready `ReadResourceResult` is sent as is (the proxy passes a downstream answer through).
ResourceBody = str | bytes | dict[str, Any] | list[Any] | BaseModel | types.ReadResourceResult


class RawResult(dict[str, Any]):
    """A `CallToolResult` as wire JSON (camelCase keys), passed to the client unchanged."""


class RegistrationError(ValueError):
    """A tool, resource or prompt that cannot be registered (bad or duplicate name)."""


_CAPABILITY_OF = {
    "sampling/createMessage": "sampling",
    "elicitation/create": "elicitation",
    "roots/list": "roots",
}


class ClientChannel(Protocol):
    """What the hub's server side gives a `ToolCall` to reach the client that made the call
    (`hub.server.asking`): in the handshake era a request on the call's own channel; in the
    2026-07-28 era an `input_required` answer, with the call resumed when the client retries."""

    @property
    def session_key(self) -> Hashable | None: ...

    @property
    def capabilities(self) -> dict[str, Any]: ...

    @property
    def log_level(self) -> str | None: ...

    async def request(self, method: str, params: dict[str, Any]) -> dict[str, Any]: ...

    async def notify_log(self, params: dict[str, Any]) -> None: ...

    def outside(self) -> ClientChannel | None: ...


class ToolCall:
    """The second argument of every tool handler: who is calling, and ways to reach them.

    - `report_progress(progress, total, message)`;
    - ask the client, in whichever protocol era it speaks (the hub turns a question into a
      request in the call, or into an `input_required` result and resumes the handler when the
      client answers): `sample(...)` (its model), `elicit(...)` (a form),
      `elicit_url(...)` (a page to visit), `list_roots()`, or `ask(request)` for any
      `mcp.types` input request; each raises `ToolError` when the client did not declare the
      capability or refuses (`can_ask(method)` tells first);
    - `send_log(level, data)`: a log message to the client (at the level it asked for).
    """

    def __init__(
        self,
        tool: str,
        *,
        request_id: Any = None,
        progress: ProgressFn | None = None,
        session: Any = None,
        log: Any = None,
        client: ClientChannel | None = None,
    ) -> None:
        self.tool = tool
        self.request_id = request_id
        self.session = session
        self.log = log
        self.client = client
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

    # -- the calling client --------------------------------------------------------------------

    @property
    def capabilities(self) -> types.ClientCapabilities:
        """What the calling client declared (empty when the hub cannot tell)."""
        declared = self.client.capabilities if self.client is not None else {}
        return types.ClientCapabilities.model_validate(declared)

    @property
    def session_key(self) -> Hashable | None:
        """The calling client's session (a connection to the hub), or None."""
        return self.client.session_key if self.client is not None else None

    @property
    def log_level(self) -> str | None:
        """The least severe log level the calling client asked for, or None."""
        return self.client.log_level if self.client is not None else None

    def can_ask(self, method: str, params: Mapping[str, Any] | None = None) -> bool:
        """Whether the client declared what `method` needs: ``sampling/createMessage``,
        ``elicitation/create`` (URL mode, when `params` say so, needs its own declaration) or
        ``roots/list``."""
        declared = self.client.capabilities if self.client is not None else {}
        kind = _CAPABILITY_OF.get(method)
        if kind is None or kind not in declared:
            return False
        if kind == "elicitation" and params is not None and params.get("mode") == "url":
            modes = declared.get("elicitation")
            return isinstance(modes, dict) and "url" in modes
        return True

    async def ask(self, request: types.InputRequest) -> Any:
        """Ask the client `request` (`types.CreateMessageRequest`, `types.ElicitRequest` or
        `types.ListRootsRequest`) and return its typed answer; `ToolError` when it cannot."""
        params = (
            request.params.model_dump(by_alias=True, mode="json", exclude_none=True) if request.params else {}
        )
        try:
            result = await self.relay_request(request.method, params)
        except MCPError as exc:
            raise ToolError(f"{self.tool}: {exc.error.message}") from None
        if isinstance(request, types.CreateMessageRequest):
            wants_tools = request.params.tools or request.params.tool_choice
            model: Any = types.CreateMessageResultWithTools if wants_tools else types.CreateMessageResult
        elif isinstance(request, types.ElicitRequest):
            model = types.ElicitResult
        else:
            model = types.ListRootsResult
        try:
            return model.model_validate(result, by_name=False)
        except ValidationError as exc:
            raise ToolError(
                f"{self.tool}: the client's answer to {request.method} is not valid: {exc}"
            ) from None

    async def sample(
        self, messages: str | Sequence[types.SamplingMessage], *, max_tokens: int = 1000, **params: Any
    ) -> types.CreateMessageResult:
        """The client's model's answer to `messages` (a string is one user message); `params` are
        other `types.CreateMessageRequestParams` fields (``system_prompt``, ``temperature``, ...)."""
        if isinstance(messages, str):
            messages = [
                types.SamplingMessage(role="user", content=types.TextContent(type="text", text=messages))
            ]
        request = types.CreateMessageRequest(
            params=types.CreateMessageRequestParams(messages=list(messages), max_tokens=max_tokens, **params)
        )
        result: types.CreateMessageResult = await self.ask(request)
        return result

    async def elicit(self, message: str, requested_schema: dict[str, Any]) -> types.ElicitResult:
        """Ask the user to fill in a form (`requested_schema`: a flat JSON Schema object)."""
        request = types.ElicitRequest(
            params=types.ElicitRequestFormParams(message=message, requested_schema=requested_schema)
        )
        result: types.ElicitResult = await self.ask(request)
        return result

    async def elicit_url(
        self, message: str, url: str, elicitation_id: str | None = None
    ) -> types.ElicitResult:
        """Ask the user to visit `url` (an out-of-band step such as a sign-in); the hub supplies
        the elicitation id a handshake-era client needs when none is given."""
        request = types.ElicitRequest(
            params=types.ElicitRequestURLParams(message=message, url=url, elicitation_id=elicitation_id)
        )
        result: types.ElicitResult = await self.ask(request)
        return result

    async def list_roots(self) -> types.ListRootsResult:
        """The client's workspace roots."""
        result: types.ListRootsResult = await self.ask(types.ListRootsRequest())
        return result

    async def send_log(self, level: types.LoggingLevel, data: Any, logger: str | None = None) -> None:
        """A log message to the client, if it asked for messages at `level` (nothing otherwise)."""
        params: dict[str, Any] = {"level": level, "data": data}
        if logger is not None:
            params["logger"] = logger
        await self.relay_log(params)

    # -- the same, as wire JSON (what a relay of a downstream server's requests uses) ------------

    async def relay_request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        """Ask the client `method` with `params` (wire JSON); its result as wire JSON. `MCPError`
        when the client did not declare the capability or refuses."""
        if self.client is None or not self.can_ask(method, params):
            what = _CAPABILITY_OF.get(method, method)
            if what == "elicitation" and params.get("mode") == "url":
                what = "URL elicitation"
            raise MCPError(
                types.INVALID_REQUEST,
                f"the client calling {self.tool} did not declare the {what} capability, so it cannot answer {method}",
            )
        return await self.client.request(method, params)

    async def relay_log(self, params: dict[str, Any]) -> None:
        """Pass a `notifications/message` (its params) to the client, at the level it asked for."""
        if self.client is not None:
            await self.client.notify_log(params)

    def outside(self) -> ToolCall | None:
        """The calling client outside this call (handshake-era clients), or None."""
        channel = self.client.outside() if self.client is not None else None
        return ToolCall(self.tool, client=channel) if channel is not None else None


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
    #: What the tool belongs to within its plugin, for people reading `hub plugins` (the proxy:
    #: the downstream server); tools without one are listed together.
    group: str | None = field(default=None, compare=False)
    plugin: str = field(default="", compare=False)
    #: The tool as wire JSON (camelCase keys, as `tools/list` carries it), sent instead of the
    #: definition made from the fields above, so fields the SDK does not model pass through
    #: (the proxy sends each downstream tool as its server listed it). Its `name` must be this
    #: tool's; `input_schema` still validates the arguments.
    definition: dict[str, Any] | None = field(default=None, compare=False, repr=False)
    #: The handler returns a `RawResult` (a result as wire JSON, such as a downstream server's
    #: answer), which goes to the client as it is: the transports may answer such a call before
    #: the SDK sees it (see `ForwardedTool`).
    returns_raw: ClassVar[bool] = False

    def takes_shortcut(self) -> bool:
        """Whether a transport's shortcut (`hub.server.shortcuts`) may run a call of this tool:
        a raw-result tool's, unless it needs the client for this call (`ForwardedTool`)."""
        return self.returns_raw

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
                return self.input_model.model_validate_json(_as_json(arguments, self.name), strict=True)
            except ValidationError as exc:
                raise ToolError(f"invalid arguments for {self.name}: {_pydantic_problems(exc)}") from None
        if not isinstance(arguments, dict):
            raise ToolError(f"invalid arguments for {self.name}: arguments must be an object")
        _as_json(
            arguments, self.name
        )  # JSON values only, no lone surrogates (they would break the wire later)
        errors = sorted(self._validator.iter_errors(arguments), key=lambda e: list(e.absolute_path))
        if errors:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e.absolute_path) or '(arguments)'}: {_short(e.message)}"
                for e in errors[:5]
            )
            raise ToolError(f"invalid arguments for {self.name}: {problems}")
        return arguments


@dataclass
class ForwardedTool(Tool):
    """A tool whose handler returns a `RawResult` (a downstream's answer, passed through).
    `needs_client()`, when given and true, sends a call the regular way, where the handler's
    `ToolCall` can reach the client (`ToolCall.elicit_url`), not through a transport's shortcut."""

    returns_raw: ClassVar[bool] = True
    needs_client: Callable[[], bool] | None = field(default=None, compare=False)

    def takes_shortcut(self) -> bool:
        return self.needs_client is None or not self.needs_client()


def _as_json(arguments: Any, tool: str) -> str:
    """The arguments as JSON text (they came as JSON; an in-process client may pass other values).
    A number JSON cannot carry (NaN, Infinity, or 1e400, which parses as infinity) is named with
    the tool and the field, as every other invalid argument is."""
    try:
        text = json.dumps(arguments, allow_nan=False, ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        where = _not_finite(arguments)
        if where is not None:
            raise ToolError(
                f"invalid arguments for {tool}: {where[0]}: {where[1]} is not a number JSON can carry "
                "(NaN and infinities are not JSON, and 1e400 is past the largest number); send a finite number"
            ) from None
        raise ToolError(f"invalid arguments for {tool}: arguments must be JSON values: {exc}") from None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:  # only an in-process client can get one this far
        raise ToolError(
            f"arguments hold a lone UTF-16 surrogate ({text[exc.start]!r}); send valid Unicode"
        ) from None
    return text


def _not_finite(value: Any, where: str = "") -> tuple[str, str] | None:
    """(field path, the number as sent) of the first NaN or infinity in `value`, else None."""
    if isinstance(value, float) and not math.isfinite(value):
        return where or "(arguments)", "NaN" if math.isnan(value) else (
            "-" if value < 0 else ""
        ) + "Infinity (or 1e400)"
    if isinstance(value, dict):
        children: Any = ((f"{where}.{k}" if where else str(k), v) for k, v in value.items())
    elif isinstance(value, list | tuple):
        children = ((f"{where}[{i}]", v) for i, v in enumerate(value))
    else:
        return None
    for path, child in children:
        found = _not_finite(child, path)
        if found is not None:
            return found
    return None


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
    #: Called with the URI when the first client subscribes to it, and `unsubscribe` when the
    #: last one leaves; the plugin then calls `PluginContext.resource_updated(uri)` on changes.
    subscribe: Callable[[str], Awaitable[None]] | None = field(default=None, compare=False)
    unsubscribe: Callable[[str], Awaitable[None]] | None = field(default=None, compare=False)
    #: As wire JSON, sent instead of the fields above in the list (see `Tool.definition`).
    definition: dict[str, Any] | None = field(default=None, compare=False, repr=False)

    def to_mcp(self) -> types.Resource:
        return types.Resource(
            uri=self.uri,
            name=self.name,
            title=self.title,
            description=self.description,
            mime_type=self.mime_type,
        )


#: Completion of one argument: ``complete(name, value, context)`` gets the argument being typed,
#: its partial value and the arguments already filled in, and returns suggestions (a list of
#: strings, or a ready `types.Completion` with ``total`` / ``has_more``).
Complete = Callable[[str, str, dict[str, str]], Awaitable["list[str] | types.Completion"]]

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
    #: `completion/complete` for one of the template's variables (see `Complete`).
    complete: Complete | None = field(default=None, compare=False)
    #: As for `Resource`, with the URI of one resource of the family.
    subscribe: Callable[[str], Awaitable[None]] | None = field(default=None, compare=False)
    unsubscribe: Callable[[str], Awaitable[None]] | None = field(default=None, compare=False)
    #: As wire JSON, sent instead of the fields above in the list (see `Tool.definition`).
    definition: dict[str, Any] | None = field(default=None, compare=False, repr=False)

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
    #: `completion/complete` for one of the prompt's arguments (see `Complete`).
    complete: Complete | None = field(default=None, compare=False)
    #: As wire JSON, sent instead of the fields above in `prompts/list` (see `Tool.definition`).
    definition: dict[str, Any] | None = field(default=None, compare=False, repr=False)

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


def dump_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)
