"""The hub's stdio client for downstream servers (hub.downstream), against real processes: raw
requests beside the SDK session, errors, a server that dies, cancellation, progress before the
answer, a flood of messages the session is slow to take, and the shutdown order."""

from __future__ import annotations

import os
import sys

import anyio
import pytest
from hubtests import DOWNSTREAM
from mcp import ClientSession, StdioServerParameters
from mcp.shared.exceptions import MCPError
from mcp.types import CONNECTION_CLOSED

from hub.client import stdio as downstream
from hub.client.stdio import QUEUE_PAUSE, RAW_ID_BASE, open_stdio

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def params(*args: str, **env: str) -> StdioServerParameters:
    return StdioServerParameters(command=sys.executable, args=[str(a) for a in args], env=env or None)


def call(name: str, **arguments: object) -> dict:
    return {"name": name, "arguments": arguments}


async def test_raw_requests_beside_the_session(tmp_path):
    with open(tmp_path / "stderr.log", "w") as errlog:
        async with open_stdio(params(DOWNSTREAM), errlog) as ds, ClientSession(ds.read, ds.write) as session:
            await session.initialize()
            assert (await ds.request("tools/call", call("echo", text="raw")))["content"][0]["text"] == "raw"
            listed = await session.list_tools()  # the session goes on as over the SDK's transport
            assert "echo" in {t.name for t in listed.tools}
            async with anyio.create_task_group() as tg:  # concurrent raw requests, each its answer
                answers: dict[int, int] = {}

                async def add(n: int) -> None:
                    answers[n] = (await ds.request("tools/call", call("add", a=n, b=1)))["structuredContent"][
                        "result"
                    ]

                for n in range(20):
                    tg.start_soon(add, n)
            assert answers == {n: n + 1 for n in range(20)}
            with pytest.raises(MCPError) as unknown:
                await ds.request("no/such/method", {})
            assert unknown.value.code == -32601


async def test_a_server_that_dies_fails_raw_requests_and_ends_the_session(tmp_path):
    with open(tmp_path / "stderr.log", "w") as errlog:
        async with open_stdio(params(DOWNSTREAM), errlog) as ds, ClientSession(ds.read, ds.write) as session:
            await session.initialize()
            with pytest.raises(MCPError) as died:
                await ds.request("tools/call", call("crash"))
            assert died.value.code == CONNECTION_CLOSED
            with pytest.raises(MCPError):
                await ds.request("tools/call", call("echo", text="after"))
            with anyio.fail_after(10), pytest.raises(MCPError):
                await session.list_tools()


async def test_a_cancelled_raw_request_is_cancelled_downstream(tmp_path):
    markers = tmp_path / "markers"
    markers.mkdir()
    with open(tmp_path / "stderr.log", "w") as errlog:
        server = params(DOWNSTREAM, DOWNSTREAM_MARKER_DIR=str(markers), PATH=os.environ["PATH"])
        async with open_stdio(server, errlog) as ds, ClientSession(ds.read, ds.write) as session:
            await session.initialize()
            with anyio.move_on_after(0.5):
                await ds.request("tools/call", call("sleep", seconds=30, tag="raw"))
            with anyio.fail_after(10):
                while not (markers / "cancelled-raw").exists():
                    await anyio.sleep(0.05)
            assert (await ds.request("tools/call", call("echo", text="on")))["content"][0]["text"] == "on"


async def test_progress_reaches_the_caller_before_the_answer(tmp_path):
    with open(tmp_path / "stderr.log", "w") as errlog:
        async with open_stdio(params(DOWNSTREAM), errlog) as ds, ClientSession(ds.read, ds.write) as session:
            await session.initialize()
            for _ in range(5):
                seen: list[float] = []

                async def on_progress(
                    progress: float, total: float | None, message: str | None, seen: list[float] = seen
                ) -> None:
                    await anyio.sleep(0.01)  # a slow caller: the answer must still come after
                    seen.append(progress)

                result = await ds.request("tools/call", call("count", to=4, delay=0), progress=on_progress)
                assert result["structuredContent"] == {"result": 4}
                assert seen == [1, 2, 3, 4]


async def test_a_caller_that_takes_no_progress_holds_up_no_other_caller(tmp_path):
    """Found by a hostile client that stopped reading in the shared process: its progress held
    the one task that delivers this server's messages, so another session's calls to the same
    server waited. Each caller now relays its own progress."""
    with open(tmp_path / "stderr.log", "w") as errlog:
        async with (
            open_stdio(params(DOWNSTREAM), errlog) as ds,
            ClientSession(ds.read, ds.write) as session,
            anyio.create_task_group() as tg,
        ):
            await session.initialize()
            stuck = anyio.Event()

            async def never_taken(progress: float, total: float | None, message: str | None) -> None:
                stuck.set()
                await anyio.sleep_forever()  # a client that does not read its output

            tg.start_soon(
                lambda: ds.request("tools/call", call("count", to=2000, delay=0), progress=never_taken)
            )
            with anyio.fail_after(30):
                await stuck.wait()
                for n in range(3):  # raw requests and the SDK session's own
                    answer = await ds.request("tools/call", call("echo", text=f"other {n}"))
                    assert answer["content"][0]["text"] == f"other {n}"
                    assert (await session.call_tool("echo", {"text": "sdk"})).content[0].text == "sdk"
            tg.cancel_scope.cancel()


async def test_a_second_answer_to_one_request_is_dropped(tmp_path):
    twice = tmp_path / "twice.py"
    twice.write_text(
        "import json, sys\n"
        "request = json.loads(sys.stdin.readline())\n"
        "for text in ('first', 'second'):\n"
        "    answer = {'jsonrpc': '2.0', 'id': request['id'], 'result': {'text': text}}\n"
        "    print(json.dumps(answer), flush=True)\n"
        "sys.stdin.read()\n"
    )
    with open(tmp_path / "stderr.log", "w") as errlog:
        async with open_stdio(params(twice), errlog) as ds:
            with anyio.fail_after(30):
                assert await ds.request("tools/call", call("x")) == {"text": "first"}


FLOOD = """
import json, sys
first = json.loads(sys.stdin.readline())  # a raw request
for n in range({n}):
    print(json.dumps({{"jsonrpc": "2.0", "method": "notifications/message",
                      "params": {{"level": "info", "data": n}}}}), flush=True)
print(json.dumps({{"jsonrpc": "2.0", "id": first["id"], "result": {{"done": True}}}}), flush=True)
sys.stdin.read()
"""


async def test_a_flood_the_session_is_slow_to_take_pauses_reading(tmp_path):
    script = tmp_path / "flood.py"
    count = QUEUE_PAUSE * 16
    script.write_text(FLOOD.format(n=count))
    with open(tmp_path / "stderr.log", "w") as errlog:
        async with open_stdio(params(script), errlog) as ds, anyio.create_task_group() as tg:
            answer: dict = {}

            async def ask() -> None:
                answer.update(await ds.request("tools/call", call("x")))

            tg.start_soon(ask)
            with anyio.fail_after(10):
                while not ds._queue or ds._reading:  # nothing taken from `read` yet: reading pauses
                    await anyio.sleep(0.01)
            # Bounded by the pause (plus what one 64 KiB read held), not by the flood.
            assert len(ds._queue) < QUEUE_PAUSE + 65536 // 50 < count
            received = []
            with anyio.fail_after(20):
                while len(received) < count:
                    received.append((await ds.read.receive()).message.params["data"])
                while not answer:
                    await anyio.sleep(0.01)
            assert received == list(range(count)) and answer == {"done": True}


STUBBORN = """
import signal, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("ignoring SIGTERM", file=sys.stderr, flush=True)
sys.stdin.read()
while True:
    time.sleep(1)
"""


async def test_a_server_that_ignores_its_stdin_and_sigterm_is_killed(tmp_path, monkeypatch):
    monkeypatch.setattr(downstream, "TERMINATION_S", 0.3)
    script = tmp_path / "stubborn.py"
    script.write_text(STUBBORN)
    log = tmp_path / "stderr.log"
    with open(log, "w") as errlog:
        async with open_stdio(params(script), errlog) as ds:
            with anyio.fail_after(10):
                while "ignoring" not in log.read_text():
                    await anyio.sleep(0.02)
            process = ds.process
    assert process.returncode == -9


def test_raw_ids_never_meet_the_sessions():
    assert RAW_ID_BASE > 2**32  # the SDK session counts up from 0; JSON numbers stay exact below 2**53
    assert RAW_ID_BASE < 2**53
