"""batch_execute through an MCP client, against real downstream processes."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import anyio
import hub_batchit
import psutil
import pytest
from hubtests import DOWNSTREAM, npm_bin

from hub.testing import make_config, result_text, running_hub

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def downstream(**extra: Any) -> dict[str, Any]:
    return {"command": sys.executable, "args": [str(DOWNSTREAM)], **extra}


def hub_with(tmp_path: Path, servers: dict[str, Any] | None = None, **batchit: Any):
    config = make_config(
        tmp_path, servers=servers or {"d": downstream()}, plugins={"batchit": batchit} if batchit else {}
    )
    return running_hub(config, plugins={"batchit": hub_batchit.BatchItPlugin})


async def batch(client, **request: Any):
    return await client.call_tool("batch_execute", request)


def statuses(result) -> list[str]:
    return [op["status"] for op in result.structured_content["operations"]]


async def test_batchit_request_verbatim_against_server_filesystem(tmp_path):
    """BatchIt's README example, word for word but for the paths: a targetServer whose name is
    configured in hub.toml runs there (the README's cmd.exe transport is not used)."""
    root = tmp_path / "project"
    root.mkdir()
    (root / "package.json").write_text('{"name": "mcp-batchit"}\n')
    (root / "README.md").write_text("# BatchIt\n")
    servers = {"filesystem": {"command": npm_bin("mcp-server-filesystem"), "args": [str(root)]}}
    request = {
        "targetServer": {
            "name": "filesystem",
            "serverType": {"type": "filesystem", "config": {"rootDirectory": str(root)}},
            "transport": {
                "type": "stdio",
                "command": "cmd.exe",
                "args": ["/c", "npx", "-y", "@modelcontextprotocol/server-filesystem", str(root)],
            },
        },
        "operations": [
            {"tool": "read_file", "arguments": {"path": str(root / "package.json")}},
            {"tool": "read_file", "arguments": {"path": str(root / "README.md")}},
        ],
        "options": {"maxConcurrent": 2, "stopOnError": True, "timeoutMs": 30000},
    }
    async with hub_with(tmp_path, servers) as (hub, client):
        result = await client.call_tool("batch_execute", request)
        assert not result.is_error, result_text(result)
        out = result.structured_content
        assert out["summary"]["ok"] == 2 and out["summary"]["total"] == 2
        first, second = out["operations"]
        # The documented shape: index, status, duration, and the downstream's own structuredContent
        # (once: not its content blocks as well).
        assert set(first) == {"index", "status", "durationMs", "structuredContent"}
        assert (first["index"], first["status"]) == (0, "ok")
        assert first["structuredContent"] == {
            "content": '{"name": "mcp-batchit"}\n'
        }  # not JSON-encoded twice
        assert second["structuredContent"] == {"content": "# BatchIt\n"}
        text = result_text(result)
        assert "[0] filesystem read_file: ok" in text and "# BatchIt" in text
        assert text.count("# BatchIt") == 1 and json.dumps(out).count("# BatchIt") == 1

        # The second phase of the README: a directory, then files in it, one at a time.
        write = {
            **request,
            "operations": [
                {"tool": "create_directory", "arguments": {"path": str(root / "memory-bank")}},
                {
                    "tool": "write_file",
                    "arguments": {
                        "path": str(root / "memory-bank" / "progress.md"),
                        "content": "# Progress\n",
                    },
                },
            ],
            "options": {"maxConcurrent": 1, "stopOnError": True, "timeoutMs": 30000},
        }
        result = await client.call_tool("batch_execute", write)
        assert statuses(result) == ["ok", "ok"], result_text(result)
        assert (root / "memory-bank" / "progress.md").read_text() == "# Progress\n"
        assert hub.connections.status()["filesystem"]["starts"] == 1  # one session for both batches


async def test_short_form_results_in_request_order_with_summary(tmp_path):
    async with hub_with(tmp_path) as (_, client):
        ops = [
            {"tool": "sleep", "arguments": {"seconds": 0.3}},
            {"tool": "echo", "arguments": {"text": "fast"}},
            {"tool": "listing", "arguments": {"n": 2}},
            {"tool": "fail", "arguments": {"message": "nope"}},
        ]
        result = await batch(client, server="d", operations=ops, options={"maxConcurrent": 4})
        out = result.structured_content
        assert [op["index"] for op in out["operations"]] == [0, 1, 2, 3]  # not completion order
        assert statuses(result) == ["ok", "ok", "ok", "error"]
        assert out["operations"][2]["structuredContent"] == {
            "items": ["item0", "item1"],
            "count": 2,
        }
        assert out["operations"][3]["error"] == "Error executing tool fail"
        assert set(out["operations"][3]) == {"index", "status", "durationMs", "error"}  # errors as text
        summary = out["summary"]
        assert (summary["total"], summary["ok"], summary["error"], summary["skipped"]) == (4, 3, 1, 0)
        assert summary["durationMs"] >= max(op["durationMs"] for op in out["operations"])  # wall-clock
        assert result.is_error  # one operation failed
        text = result_text(result)
        assert text.startswith("batch_execute: 4 operations, 3 ok, 1 error, in ")
        assert "[3] d fail: error" in text and "Error executing tool fail" in text


async def test_references_across_servers_with_splices_and_literals(tmp_path):
    servers = {"a": downstream(), "b": downstream()}
    async with hub_with(tmp_path, servers) as (_, client):
        ops = [
            # Listed first but waits for "items", which it references.
            {
                "id": "pick",
                "server": "b",
                "tool": "echo",
                "arguments": {"text": {"$ref": "items", "path": "structuredContent.items.1"}},
            },
            {"id": "items", "server": "a", "tool": "listing", "arguments": {"prefix": "row", "n": 3}},
            {
                "id": "sum",
                "server": "b",
                "tool": "add",
                "arguments": {"a": {"$ref": "items", "path": "structuredContent.count"}, "b": 10},
            },
            {
                "server": "a",
                "tool": "echo",
                "arguments": {
                    "text": {
                        "$text": "picked {{pick}}, sum {{sum.structuredContent.result}}, {{items.structuredContent.items}}"
                    }
                },
            },
            {"server": "a", "tool": "echo", "arguments": {"text": {"$literal": "{{not a splice}}"}}},
        ]
        result = await batch(client, operations=ops, options={"maxConcurrent": 5})
        assert statuses(result) == ["ok"] * 5, result_text(result)
        out = result.structured_content["operations"]
        assert out[0]["structuredContent"] == {"result": "row1"}
        assert out[2]["structuredContent"] == {"result": 13}
        assert out[3]["structuredContent"] == {"result": 'picked row1, sum 13, ["row0", "row1", "row2"]'}
        assert out[4]["structuredContent"] == {"result": "{{not a splice}}"}
        assert [op.get("id") for op in out] == ["pick", "items", "sum", None, None]


async def test_a_failed_reference_skips_its_dependents_and_a_bad_path_is_an_error(tmp_path):
    async with hub_with(tmp_path) as (_, client):
        ops = [
            {"id": "bad", "tool": "fail", "arguments": {}},
            {"id": "after", "tool": "echo", "arguments": {"text": {"$ref": "bad"}}},
            {"tool": "echo", "arguments": {"text": {"$ref": "after"}}},
            {"id": "list", "tool": "listing", "arguments": {"n": 2}},
            {"tool": "echo", "arguments": {"text": {"$ref": "list", "path": "structuredContent.items.7"}}},
        ]
        result = await batch(client, server="d", operations=ops)
        assert statuses(result) == ["error", "skipped", "skipped", "ok", "error"]
        out = result.structured_content["operations"]
        assert out[1]["error"] == "not run: it references 'bad', which ended error"
        assert out[2]["error"] == "not run: it references 'after', which ended skipped"
        assert out[4]["error"] == "reference: list.structuredContent.items has 2 items; there is no item 7"


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (
            {"server": "d", "operations": [{"tool": "echo"}], "options": {"maxConcurrent": 0}},
            "options.maxConcurrent: Input should be greater than or equal to 1 (got 0)",
        ),
        (
            {"server": "d", "operations": [{"tool": "echo"}], "options": {"timeoutMs": 0}},
            "options.timeoutMs: Input should be greater than 0 (got 0)",
        ),
        ({"server": "d", "operations": []}, "operations: List should have at least 1 item"),
        (
            {"server": "d", "operations": [{"tool": "echo"}] * 6},
            "6 operations is more than the 5 allowed in one batch ([plugins.batchit] max_operations)",
        ),
        (
            {"server": "d", "operations": [{"tool": "ecko", "arguments": {"text": "x"}}]},
            "operations[0].tool: server 'd' has no tool 'ecko' (did you mean 'echo'?)",
        ),
        ({"server": "nowhere", "operations": [{"tool": "echo"}]}, "no server 'nowhere' in hub.toml"),
        (
            {"operations": [{"tool": "echo"}]},
            "operations[0]: no server; give `server` for the batch or the operation (d)",
        ),
        (
            {"server": "d", "operations": [{"tool": "echo", "arguments": {"text": {"$ref": "x"}}}]},
            "operations[0].arguments.text: reference to 'x', which names no operation (ids: no operation has an id)",
        ),
        (
            {
                "server": "d",
                "operations": [
                    {"id": "a", "tool": "echo", "arguments": {"text": {"$ref": "b"}}},
                    {"id": "b", "tool": "echo", "arguments": {"text": {"$text": "{{a}}"}}},
                ],
            },
            "references form a cycle: a -> b -> a",
        ),
        (
            {"server": "d", "operations": [{"id": "a", "tool": "echo"}, {"id": "a", "tool": "echo"}]},
            "operations[1].id: 'a' is already the id of operations[0]",
        ),
        (
            {
                "server": "d",
                "operations": [{"tool": "echo", "arguments": {"text": {"$ref": "a", "extra": 1}}}],
            },
            'a reference is {"$ref": "ID", "path": "..."} and nothing else',
        ),
        (
            {"server": "d", "operations": [{"tool": "echo"}], "options": {"maxConcurrent": 500}},
            "options.maxConcurrent 500 is over the limit of 100",
        ),
        (
            {"server": "d", "operations": [{"tool": "echo", "argument": {}}]},
            "operations.0.argument: unknown field",
        ),
    ],
)
async def test_bad_requests_are_refused_before_anything_runs(tmp_path, request_, message):
    async with hub_with(tmp_path, max_operations=5) as (hub, client):
        result = await client.call_tool("batch_execute", request_)
        assert result.is_error
        assert message in result_text(result)
        if "nowhere" not in message and "maxConcurrent" not in message:
            assert hub.connections.status()["d"]["starts"] <= 1  # at most started to list its tools


async def test_a_timeout_cancels_the_downstream_call(tmp_path):
    markers = tmp_path / "markers"
    markers.mkdir()
    servers = {"d": downstream(env={"DOWNSTREAM_MARKER_DIR": str(markers)})}
    async with hub_with(tmp_path, servers) as (_, client):
        ops = [
            {"tool": "sleep", "arguments": {"seconds": 30, "tag": "slow"}, "timeoutMs": 300},
            {"tool": "echo", "arguments": {"text": "still fine"}},
        ]
        with anyio.fail_after(20):
            result = await batch(client, server="d", operations=ops, options={"timeoutMs": 10000})
        assert statuses(result) == ["timeout", "ok"]
        op = result.structured_content["operations"][0]
        assert op["error"] == "no answer within 300 ms; the call was cancelled on the server"
        assert 300 <= op["durationMs"] < 5000
        with anyio.fail_after(10):
            while not (markers / "cancelled-slow").exists():  # the server saw notifications/cancelled
                await anyio.sleep(0.05)


async def test_stop_and_cancel_on_error(tmp_path):
    markers = tmp_path / "markers"
    markers.mkdir()
    servers = {"d": downstream(env={"DOWNSTREAM_MARKER_DIR": str(markers)})}
    async with hub_with(tmp_path, servers) as (_, client):
        ops = [
            {"tool": "fail"},
            {"tool": "echo", "arguments": {"text": "x"}},
            {"tool": "echo", "arguments": {"text": "y"}},
        ]
        result = await batch(
            client, server="d", operations=ops, options={"maxConcurrent": 1, "stopOnError": True}
        )
        assert statuses(result) == ["error", "skipped", "skipped"]  # skipped ones are listed, not dropped
        assert (
            result.structured_content["operations"][1]["error"]
            == "not run: operations[0] failed and stopOnError is set"
        )

        ops = [
            {"tool": "sleep", "arguments": {"seconds": 30, "tag": "victim"}},
            {"tool": "sleep", "arguments": {"seconds": 0.3}},
            {"tool": "fail"},
            {"tool": "echo", "arguments": {"text": "never"}},
        ]
        with anyio.fail_after(20):
            result = await batch(
                client, server="d", operations=ops, options={"maxConcurrent": 3, "cancelOnError": True}
            )
        assert statuses(result) == ["cancelled", "cancelled", "error", "skipped"]
        with anyio.fail_after(10):
            while not (markers / "cancelled-victim").exists():
                await anyio.sleep(0.05)


async def test_progress_reports_k_of_n(tmp_path):
    async with hub_with(tmp_path) as (_, client):
        seen: list[tuple[float, float | None, str | None]] = []

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            seen.append((progress, total, message))

        ops = [{"tool": "sleep", "arguments": {"seconds": 0.1}} for _ in range(3)] + [
            {"tool": "echo", "arguments": {"text": "z"}}
        ]
        await client.call_tool(
            "batch_execute",
            {"server": "d", "operations": ops, "options": {"maxConcurrent": 1}},
            progress_callback=on_progress,
        )
        with anyio.fail_after(5):
            while not seen or seen[-1][0] != 4:
                await anyio.sleep(0.01)
        assert [p for p, _, _ in seen] == sorted({p for p, _, _ in seen})
        assert seen[-1] == (4, 4, "4/4 done; last: d echo ok")


async def test_cancelling_the_batch_cancels_every_operation_in_flight(tmp_path):
    markers = tmp_path / "markers"
    markers.mkdir()
    servers = {"d": downstream(env={"DOWNSTREAM_MARKER_DIR": str(markers)})}
    async with hub_with(tmp_path, servers) as (_, client):
        await batch(client, server="d", operations=[{"tool": "echo", "arguments": {"text": "warm"}}])
        ops = [{"tool": "sleep", "arguments": {"seconds": 30, "tag": f"op{i}"}} for i in range(3)]

        def seen(kind: str) -> list[str]:
            return sorted(p.name for p in markers.iterdir() if p.name.startswith(kind))

        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: batch(client, server="d", operations=ops, options={"maxConcurrent": 3}))
            with anyio.fail_after(20):
                while len(seen("started-")) < 3:  # every operation is running downstream
                    await anyio.sleep(0.05)
            tg.cancel_scope.cancel()  # the caller goes away
        with anyio.fail_after(20):
            while len(seen("cancelled-")) < 3:
                await anyio.sleep(0.05)
        assert seen("cancelled-") == ["cancelled-op0", "cancelled-op1", "cancelled-op2"]


async def test_a_crash_fails_only_the_operations_in_flight(tmp_path):
    async with hub_with(tmp_path) as (_, client):
        ops = [
            {"tool": "whoami"},
            {"tool": "sleep", "arguments": {"seconds": 5}},  # in flight when the server crashes
            {"tool": "crash"},  # starts when whoami is done
            {"tool": "whoami"},  # starts after the crash: on a new process
        ]
        with anyio.fail_after(30):
            result = await batch(client, server="d", operations=ops, options={"maxConcurrent": 2})
        out = result.structured_content["operations"]
        assert statuses(result) == ["ok", "error", "error", "ok"], result_text(result)
        assert out[1]["error"] == "server 'd' died during sleep; it is restarted on the next call"
        assert out[2]["error"] == "server 'd' died during crash; it is restarted on the next call"
        assert out[3]["structuredContent"]["pid"] != out[0]["structuredContent"]["pid"]
        again = await batch(client, server="d", operations=[{"tool": "echo", "arguments": {"text": "back"}}])
        assert statuses(again) == ["ok"]


async def test_inline_servers_are_refused_unless_allowed(tmp_path):
    target = {
        "name": "mine",
        "transport": {
            "type": "stdio",
            "command": sys.executable,
            "args": [str(DOWNSTREAM)],
            "env": {"PATH": "/opt/x"},
        },
    }
    ops = [{"tool": "echo", "arguments": {"text": "inline"}}]
    async with hub_with(tmp_path) as (hub, client):
        result = await batch(client, targetServer=target, operations=ops)
        assert result.is_error
        text = result_text(result)
        assert text.startswith(
            "targetServer 'mine' is not configured in hub.toml, and the hub does not run the command "
        )
        assert (
            f"[servers.mine]\ncommand = {json.dumps(sys.executable)}\nargs = [{json.dumps(str(DOWNSTREAM))}]"
            in text
        )
        assert "set [plugins.batchit] allow_inline_servers = true" in text
        assert set(hub.connections.status()) == {"d"}  # nothing was started or added
        websocket = await batch(
            client,
            targetServer={"name": "ws", "transport": {"type": "websocket", "url": "ws://x"}},
            operations=ops,
        )
        assert websocket.is_error and "does not connect to 'ws://x'" in result_text(websocket)

    async with hub_with(tmp_path, allow_inline_servers=True) as (hub, client):
        result = await batch(client, targetServer=target, operations=ops)
        assert statuses(result) == ["ok"] and "[0] mine echo: ok" in result_text(result)
        again = await batch(client, targetServer=target, operations=ops * 2)
        assert statuses(again) == ["ok", "ok"]
        # A request's ${VAR} stays text: it must not pull the hub's environment into a child or URL.
        literal = {**target, "transport": {**target["transport"], "env": {"DOWNSTREAM_GREETING": "${HOME}"}}}
        who = await batch(client, targetServer=literal, operations=[{"tool": "whoami"}])
        assert (
            who.structured_content["operations"][0]["structuredContent"]["env"]["DOWNSTREAM_GREETING"]
            == "${HOME}"
        )
        inline = [n for n in hub.connections.status() if n.startswith("inline-mine-")]
        assert len(inline) == 2 and sorted(hub.connections.status()[n]["starts"] for n in inline) == [1, 1]
        websocket = await batch(
            client,
            targetServer={"name": "ws", "transport": {"type": "websocket", "url": "ws://x"}},
            operations=ops,
        )
        assert "websocket is not supported" in result_text(websocket)


async def test_concurrent_batches_share_one_session_and_no_child_outlives_the_hub(tmp_path):
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    async with hub_with(tmp_path) as (hub, client):
        pids: list[int] = []

        async def one() -> None:
            result = await batch(
                client,
                server="d",
                operations=[{"tool": "whoami"}, {"tool": "sleep", "arguments": {"seconds": 0.2}}],
            )
            pids.append(result.structured_content["operations"][0]["structuredContent"]["pid"])

        async with anyio.create_task_group() as tg:
            for _ in range(4):
                tg.start_soon(one)
        assert len(set(pids)) == 1
        assert hub.connections.status()["d"]["starts"] == 1
    alive = {p.pid for p in psutil.Process().children(recursive=True) if p.status() != psutil.STATUS_ZOMBIE}
    assert alive <= before


async def test_a_long_chain_of_references_is_planned_and_skipped_after_a_failure(tmp_path):
    async with hub_with(tmp_path, max_operations=1500) as (_, client):
        ops = [{"id": "s0", "tool": "fail"}]
        ops += [
            {"id": f"s{i}", "tool": "echo", "arguments": {"text": {"$ref": f"s{i - 1}"}}}
            for i in range(1, 1200)
        ]
        result = await batch(client, server="d", operations=ops)
        assert statuses(result)[:2] == ["error", "skipped"] and statuses(result)[-1] == "skipped"
        assert result.structured_content["summary"]["skipped"] == 1199


async def test_include_and_max_result_bytes_size_the_answer(tmp_path):
    ops = [
        {"id": "big", "tool": "echo", "arguments": {"text": "é" * 300}},  # 600 bytes of UTF-8
        {"tool": "fail", "arguments": {"message": "nope"}},
        {"tool": "listing", "arguments": {"n": 2}},
    ]
    async with hub_with(tmp_path) as (_, client):
        # A bare configured name works as targetServer, as BatchIt callers write it.
        result = await batch(
            client, targetServer="d", operations=ops, options={"maxResultBytes": 101, "include": "all"}
        )
        big, failed, listing = result.structured_content["operations"]
        # Cut on a character boundary: 50 two-byte characters, and the rest counted.
        assert big == {
            "index": 0,
            "id": "big",
            "status": "ok",
            "durationMs": big["durationMs"],
            "text": "é" * 50,
            "cutBytes": 500,
        }
        assert failed["error"] == "Error executing tool fail"
        assert listing["structuredContent"] == {"items": ["item0", "item1"], "count": 2}  # under the cap
        text = result_text(result)
        assert "é" * 50 + "\n[... 500 more bytes cut: options.maxResultBytes = 101]" in text
        assert "é" * 51 not in text

        errors = await batch(client, server="d", operations=ops, options={"include": "errors"})
        entries = errors.structured_content["operations"]
        assert [set(e) for e in entries] == [
            {"index", "id", "status", "durationMs"},
            {"index", "status", "durationMs", "error"},
            {"index", "status", "durationMs"},
        ]
        assert "é" not in result_text(errors) and "Error executing tool fail" in result_text(errors)

        status = await batch(client, server="d", operations=ops, options={"include": "status"})
        assert status.structured_content["operations"] == [
            {"index": 0, "id": "big", "status": "ok"},
            {"index": 1, "status": "error"},
            {"index": 2, "status": "ok"},
        ]
        assert status.structured_content["summary"]["ok"] == 2 and status.is_error
        assert result_text(status).splitlines()[1:] == [
            "[0] big d echo: ok",
            "[1] d fail: error",
            "[2] d listing: ok",
        ]

        bad = await batch(client, server="d", operations=ops, options={"include": "some"})
        assert bad.is_error and "options.include" in result_text(bad)
        bad = await batch(client, server="d", operations=ops, options={"maxResultBytes": 0})
        assert bad.is_error and "options.maxResultBytes: Input should be greater than 0" in result_text(bad)
        unknown = await batch(client, targetServer="nope", operations=ops)
        assert (
            unknown.is_error
            and "targetServer 'nope' is not configured in hub.toml (configured: d)" in result_text(unknown)
        )


async def test_content_only_results_and_images_from_server_everything(tmp_path):
    """A downstream result without structuredContent comes as its content blocks (once); an
    image follows its operation's line in the text as the block it was."""
    servers = {"every": {"command": npm_bin("mcp-server-everything")}}
    async with hub_with(tmp_path, servers) as (_, client):
        ops = [
            {"tool": "echo", "arguments": {"message": "hello there"}},
            {"tool": "get-tiny-image"},
        ]
        with anyio.fail_after(60):
            result = await batch(client, server="every", operations=ops)
        assert statuses(result) == ["ok", "ok"], result_text(result)
        echo, image = result.structured_content["operations"]
        assert echo["content"] == [{"type": "text", "text": "Echo: hello there"}]
        assert "structuredContent" not in echo
        assert any(block["type"] == "image" for block in image["content"])
        assert result_text(result).count("Echo: hello there") == 1
        images = [b for b in result.content if b.type == "image"]
        assert len(images) == 1
        blocks = [b.type for b in result.content]
        assert blocks[:2] == ["text", "image"], blocks  # the text is one block up to the image
        before = result.content[0].text
        assert before.startswith("batch_execute: 2 operations")
        assert before.index("Echo: hello there") < before.index("[1] every get-tiny-image: ok")

        capped = await batch(client, server="every", operations=ops, options={"maxResultBytes": 40})
        echo, image = capped.structured_content["operations"]
        # Over 40 bytes as JSON, but its text fits: shown whole as text, nothing cut.
        assert echo["text"] == "Echo: hello there" and "cutBytes" not in echo
        assert image["cutBytes"] > 0 and len(image["text"].encode()) <= 40
        assert not [b for b in capped.content if b.type == "image"]  # a cut result drops its blocks


DEEP: list[Any] = []
for _ in range(300):
    DEEP = [DEEP]

# What the raw server below answers for each of its tools, malformed results included (an SDK
# server cannot send those).
RAW_RESULTS: dict[str, Any] = {
    "fine": {"content": [{"type": "text", "text": "fine", "annotations": {"priority": 1}}]},
    "no_content": {"structuredContent": {"a": 1}},
    "not_an_object": [1, 2],
    "text_without_text": {"content": [{"type": "text"}]},
    "bad_image": {"content": [{"type": "image", "data": 5}]},
    "structured_list": {"content": [], "structuredContent": [1]},
    "error_as_text": {"content": [], "isError": "true"},
    "deep_meta": {"content": [{"type": "text", "text": "t", "_meta": {"x": DEEP}}]},
    "surrogate_key": {"content": [], "structuredContent": {"\udc00": 1}},
    "surrogate_text": {"content": [{"type": "text", "text": "ab\udc00cdef"}]},
    "deep_json_text": {"content": [{"type": "text", "text": "[" * 100_000 + "]" * 100_000}]},
    "bogus_annotations": {"content": [{"type": "text", "text": "t", "annotations": "bogus"}]},
    # Keys the protocol does not define are dropped, whatever they hold.
    "extra_keys": {
        "content": [
            {"type": "text", "text": "t", "\udc00": 1},
            {"type": "image", "data": "AAAA", "mimeType": "image/png", "x": DEEP},
        ]
    },
}
RAW_SERVER = r"""
import json, sys
RESULTS = json.loads(open(sys.argv[1]).read())
for line in sys.stdin:
    message = json.loads(line)
    if "id" not in message:
        continue
    if message["method"] == "initialize":
        result = {"protocolVersion": message["params"]["protocolVersion"], "capabilities": {"tools": {}},
                  "serverInfo": {"name": "raw", "version": "1"}}
    elif message["method"] == "tools/list":
        result = {"tools": [{"name": name, "inputSchema": {"type": "object"}} for name in RESULTS]}
    else:
        result = RESULTS[message["params"]["name"]]
    print(json.dumps({"jsonrpc": "2.0", "id": message["id"], "result": result}), flush=True)
"""


def raw_server(tmp_path: Path) -> dict[str, Any]:
    """The `[servers.raw]` table of the raw server, answering `RAW_RESULTS`."""
    script, results = tmp_path / "raw_server.py", tmp_path / "raw_results.json"
    script.write_text(RAW_SERVER)
    results.write_text(json.dumps(RAW_RESULTS))
    return {"command": sys.executable, "args": [str(script), str(results)]}


async def test_a_malformed_result_is_that_operations_error(tmp_path):
    """Results are read as the server sent them; one the batch cannot read is an error naming
    what is wrong with it, and the rest of the batch is unharmed (the good one comes back as it
    was sent, its block's annotations included)."""
    names = [name for name in RAW_RESULTS if name not in ("surrogate_text", "deep_json_text")]
    raw = raw_server(tmp_path)
    async with hub_with(tmp_path, {"raw": raw}) as (_, client):
        with anyio.fail_after(60):
            result = await batch(client, server="raw", operations=[{"tool": name} for name in names])
    assert statuses(result) == ["ok"] + ["error"] * 9 + ["ok"], result_text(result)
    fine, *bad, extra = result.structured_content["operations"]
    assert fine["content"] == [{"type": "text", "text": "fine", "annotations": {"priority": 1}}]
    assert extra["content"] == [
        {"type": "text", "text": "t"},
        {"type": "image", "data": "AAAA", "mimeType": "image/png"},
    ]
    errors = [op["error"] for op in bad]
    assert all("the server's result is malformed" in error for error in errors), errors
    assert "no `content` list" in errors[0] and "no `content` list" in errors[1]
    assert "content[0] is a text block without a `text` string" in errors[2]
    assert "content[0] is not a content block" in errors[3]
    assert "structuredContent is list" in errors[4]
    assert 'isError is "true", not true or false' in errors[5]
    assert "content[0] cannot be sent on" in errors[6] and "depth" in errors[6]
    assert "it cannot be sent on" in errors[7] and "surrogates not allowed" in errors[7]
    assert "content[0] is not a content block" in errors[8]


async def test_lone_surrogates_and_deep_json_in_results(tmp_path):
    """A lone surrogate in a result's text (valid JSON) survives maxResultBytes, counted as its
    three bytes; a reference into text that is JSON nested too deep to read is that operation's
    error, not the batch's end."""
    raw = raw_server(tmp_path)
    ops = [
        {"tool": "surrogate_text"},
        {"tool": "deep_json_text", "id": "deep"},
        {"tool": "fine", "arguments": {"x": {"$ref": "deep", "path": "text.0"}}},
    ]
    async with hub_with(tmp_path, {"raw": raw}) as (_, client):
        with anyio.fail_after(60):
            whole = await batch(client, server="raw", operations=ops[:1])
            capped = await batch(client, server="raw", operations=ops[:1], options={"maxResultBytes": 4})
            deep = await batch(client, server="raw", operations=ops[1:])
    assert whole.structured_content["operations"][0]["content"][0]["text"] == "ab\udc00cdef"
    surrogate = capped.structured_content["operations"][0]
    assert surrogate["text"] == "ab" and surrogate["cutBytes"] == 7  # the surrogate's 3 bytes did not fit
    assert statuses(deep) == ["ok", "error"], result_text(deep)
    referring = deep.structured_content["operations"][1]
    assert "nested too deep" in referring["error"]
