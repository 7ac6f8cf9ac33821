"""A small downstream MCP server for the tests: echo, slow, failing, crashing and structured tools,
a resource, a resource template and a prompt.

Run as ``python downstream.py``; it speaks MCP over stdio. Environment knobs:
``DOWNSTREAM_EXIT_AT_ONCE=1`` exits before the handshake (a server that dies at start);
``DOWNSTREAM_START_DELAY_S`` waits that long before serving (a server slow to start), and
``DOWNSTREAM_START_WHEN_FILE`` until that file exists;
``DOWNSTREAM_MARKER_DIR`` receives a file per cancelled `sleep` call, so tests can prove a
cancellation reached the server; ``DOWNSTREAM_INSTRUCTIONS`` are its instructions;
``DOWNSTREAM_EXTRA_TOOLS_FILE`` names a file of tool names (one a line), each served as one
more tool when the server starts (a server upgraded between two starts);
``DOWNSTREAM_SPANS_FILE`` receives one JSON line per OpenTelemetry span the server (the MCP SDK)
ends: name, kind, trace and span ids and the parent's (the hub's traces reach it, or not).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import anyio
from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from pydantic import BaseModel

if os.environ.get("DOWNSTREAM_START_DELAY_S"):  # a server slow to start (before the handshake)
    import time

    time.sleep(float(os.environ["DOWNSTREAM_START_DELAY_S"]))

if os.environ.get("DOWNSTREAM_START_WHEN_FILE"):  # a server that starts when the test says so
    import time

    while not Path(os.environ["DOWNSTREAM_START_WHEN_FILE"]).exists():
        time.sleep(0.02)

if os.environ.get("DOWNSTREAM_EXIT_AT_ONCE"):
    print("downstream: told to exit at once", file=sys.stderr, flush=True)
    raise SystemExit(3)

server = MCPServer("downstream", version="1.0.0", instructions=os.environ.get("DOWNSTREAM_INSTRUCTIONS"))


class Items(BaseModel):
    items: list[str]
    count: int


@server.tool()
async def echo(text: str) -> str:
    """Return the text unchanged."""
    return text


@server.tool()
async def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@server.tool()
async def sleep(seconds: float, tag: str = "") -> str:
    """Sleep, then say so. A call leaves a marker file in DOWNSTREAM_MARKER_DIR when it starts
    (`started-TAG`) and when it is cancelled (`cancelled-TAG`)."""
    marker_dir = os.environ.get("DOWNSTREAM_MARKER_DIR")
    if marker_dir:
        Path(marker_dir, f"started-{tag or 'call'}").write_text("started")
    try:
        await anyio.sleep(seconds)
    except anyio.get_cancelled_exc_class():
        if marker_dir:
            Path(marker_dir, f"cancelled-{tag or 'call'}").write_text("cancelled")
        raise
    return f"slept {seconds}"


@server.tool()
async def count(to: int, ctx: Context, delay: float = 0.01) -> int:
    """Count to `to`, reporting progress at each step."""
    for i in range(1, to + 1):
        await anyio.sleep(delay)
        await ctx.report_progress(i, to, f"counted {i}")
    return to


@server.tool()
async def fail(message: str = "failing on purpose") -> str:
    """Always fails with the given message."""
    raise ValueError(message)


@server.tool()
async def crash() -> str:
    """Kill this server process at once, mid-call."""
    os._exit(17)


@server.tool()
async def listing(prefix: str = "item", n: int = 3) -> Items:
    """Structured output: a list of names and its count."""
    items = [f"{prefix}{i}" for i in range(n)]
    return Items(items=items, count=n)


@server.tool()
async def grow(name: str, ctx: Context) -> str:
    """Add a tool named `name` and tell the client its tool list changed."""

    async def extra() -> str:
        return f"I am {name}"

    server.add_tool(extra, name=name, description="added at run time")
    await ctx.session.send_tool_list_changed()
    return f"added {name}"


@server.tool()
async def whoami() -> dict[str, Any]:
    """This process's pid and selected environment variables."""
    keys = ("PATH", "HOME", "DOWNSTREAM_GREETING", "SECRET_TOKEN", "UNRELATED_PARENT_VAR")
    return {"pid": os.getpid(), "env": {k: os.environ.get(k) for k in keys}}


@server.resource("downstream://about", mime_type="text/plain")
def about() -> str:
    """What this server is."""
    return "the test downstream server"


@server.resource("downstream://items/{name}", mime_type="application/json")
def item(name: str) -> dict[str, str]:
    """One item, by name."""
    return {"name": name, "kind": "item"}


@server.prompt()
def greet(name: str, style: str = "plain") -> str:
    """A greeting for `name`."""
    return f"Greet {name} in a {style} way."


def _extra_tools() -> None:
    path = os.environ.get("DOWNSTREAM_EXTRA_TOOLS_FILE")
    names = Path(path).read_text().split() if path and Path(path).exists() else []
    for name in names:

        async def extra(name: str = name) -> str:
            return f"I am {name}"

        server.add_tool(extra, name=name, description="one more tool, from DOWNSTREAM_EXTRA_TOOLS_FILE")


_extra_tools()


def _export_spans(path: str) -> None:
    """Every span the SDK ends, as a JSON line in `path` (written at once: the test reads it)."""
    import json

    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

    class LineExporter(SpanExporter):
        def export(self, spans):  # type: ignore[no-untyped-def]
            with open(path, "a") as out:
                for span in spans:
                    parent = span.parent
                    record = {
                        "name": span.name,
                        "kind": span.kind.name,
                        "trace_id": f"{span.context.trace_id:032x}",
                        "span_id": f"{span.context.span_id:016x}",
                        "parent_id": f"{parent.span_id:016x}" if parent else None,
                    }
                    out.write(json.dumps(record) + "\n")
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(LineExporter()))
    trace.set_tracer_provider(provider)


if os.environ.get("DOWNSTREAM_SPANS_FILE"):
    _export_spans(os.environ["DOWNSTREAM_SPANS_FILE"])

if __name__ == "__main__":
    if os.environ.get("DOWNSTREAM_SSE_PORT"):  # the older HTTP+SSE transport
        server.run("sse", host="127.0.0.1", port=int(os.environ["DOWNSTREAM_SSE_PORT"]))
    elif os.environ.get("DOWNSTREAM_HTTP_PORT"):  # streamable HTTP instead of stdio
        server.run("streamable-http", host="127.0.0.1", port=int(os.environ["DOWNSTREAM_HTTP_PORT"]))
    else:
        server.run()
