"""A downstream MCP server written with raw JSON lines, no SDK: it misbehaves as an SDK server
never would, for the adversarial tests (and starts in milliseconds).

Tools: ``echo(text)``; ``mangle()``, whose answer holds bytes that are not UTF-8; ``flood(logs,
progress)``, which sends that many log notifications and progress notifications (to the call's
progress token) before its answer. Knobs: ``RAW_IGNORE_EOF=1`` keeps running after its input
ends (a server that outlives its client unless killed); ``RAW_INIT_DELAY_S`` waits that long
before answering `initialize`; ``RAW_PID_DIR`` receives a file named after its pid holding the
`time.monotonic()` of its start, and of its `initialize` answer once sent.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

TOOLS = [
    {"name": "echo", "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}}},
    {"name": "mangle", "inputSchema": {"type": "object"}},
    {
        "name": "flood",
        "inputSchema": {
            "type": "object",
            "properties": {"logs": {"type": "integer"}, "progress": {"type": "integer"}},
        },
    },
]
out = sys.stdout.buffer


def send(message: dict[str, Any]) -> None:
    out.write(json.dumps(message).encode() + b"\n")
    out.flush()


def text_result(request_id: Any, text: str) -> None:
    send({"jsonrpc": "2.0", "id": request_id, "result": {"content": [{"type": "text", "text": text}]}})


def call(request_id: Any, params: dict[str, Any]) -> None:
    name, arguments = params.get("name"), params.get("arguments") or {}
    if name == "echo":
        text_result(request_id, str(arguments.get("text", "")))
    elif name == "mangle":  # a string with bytes that are not UTF-8 in the middle of the answer
        head = (
            f'{{"jsonrpc":"2.0","id":{json.dumps(request_id)},"result":{{"content":[{{"type":"text","text":"'
        )
        out.write(head.encode() + b"bad \xff\xfe bytes" + b'"}]}}\n')
        out.flush()
    elif name == "flood":
        token = (params.get("_meta") or {}).get("progressToken")
        lines = []
        for i in range(int(arguments.get("logs", 0))):
            note = {"level": "info", "logger": "flood", "data": f"log {i}"}
            lines.append(json.dumps({"jsonrpc": "2.0", "method": "notifications/message", "params": note}))
        total = int(arguments.get("progress", 0))
        for i in range(1, total + 1 if token is not None else 1):
            note = {"progressToken": token, "progress": i, "total": total}
            lines.append(json.dumps({"jsonrpc": "2.0", "method": "notifications/progress", "params": note}))
        out.write(("\n".join(lines) + "\n").encode() if lines else b"")
        text_result(request_id, f"flooded {len(lines)}")
    else:
        send({"jsonrpc": "2.0", "id": request_id, "error": {"code": -32602, "message": f"no tool {name}"}})


def serve() -> None:
    for raw in sys.stdin.buffer:
        try:
            message = json.loads(raw)
        except ValueError:
            continue
        method, request_id = message.get("method"), message.get("id")
        if request_id is None or method is None:
            continue  # notifications and answers
        params = message.get("params") or {}
        if method == "initialize":
            time.sleep(float(os.environ.get("RAW_INIT_DELAY_S", "0")))
            result = {
                "protocolVersion": params.get("protocolVersion", "2025-11-25"),
                "capabilities": {"tools": {}, "logging": {}},
                "serverInfo": {"name": "raw", "version": "1"},
            }
            send({"jsonrpc": "2.0", "id": request_id, "result": result})
            if os.environ.get("RAW_PID_DIR"):
                with open(Path(os.environ["RAW_PID_DIR"], str(os.getpid())), "a") as f:
                    f.write(f" {time.monotonic()}")
        elif method == "tools/list":
            send({"jsonrpc": "2.0", "id": request_id, "result": {"tools": TOOLS}})
        elif method == "tools/call":
            call(request_id, params)
        else:
            send({"jsonrpc": "2.0", "id": request_id, "result": {}})


if __name__ == "__main__":
    if os.environ.get("RAW_PID_DIR"):
        Path(os.environ["RAW_PID_DIR"], str(os.getpid())).write_text(str(time.monotonic()))
    serve()
    while os.environ.get("RAW_IGNORE_EOF"):  # input ended: a well-behaved server would exit
        time.sleep(3600)
