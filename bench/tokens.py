"""What the model pays: bytes (and an estimate in tokens) of tool results and tool definitions.

1. Reads of N = 1, 10, 50 files of 2-20 KB on `@modelcontextprotocol/server-filesystem`
   (`read_text_file`), through one `batch_execute` against the same N calls proxied directly
   (`fs__read_text_file` through the same hub). Target (issue 16): what the model sees from
   `batch_execute` is at most 1.05x the sum of the direct calls, plus 300 bytes.
2. The hub's own `tools/list` with every built-in plugin and no downstream servers: bytes per
   plugin (target: at most 16 KB in all), and how many input properties lack a description.

"What the model sees" of a result: Claude Code hands the model the tool's `structuredContent`
when it has one (as JSON; measured here as compact JSON, what `JSON.stringify` writes), else its
text content. A client that reads only text is reported too. Tokens are estimated as bytes / 4
(a rough rule for English and code; an exact count needs the API's count_tokens endpoint).

BatchIt (`mcp-batchit`, the TypeScript original) is not on the npm registry (`npm view
mcp-batchit` and `npm view batchit` find nothing), so it cannot run here. Its column is its
result rebuilt from the same downstream answers in the shape its source writes: one text block,
`JSON.stringify({targetServer, summary: {successCount, failCount, totalDurationMs}, operations:
[{tool, success, result, durationMs}]}, null, 2)`, `result` being the whole downstream result
(content and structuredContent). It has no structuredContent, so every client reads that text.

Each N is measured in ROUNDS rounds, each on a fresh set of files, direct and batch interleaved.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import anyio
import mcp.types as types
from mcp import Client, StdioServerParameters

ROOT = Path(__file__).resolve().parents[1]
FILESYSTEM = ROOT / ".cache" / "npm" / "node_modules" / ".bin" / "mcp-server-filesystem"
SIZES = [1, 10, 50]
ROUNDS = 3
TARGET_RATIO, TARGET_EXTRA = 1.05, 300
TOOLS_LIST_TARGET = 16 * 1024
BYTES_PER_TOKEN = 4
WORDS = [
    "def",
    "return",
    "self",
    "value",
    "result",
    "error",
    "path",
    "file",
    "server",
    "tool",
    "call",
    "batch",
    "model",
    "token",
    "context",
    "import",
    "class",
    "async",
    "await",
    "with",
    "for",
    "in",
    "if",
    "else",
    "try",
    "except",
    "raise",
    "yield",
    "lambda",
    "None",
    "True",
    "False",
]


def compact(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def size(text: str) -> int:
    return len(text.encode())


def text_of(result: types.CallToolResult) -> str:
    return "\n".join(b.text for b in result.content if isinstance(b, types.TextContent))


def model_view(result: types.CallToolResult) -> str:
    """What Claude Code gives the model: structuredContent as JSON, else the text."""
    if result.structured_content is not None:
        return compact(result.structured_content)
    return text_of(result)


def wire(result: types.CallToolResult) -> dict[str, Any]:
    return result.model_dump(mode="json", by_alias=True, exclude_none=True)


def batchit_view(results: list[types.CallToolResult], durations_ms: list[int]) -> str:
    """BatchIt's answer to the same reads, in the shape its source writes (see the docstring)."""
    operations = [
        {"tool": "read_text_file", "success": True, "result": wire(r), "durationMs": ms}
        for r, ms in zip(results, durations_ms, strict=True)
    ]
    body = {
        "targetServer": "fs",
        "summary": {"successCount": len(results), "failCount": 0, "totalDurationMs": sum(durations_ms)},
        "operations": operations,
    }
    return json.dumps(body, ensure_ascii=False, indent=2)


def make_files(folder: Path, n: int, seed: int) -> list[Path]:
    """N text files of 2-20 KB that read like code."""
    rng = random.Random(seed)
    folder.mkdir(parents=True)
    paths = []
    for i in range(n):
        target = rng.randint(2 * 1024, 20 * 1024)
        lines, length = [], 0
        while length < target:
            line = "    " * rng.randint(0, 3) + " ".join(rng.choices(WORDS, k=rng.randint(3, 12)))
            lines.append(line)
            length += len(line) + 1
        path = folder / f"file_{i:03d}.py"
        path.write_text("\n".join(lines)[:target])
        paths.append(path)
    return paths


def ratio_stats(values: list[float]) -> dict[str, float]:
    return {
        "median": round(statistics.median(values), 4),
        "min": round(min(values), 4),
        "max": round(max(values), 4),
    }


async def wait_for_tool(client: Client, name: str) -> None:
    with anyio.fail_after(60):  # a server the hub has never seen is listed once it has started
        while name not in {t.name for t in (await client.list_tools()).tools}:
            await anyio.sleep(0.1)


async def one_round(client: Client, paths: list[Path]) -> dict[str, int]:
    direct = [await client.call_tool("fs__read_text_file", {"path": str(p)}) for p in paths]
    assert not any(r.is_error for r in direct), [text_of(r) for r in direct if r.is_error]
    request = {
        "server": "fs",
        "operations": [{"tool": "read_text_file", "arguments": {"path": str(p)}} for p in paths],
    }
    batch = await client.call_tool("batch_execute", request)
    assert not batch.is_error, text_of(batch)
    assert batch.structured_content is not None
    durations = [round(op["durationMs"]) for op in batch.structured_content["operations"]]
    return {
        "files_bytes": sum(p.stat().st_size for p in paths),
        "direct_model": sum(size(model_view(r)) for r in direct),
        "direct_text": sum(size(text_of(r)) for r in direct),
        "direct_wire": sum(size(compact(wire(r))) for r in direct),
        "batch_model": size(model_view(batch)),
        "batch_text": size(text_of(batch)),
        "batch_wire": size(compact(wire(batch))),
        "batchit_model": size(batchit_view(direct, durations)),
    }


async def reads(tmp: Path) -> list[dict[str, Any]]:
    files = tmp / "files"
    files.mkdir()
    (tmp / "hub.toml").write_text(
        f"[servers.fs]\ncommand = {json.dumps(str(FILESYSTEM))}\nargs = [{json.dumps(str(files))}]\n"
    )
    env = {
        "PATH": os.environ["PATH"],
        "HUB_STATE_DIR": str(tmp / "state"),
        "HUB_LOG_LEVEL": "warning",
        "HUB_SHARE": "0",
    }
    hub = StdioServerParameters(
        command=sys.executable,
        args=["-m", "hub", "--plugins", "batchit,proxy", "--config", str(tmp / "hub.toml")],
        env=env,
    )
    out = []
    async with Client(hub, mode="legacy") as client:
        await wait_for_tool(client, "fs__read_text_file")
        for n in SIZES:
            rounds = [
                await one_round(client, make_files(files / f"n{n}_r{r}", n, seed=n * 100 + r))
                for r in range(ROUNDS)
            ]
            model_ratio = [r["batch_model"] / r["direct_model"] for r in rounds]
            text_ratio = [r["batch_text"] / r["direct_text"] for r in rounds]
            batchit_ratio = [r["batchit_model"] / r["direct_model"] for r in rounds]
            worst_over = max(r["batch_model"] - TARGET_RATIO * r["direct_model"] for r in rounds)
            worst_text_over = max(r["batch_text"] - TARGET_RATIO * r["direct_text"] for r in rounds)
            last = rounds[-1]
            out.append(
                {
                    "files": n,
                    "last_round": {
                        **last,
                        "direct_model_tokens": last["direct_model"] // BYTES_PER_TOKEN,
                        "batch_model_tokens": last["batch_model"] // BYTES_PER_TOKEN,
                        "batchit_model_tokens": last["batchit_model"] // BYTES_PER_TOKEN,
                    },
                    "batch_vs_direct_model": ratio_stats(model_ratio),
                    "batch_vs_direct_text_only_client": ratio_stats(text_ratio),
                    "batchit_vs_direct_model": ratio_stats(batchit_ratio),
                    "batchit_vs_batch_model": ratio_stats(
                        [r["batchit_model"] / r["batch_model"] for r in rounds]
                    ),
                    "worst_bytes_over_1.05x": round(worst_over),
                    "meets_target": worst_over <= TARGET_EXTRA and worst_text_over <= TARGET_EXTRA,
                }
            )
    return out


def undescribed(schema: dict[str, Any]) -> tuple[int, int]:
    """(properties, properties without a description) under `schema`, nested ones too."""
    defs = schema.get("$defs", {})
    total = missing = 0

    def visit(node: Any, seen: frozenset[str]) -> None:
        nonlocal total, missing
        if not isinstance(node, dict):
            return
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/") and ref not in seen:
            visit(defs.get(ref.removeprefix("#/$defs/")), seen | {ref})
        for prop in (node.get("properties") or {}).values():
            total += 1
            missing += not (isinstance(prop, dict) and prop.get("description"))
            visit(prop, seen)
        for key in ("items", "additionalProperties"):
            visit(node.get(key), seen)
        for key in ("anyOf", "oneOf", "allOf"):
            for option in node.get(key) or []:
                visit(option, seen)

    visit(schema, frozenset())
    return total, missing


async def tools_list(tmp: Path) -> dict[str, Any]:
    env = {
        "PATH": os.environ["PATH"],
        "HUB_STATE_DIR": str(tmp / "state2"),
        "HUB_LOG_LEVEL": "warning",
        "HUB_SHARE": "0",
    }
    (tmp / "empty.toml").write_text("")
    hub = StdioServerParameters(
        command=sys.executable,
        args=["-m", "hub", "--config", str(tmp / "empty.toml"), "plugins", "--json"],
        env=env,
    )
    # Which plugin registers which tool: `hub plugins --json`.
    process = await anyio.run_process([hub.command, *hub.args], env={**os.environ, **env})
    owner = {tool: entry["name"] for entry in json.loads(process.stdout) for tool in entry.get("tools", [])}
    hub = StdioServerParameters(
        command=sys.executable, args=["-m", "hub", "--config", str(tmp / "empty.toml")], env=env
    )
    async with Client(hub, mode="legacy") as client:
        listing = await client.list_tools()
    whole = size(compact(listing.model_dump(mode="json", by_alias=True, exclude_none=True)))
    per_plugin: dict[str, dict[str, int]] = {}
    properties = missing = 0
    for tool in listing.tools:
        entry = per_plugin.setdefault(owner.get(tool.name, "?"), {"tools": 0, "bytes": 0})
        entry["tools"] += 1
        entry["bytes"] += size(compact(tool.model_dump(mode="json", by_alias=True, exclude_none=True)))
        t, m = undescribed(tool.input_schema)
        properties, missing = properties + t, missing + m
    for entry in per_plugin.values():
        entry["tokens"] = entry["bytes"] // BYTES_PER_TOKEN
    return {
        "tools": len(listing.tools),
        "bytes": whole,
        "tokens": whole // BYTES_PER_TOKEN,
        "per_plugin": per_plugin,
        "input_properties": properties,
        "undescribed_properties": missing,
        "target_bytes": TOOLS_LIST_TARGET,
        "meets_target": whole <= TOOLS_LIST_TARGET and missing == 0,
    }


async def run() -> dict[str, Any]:
    if not FILESYSTEM.exists():
        raise SystemExit(f"{FILESYSTEM} is missing: run `python3 dev.py test -k nothing` once to install it")
    load_start = round(os.getloadavg()[0], 2)
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        scenarios = await reads(tmp)
        definitions = await tools_list(tmp)
    return {
        "benchmark": "tokens",
        "load_start": load_start,
        "load_end": round(os.getloadavg()[0], 2),
        "load_note": "bytes do not depend on machine load: these verdicts hold at any load",
        "tokens_estimate": f"bytes / {BYTES_PER_TOKEN}",
        "reads": scenarios,
        "target": f"batch model view <= {TARGET_RATIO}x direct + {TARGET_EXTRA} bytes",
        "batchit": "not on the npm registry; its result rebuilt in the shape of its source (see bench/tokens.py)",
        "tools_list": definitions,
    }


def main() -> dict[str, Any]:
    return anyio.run(run)


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
