"""A downstream MCP server that asks its client for input, logs, completes and has resources to
subscribe to, in both protocol eras (the SDK's low-level `Server`).

- handshake era: a tool awaits a request to the client in the call (`sampling/createMessage`,
  `elicitation/create` form or URL, `roots/list`);
- 2026-07-28: the same tool answers `input_required` and is called again with the answers
  (`chain` takes two rounds, its state in `requestState`).

Tools: `sample` (prompt), `form`, `url`, `roots`, `all` (the four at once), `chain` (a form, then
sampling with its answer), `noisy` (a log message at each level, as the client asked), `touch`
(uri: the resource changed). Resources `demo://a`, `demo://b`, template `demo://item/{id}`,
prompt `greet` (lang), completion for both. Run with no arguments for stdio, or
``--http PORT_FILE`` to serve streamable HTTP on a free loopback port written to PORT_FILE.
"""

from __future__ import annotations

import json
import sys
import uuid
import warnings
from typing import Any

import anyio
import mcp.types as types
from mcp.server import Server, ServerRequestContext
from mcp.server.stdio import stdio_server
from mcp.server.subscriptions import InMemorySubscriptionBus, ListenHandler, ResourceUpdated
from mcp.shared.exceptions import MCPDeprecationWarning, MCPError
from mcp.shared.message import ServerMessageMetadata
from mcp_types import LOG_LEVEL_META_KEY
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

warnings.simplefilter("ignore", MCPDeprecationWarning)
LEVELS = ["debug", "info", "notice", "warning", "error", "critical", "alert", "emergency"]
BUS = InMemorySubscriptionBus()
LEVEL: dict[int, str] = {}  # connection (id of its ServerSession's connection) -> logging/setLevel
SUBSCRIBERS: dict[str, list[Any]] = {}  # uri -> handshake-era sessions
OBJECT = {"type": "object"}
FORM = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}
TOOLS = [
    types.Tool(name="sample", input_schema={"type": "object", "properties": {"prompt": {"type": "string"}}}),
    types.Tool(name="form", input_schema=OBJECT),
    types.Tool(name="url", input_schema=OBJECT),
    types.Tool(name="roots", input_schema=OBJECT),
    types.Tool(name="all", input_schema=OBJECT),
    types.Tool(name="chain", input_schema=OBJECT),
    types.Tool(name="noisy", input_schema=OBJECT),
    types.Tool(name="touch", input_schema={"type": "object", "properties": {"uri": {"type": "string"}}}),
]


def question(kind: str, modern: bool, prompt: str = "hi") -> types.InputRequest:
    if kind == "sample":
        message = types.SamplingMessage(role="user", content=types.TextContent(type="text", text=prompt))
        return types.CreateMessageRequest(
            params=types.CreateMessageRequestParams(messages=[message], max_tokens=20)
        )
    if kind == "form":
        return types.ElicitRequest(
            params=types.ElicitRequestFormParams(message="Who are you?", requested_schema=FORM)
        )
    if kind == "url":
        return types.ElicitRequest(
            params=types.ElicitRequestURLParams(
                message="Sign in",
                url="https://example.com/sign-in",
                elicitation_id=None if modern else uuid.uuid4().hex,
            )
        )
    return types.ListRootsRequest()


def digest(answer: Any) -> Any:
    """What a test checks of an answer."""
    if isinstance(answer, types.CreateMessageResult | types.CreateMessageResultWithTools):
        return {"model": answer.model, "text": getattr(answer.content, "text", None)}
    if isinstance(answer, types.ElicitResult):
        return {"action": answer.action, "content": answer.content}
    if isinstance(answer, types.ListRootsResult):
        return {"roots": [str(root.uri) for root in answer.roots]}
    return repr(answer)


def result(value: Any) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(type="text", text=json.dumps(value))])


async def ask(ctx: ServerRequestContext[Any, Any], request: types.InputRequest) -> Any:
    """A request to the client in this call (handshake era)."""
    kinds = {"sampling/createMessage": types.CreateMessageResult, "elicitation/create": types.ElicitResult}
    result_type = kinds.get(request.method, types.ListRootsResult)
    metadata = ServerMessageMetadata(related_request_id=ctx.request_id)
    return await ctx.session.send_request(request, result_type, metadata=metadata)  # type: ignore[arg-type]


async def call_tool(ctx: ServerRequestContext[Any, Any], params: types.CallToolRequestParams) -> Any:
    modern = ctx.protocol_version in MODERN_PROTOCOL_VERSIONS
    arguments = params.arguments or {}
    name = params.name
    if name == "noisy":
        return await noisy(ctx, modern)
    if name == "touch":
        return await touch(str(arguments["uri"]))
    if name == "chain":
        return await chain(ctx, params, modern)
    kinds = ["sample", "form", "url", "roots"] if name == "all" else [name]
    if not set(kinds) <= {"sample", "form", "url", "roots"}:
        raise MCPError(types.INVALID_PARAMS, f"unknown tool {name}")
    questions = {kind: question(kind, modern, str(arguments.get("prompt", "hi"))) for kind in kinds}
    if not modern:
        return result({kind: digest(await ask(ctx, q)) for kind, q in questions.items()})
    if not params.input_responses:
        return types.InputRequiredResult(input_requests=questions, request_state=f"{name}:1")
    if params.request_state != f"{name}:1":
        raise MCPError(types.INVALID_PARAMS, f"unexpected requestState {params.request_state!r}")
    return result({kind: digest(params.input_responses[kind]) for kind in kinds})


async def chain(
    ctx: ServerRequestContext[Any, Any], params: types.CallToolRequestParams, modern: bool
) -> Any:
    if not modern:
        form = await ask(ctx, question("form", False))
        sample = await ask(ctx, question("sample", False, f"Greet {(form.content or {}).get('name')}"))
        return result({"form": digest(form), "sample": digest(sample)})
    state = json.loads(params.request_state) if params.request_state else {"round": 0}
    answers = params.input_responses or {}
    if state["round"] == 0:
        return types.InputRequiredResult(
            input_requests={"f": question("form", True)}, request_state='{"round": 1}'
        )
    if state["round"] == 1:
        name = (answers["f"].content or {}).get("name")  # type: ignore[union-attr]
        return types.InputRequiredResult(
            input_requests={"s": question("sample", True, f"Greet {name}")},
            request_state=json.dumps({"round": 2, "form": digest(answers["f"])}),
        )
    return result({"form": state["form"], "sample": digest(answers["s"])})


async def noisy(ctx: ServerRequestContext[Any, Any], modern: bool) -> Any:
    """A log message at every level; in the handshake era only from the level set (the SDK
    sends what it is given), in 2026-07-28 the SDK keeps the request's level."""
    wanted = (ctx.meta or {}).get(LOG_LEVEL_META_KEY) if modern else LEVEL.get(id(ctx.session._connection))
    for level in LEVELS:
        if not modern and wanted and LEVELS.index(level) < LEVELS.index(wanted):
            continue
        await ctx.session.send_log_message(
            level, f"{level} line", logger="asking", related_request_id=ctx.request_id
        )  # type: ignore[arg-type]
    return result({"level": wanted})


async def touch(uri: str) -> Any:
    await BUS.publish(ResourceUpdated(uri=uri))
    told = 0
    for session in list(SUBSCRIBERS.get(uri, ())):
        await session.send_resource_updated(uri)
        told += 1
    return result({"touched": uri, "handshake_subscribers": told})


async def set_level(
    ctx: ServerRequestContext[Any, Any], params: types.SetLevelRequestParams
) -> types.EmptyResult:
    LEVEL[id(ctx.session._connection)] = params.level
    return types.EmptyResult()


async def subscribe(
    ctx: ServerRequestContext[Any, Any], params: types.SubscribeRequestParams
) -> types.EmptyResult:
    SUBSCRIBERS.setdefault(str(params.uri), []).append(ctx.session)
    return types.EmptyResult()


async def unsubscribe(
    ctx: ServerRequestContext[Any, Any], params: types.UnsubscribeRequestParams
) -> types.EmptyResult:
    SUBSCRIBERS.pop(str(params.uri), None)
    return types.EmptyResult()


async def complete(
    ctx: ServerRequestContext[Any, Any], params: types.CompleteRequestParams
) -> types.CompleteResult:
    ref, argument = params.ref, params.argument
    if isinstance(ref, types.PromptReference) and ref.name == "greet":
        values = [v for v in ("en", "es", "fr") if v.startswith(argument.value)]
    elif isinstance(ref, types.ResourceTemplateReference) and ref.uri == "demo://item/{id}":
        values = [v for v in ("1", "12", "123") if v.startswith(argument.value)]
    else:
        values = []
    return types.CompleteResult(completion=types.Completion(values=values, total=len(values), has_more=False))


async def list_tools(ctx: Any, params: Any) -> types.ListToolsResult:
    return types.ListToolsResult(tools=TOOLS)


async def list_resources(ctx: Any, params: Any) -> types.ListResourcesResult:
    return types.ListResourcesResult(
        resources=[types.Resource(uri="demo://a", name="a"), types.Resource(uri="demo://b", name="b")]
    )


async def list_templates(ctx: Any, params: Any) -> types.ListResourceTemplatesResult:
    return types.ListResourceTemplatesResult(
        resource_templates=[types.ResourceTemplate(uri_template="demo://item/{id}", name="item")]
    )


async def read_resource(ctx: Any, params: types.ReadResourceRequestParams) -> types.ReadResourceResult:
    return types.ReadResourceResult(
        contents=[types.TextResourceContents(uri=params.uri, text=f"content of {params.uri}")]
    )


async def list_prompts(ctx: Any, params: Any) -> types.ListPromptsResult:
    argument = types.PromptArgument(name="lang", required=True)
    return types.ListPromptsResult(prompts=[types.Prompt(name="greet", arguments=[argument])])


async def get_prompt(ctx: Any, params: types.GetPromptRequestParams) -> types.GetPromptResult:
    text = f"hello in {(params.arguments or {}).get('lang')}"
    return types.GetPromptResult(
        messages=[types.PromptMessage(role="user", content=types.TextContent(type="text", text=text))]
    )


server = Server(
    "asking",
    version="1.0",
    instructions="A server that asks its client for input.",
    on_list_tools=list_tools,
    on_call_tool=call_tool,
    on_list_resources=list_resources,
    on_list_resource_templates=list_templates,
    on_read_resource=read_resource,
    on_subscribe_resource=subscribe,
    on_unsubscribe_resource=unsubscribe,
    on_subscriptions_listen=ListenHandler(BUS),
    on_list_prompts=list_prompts,
    on_get_prompt=get_prompt,
    on_completion=complete,
    on_set_logging_level=set_level,
)


async def serve_stdio() -> None:
    async with stdio_server() as (read, write):
        await server.run(read, write, server.create_initialization_options())


def serve_http(port_file: str) -> None:
    import socket

    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    app = server.streamable_http_app(streamable_http_path="/mcp")
    with open(port_file + ".tmp", "w") as f:
        f.write(str(sock.getsockname()[1]))
    import os

    os.replace(port_file + ".tmp", port_file)
    uvicorn.Server(uvicorn.Config(app, log_config=None, lifespan="on")).run(sockets=[sock])


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--http":
        serve_http(sys.argv[2])
    else:
        anyio.run(serve_stdio)
