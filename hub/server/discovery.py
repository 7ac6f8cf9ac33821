"""What the hub lists, and finding what it does not: `[tools] expose = "all" | "search" | "auto"`.

- **all** (the default): every tool is listed.
- **search**: the hub lists `find_tools`, `call_tool` and the tools of `[tools] always`, and
  nothing else; every tool stays callable by name. `find_tools(query, limit, server, load)`
  ranks every tool the hub could list (`hub.server.tool_index`) and returns each one's name,
  server, description and input schema; `call_tool(name, arguments)` runs a tool exactly as a
  direct call would (the same `Dispatch.run`, with the call's own client channel: validation,
  errors, progress, cancellation, and the questions a tool asks its client). `load=true` adds
  the tools found to the list of the calling session only (its `hub.server.asking.ClientState`:
  a line connection, a handshake-era HTTP session or connection; a 2026-07-28 request over HTTP
  or in memory has none) and tells that session `list_changed`; `hub://status` shows each
  session's loaded tools.
- **auto**: all while the whole list stays under `[tools] max_list_bytes`, else search.

For Claude Code's own tool search (docs/claude-code.md): the list is sorted by name (the same
order at every start, so prompt caches hold); `find_tools`, `call_tool` and the `always` tools
carry `_meta["anthropic/alwaysLoad"]`; a tool of a downstream server carries
`_meta["anthropic/searchHint"]` with the server's name and the start of its instructions (unless
the server gave the tool a hint of its own); a proxied tool is listed as its server defined it,
these hints merged into its `_meta` (`hub.server.dispatch.as_listed`); list results carry
`ttlMs`/`cacheScope` (2026-07-28). `find_tools` and `call_tool` exist only when `expose` is not
`all`.
"""

from __future__ import annotations

import difflib
import itertools
import json
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

import mcp.types as types
import structlog
from mcp.shared.subscriptions import ToolsListChanged
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import BaseModel, ConfigDict, Field

from hub.plugin.items import ForwardedTool, RawResult, RegistrationError, Tool, ToolCall
from hub.plugin.registry import ListKind, Registry
from hub.server.asking import ClientState
from hub.server.dispatch import as_listed
from hub.server.relay import ClientBus
from hub.server.tool_index import IndexedTool, ToolIndex
from hub.wire.envelope import SESSION_TOOLS_KEY

if TYPE_CHECKING:
    from mcp.server import ServerRequestContext

    from hub.server.dispatch import Dispatch

__all__ = ["CALL_TOOL", "FIND_TOOLS", "Discovery", "ToolsSetting"]

log = structlog.get_logger("hub.server")

FIND_TOOLS = "find_tools"
CALL_TOOL = "call_tool"
OWN = (FIND_TOOLS, CALL_TOOL)
ALWAYS_LOAD = "anthropic/alwaysLoad"
SEARCH_HINT = "anthropic/searchHint"
HINT_CHARS = 300  # of a server's instructions indexed and hinted (Claude Code reads 4,096)
#: 2026-07-28 list results in search mode: a client may keep the list this long (a client
#: listening for changes drops it when told); it changes only when the session loads tools or
#: the configuration changes. The whole list (`all`) follows every downstream server, so it is
#: stale at once (0). Both private: a session's list may hold the tools it loaded.
LIST_TTL_MS = 60_000

SEARCH_INSTRUCTIONS = (
    "Most tools are not listed: find_tools(query) searches every tool the hub has (its plugins' "
    "and its downstream servers') and call_tool(name, arguments) runs one."
)


class ToolsSetting(Protocol):
    """`[tools]` (`hub.config.settings.ToolsConfig`) as this module reads it."""

    @property
    def expose(self) -> Literal["all", "search", "auto"]: ...

    @property
    def always(self) -> Sequence[str]: ...

    @property
    def max_list_bytes(self) -> int: ...


@dataclass(frozen=True)
class _Defaults:
    expose: Literal["all", "search", "auto"] = "all"
    always: Sequence[str] = field(default_factory=tuple)
    max_list_bytes: int = 16_384


class FindArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    query: str = Field(description="What you want to do, in words.", min_length=1, max_length=2000)
    limit: int = Field(default=5, ge=1, le=50, description="How many tools to return, best first.")
    server: str | None = Field(default=None, description="Only tools of this server (or plugin).")
    load: bool = Field(
        default=False, description="Also add the tools found to your tool list, to call them directly."
    )


class CallArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(description="The tool's name, as find_tools gives it.", min_length=1)
    arguments: dict[str, Any] = Field(default_factory=dict, description="Its arguments.")


def _dumped(tool: types.Tool) -> dict[str, Any]:
    return tool.model_dump(by_alias=True, mode="json", exclude_none=True)


def server_of(tool: Tool) -> str:
    """A tool's server: the downstream server of a proxied tool (its group), else its plugin."""
    return tool.group or tool.plugin or "hub"


class Discovery:
    """The hub's tool list per session and the two search tools (see the module docstring).

    `notes(server)` gives a server's instructions, for the index and the search hints."""

    def __init__(
        self,
        registry: Registry,
        dispatch: Dispatch,
        config: ToolsSetting | None = None,
        *,
        notes: Callable[[str], str | None] | None = None,
        bus: ClientBus | None = None,
    ) -> None:
        self.registry = registry
        self.dispatch = dispatch
        self.config: ToolsSetting = config or _Defaults()
        self.notes = notes or registry.notes.get  # a group's words (`PluginContext.describe_group`)
        self.bus = bus or ClientBus()
        self.loaded: dict[ClientState, list[str]] = {}
        self._labels: dict[ClientState, str] = {}  # for hub://status
        self._label_ids = itertools.count(1)
        self.index = ToolIndex()
        self._indexed = False
        self._whole_bytes: int | None = None
        registry.add_listener(self._changed)
        dispatch.list_variant = self.list_variant  # a session's list: the tools it loaded
        if self.config.expose != "all":
            self._register_own()

    # -- modes and lists ---------------------------------------------------------------------

    def _changed(self, kind: ListKind) -> None:
        if kind == "tools":
            self._indexed = False
            self._whole_bytes = None

    def whole_bytes(self) -> int:
        """The size of the tools/list of `all` (compact JSON), as `auto` compares it."""
        if self._whole_bytes is None:
            always = set(self.config.always)
            tools = [self._wire(tool, name in always) for name, tool in self._listable()]
            self._whole_bytes = len(json.dumps({"tools": tools}, separators=(",", ":")).encode())
        return self._whole_bytes

    def mode(self) -> Literal["all", "search"]:
        expose = self.config.expose
        if expose == "auto":
            return "all" if self.whole_bytes() <= self.config.max_list_bytes else "search"
        return expose

    def _note(self, group: str | None) -> str:
        """The start of a group's words (a server's instructions): what it is for. Only the
        start: a long text's every word would match every one of its tools (and make common
        words count for less everywhere else, BM25's document frequency)."""
        return " ".join((self.notes(group) or "").split())[:HINT_CHARS] if group else ""

    def _hinted(self, tool: Tool, always: bool) -> types.Tool:
        """`tool` as listed, with its hints for Claude Code in `_meta` (a proxied tool's own
        definition gets them merged in by `Dispatch`, `as_listed`)."""
        listed = tool.to_mcp()
        meta: dict[str, Any] = dict(listed.meta or {})
        if always:
            meta[ALWAYS_LOAD] = True
        own = (tool.definition or {}).get("_meta")
        if tool.group and not (isinstance(own, dict) and SEARCH_HINT in own):  # the server's own hint wins
            meta[SEARCH_HINT] = f"{tool.group} {self._note(tool.group)}".strip()
        return listed.model_copy(update={"meta": meta}) if meta else listed

    def _wire(self, tool: Tool, always: bool) -> dict[str, Any]:
        """`tool` as the client gets it in tools/list (wire JSON)."""
        made = _dumped(self._hinted(tool, always))
        return as_listed(tool.definition, made) if tool.definition is not None else made

    def _listable(self) -> list[tuple[str, Tool]]:
        """Every tool `all` lists (not the search tools themselves), sorted by name."""
        return [
            (name, tool)
            for name, tool in sorted(self.registry.tools.items())
            if not (tool.plugin == "hub" and name in OWN)
        ]

    def _all_tools(self) -> list[types.Tool]:
        always = set(self.config.always)
        return [self._hinted(tool, name in always) for name, tool in self._listable()]

    def listed(self, client: ClientState | None) -> list[types.Tool]:
        """The tools/list answer for a session: sorted by name, the same at every start."""
        if self.mode() == "all":
            return self._all_tools()
        shown = set(OWN) | set(self.config.always) | set(self.loaded.get(client, ()) if client else ())
        return [
            self._hinted(tool, name in OWN or name in self.config.always)
            for name, tool in sorted(self.registry.tools.items())
            if name in shown
        ]

    def list_result(self, ctx: ServerRequestContext[Any, Any]) -> types.ListToolsResult:
        client = self.dispatch.client_of(ctx)
        client = client if isinstance(client, ClientState) else None
        tools = self.listed(client)
        loaded = self.loaded.get(client) if client is not None and self.mode() == "search" else None
        meta = {SESSION_TOOLS_KEY: sorted(loaded)} if loaded else None  # not for the fast start
        if ctx.protocol_version in MODERN_PROTOCOL_VERSIONS:
            ttl = LIST_TTL_MS if self.mode() == "search" else 0
            return types.ListToolsResult(tools=tools, ttl_ms=ttl, cache_scope="private", _meta=meta)
        return types.ListToolsResult(tools=tools, _meta=meta)

    def list_variant(self, method: str, client: Hashable | None) -> str:
        """The part of `Dispatch`'s cache key for a list answer that depends on the session."""
        if method != "tools/list" or not self.loaded or not isinstance(client, ClientState):
            return ""
        return ",".join(sorted(self.loaded.get(client, ())))

    # -- the two tools -----------------------------------------------------------------------

    def _register_own(self) -> None:
        find = Tool(FIND_TOOLS, self._find_tools, self._find_description(), input_model=FindArgs)
        call = ForwardedTool(
            CALL_TOOL,
            self._call_tool,
            "Run any of the hub's tools by name with its arguments, as find_tools gives them; the "
            "same as calling that tool directly (its errors, progress and result).",
            input_model=CallArgs,
        )
        for tool in (find, call):
            try:
                self.registry.add(tool, "hub")
            except RegistrationError as exc:
                log.error("search mode without one of its tools", problem=str(exc))

    def _find_description(self) -> str:
        return (
            "Find the hub's tools for a task, in words (e.g. 'read a file', 'commits of a repo'): "
            "the best matches with name, server, description and inputSchema. Run one with "
            "call_tool, or pass load=true to add them to your tool list."
        )

    def _indexed_tools(self) -> ToolIndex:
        if not self._indexed:
            self.index.rebuild(
                IndexedTool(
                    name,
                    server_of(tool),
                    tool.description,
                    tool.schema,
                    self._note(tool.group),
                )
                for name, tool in self._listable()
            )
            self._indexed = True
        return self.index

    async def _find_tools(self, args: FindArgs, call: ToolCall) -> types.CallToolResult:
        found = self._indexed_tools().search(args.query, args.limit, args.server)
        entries = [
            {"name": t.name, "server": t.server, "description": t.description, "inputSchema": t.schema}
            for t in found
        ]
        result: dict[str, Any] = {"tools": entries}
        if args.load and found:
            result.update(await self._load([t.name for t in found], call))
        if not found:
            servers = sorted({t.server for t in self._indexed_tools().tools})
            result["note"] = f"no tool matches {args.query!r}; servers: {', '.join(servers) or 'none'}"
        return types.CallToolResult(
            content=[types.TextContent(type="text", text=_found_text(result))],
            structured_content=result,
        )

    async def _load(self, names: list[str], call: ToolCall) -> dict[str, Any]:
        """Add `names` to the calling session's list and tell it; what to say in the result."""
        client = call.session_key
        if self.mode() == "all":
            return {"note": "every tool is listed already"}
        if not isinstance(client, ClientState) or not client.open:
            return {
                "note": "not loaded: this request has no session (a 2026-07-28 request over HTTP "
                "stands alone); call them with call_tool"
            }
        mine = self.loaded.setdefault(client, [])
        if not mine:
            self._labels[client] = f"session-{next(self._label_ids)}"
            client.on_close.append(self._forget)
        added = [name for name in names if name not in mine]
        mine.extend(added)
        outcome: dict[str, Any] = {"loaded": sorted(mine)}
        if added:
            outcome.update(await self._tell(client))
        return outcome

    async def _forget(self, client: ClientState) -> None:
        self.loaded.pop(client, None)
        self._labels.pop(client, None)

    async def _tell(self, client: ClientState) -> dict[str, Any]:
        """Tell the session its list changed: on its listen stream (2026-07-28) or with
        notifications/tools/list_changed (handshake era)."""
        if client.modern:
            if not self.bus.listening(client):
                return {
                    "note": "this client is not listening for list changes (subscriptions/listen): "
                    "it sees the loaded tools when it lists tools again; call_tool works now"
                }
            await self.bus.publish_to(client, ToolsListChanged())
            return {}
        if client.notify is not None:
            try:
                await client.notify("notifications/tools/list_changed", {})
            except Exception as exc:  # a client that went away
                log.debug("could not tell a session its list changed", error=str(exc))
        return {}

    async def _call_tool(self, args: CallArgs, call: ToolCall) -> RawResult:
        tool = self.registry.tools.get(args.name)
        if tool is None:
            return RawResult(_unknown(args.name, sorted(self.registry.tools)))
        params = {"name": tool.name, "arguments": args.arguments}
        # Run as a direct call would be, on this call's channel to its client: a tool that asks
        # the client (sampling, elicitation, roots) asks it from inside call_tool.
        return RawResult(
            await self.dispatch.run(
                tool, params, call.request_id, call.report_progress, call.session, call.client
            )
        )

    # -- status ------------------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        """What hub://status shows: the setting, what is listed now, and each session's loads."""
        missing = sorted(set(self.config.always) - set(self.registry.tools))
        return {
            "expose": self.config.expose,
            "listing": self.mode(),
            "whole_list_bytes": self.whole_bytes(),
            "max_list_bytes": self.config.max_list_bytes,
            "always": list(self.config.always),
            **({"always_missing": missing} if missing else {}),
            "sessions": [
                {"session": self._labels.get(client, "session"), "loaded": sorted(names)}
                for client, names in self.loaded.items()
            ],
        }


def _unknown(name: str, names: list[str]) -> dict[str, Any]:
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
    hint = f" (did you mean {', '.join(close)}?)" if close else "; find_tools finds tools by what they do"
    return {"content": [{"type": "text", "text": f"Unknown tool: {name}{hint}"}], "isError": True}


def _found_text(result: dict[str, Any]) -> str:
    """find_tools' result as compact text: a line per tool and its input schema."""
    lines = []
    for tool in result["tools"]:
        schema = json.dumps(tool["inputSchema"], ensure_ascii=False, separators=(",", ":"))
        lines.append(f"{tool['name']} ({tool['server']}): {tool['description']}\n  input: {schema}")
    for key in ("loaded", "note"):
        if key in result:
            value = result[key]
            lines.append(f"{key}: {', '.join(value) if isinstance(value, list) else value}")
    return "\n".join(lines)
