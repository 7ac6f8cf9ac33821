"""What servers ask of their client, relayed by real hub processes to the SDK `Client` in both
eras: through stdio in process (`hub serve --no-share`), through the bridge to the shared process
(`hub serve`) and over the hub's streamable HTTP; from the asking server over stdio in both eras
and over streamable HTTP, and from server-everything. Two sessions of one shared process get
only their own questions."""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import warnings
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from askingclient import ASKING, EXPECTED, Answers, answer_of
from hubtests import hub_env, npm_bin, stop_shared_hubs, wait_for
from mcp import Client, StdioServerParameters
from mcp.shared.exceptions import MCPDeprecationWarning

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]
VENV_BIN = str(Path(sys.executable).parent)


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> Iterator[tuple[dict[str, str], Path]]:
    """A hub.toml with the asking server over stdio (handshake and 2026-07-28) and over streamable
    HTTP, and server-everything; the environment of the hubs that serve it."""
    tmp = tmp_path_factory.mktemp("relay")
    port_file = tmp / "asking.port"
    http_server = subprocess.Popen(
        [sys.executable, str(ASKING), "--http", str(port_file)], stderr=subprocess.DEVNULL, cwd=tmp
    )
    try:
        port = wait_for(lambda: port_file.exists() and port_file.read_text(), what="the asking HTTP server")
        (tmp / "hub.toml").write_text(
            '[plugins]\nenabled = ["proxy"]\n[daemon]\nidle_exit_s = 5\n'
            f'[servers.asking]\ncommand = "{sys.executable}"\nargs = ["{ASKING}"]\n'
            f'[servers.asking26]\ncommand = "{sys.executable}"\nargs = ["{ASKING}"]\nprotocol = "auto"\n'
            f'[servers.askhttp]\nurl = "http://127.0.0.1:{port}/mcp"\n'
            f'[servers.everything]\ncommand = "{npm_bin("mcp-server-everything")}"\nargs = ["stdio"]\n'
        )
        env = hub_env(
            tmp, HUB_CONFIG=str(tmp / "hub.toml"), PATH=os.pathsep.join([VENV_BIN, os.environ["PATH"]])
        )
        yield env, tmp
        with contextlib.suppress(Exception):
            stop_shared_hubs({**env, "HUB_SHARE": "1"}, tmp)
    finally:
        http_server.terminate()
        http_server.wait(timeout=20)


@pytest.fixture(scope="module")
def http_hub(setup) -> Iterator[str]:
    """The hub serving streamable HTTP: its URL."""
    env, tmp = setup
    hub = subprocess.Popen(
        [sys.executable, "-m", "hub", "serve", "--transport", "http", "--port", "0"],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp,
    )
    try:
        assert hub.stderr is not None
        port = None
        for line in hub.stderr:
            found = re.search(r"hub: listening on port (\d+)", line)
            if found:
                port = found.group(1)
                break
        assert port, "the hub did not say which port it took"
        threading_drain(hub.stderr)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        hub.terminate()
        hub.wait(timeout=20)


def threading_drain(stream: Any) -> None:
    """Read the rest of a child's stderr in a thread, so its pipe never fills."""
    import threading

    threading.Thread(target=lambda: [None for _ in stream], daemon=True).start()


@contextlib.asynccontextmanager
async def connect(
    transport: str, mode: str, answers: Answers, setup: Any, url: str | None = None, **options: Any
) -> AsyncIterator[Client]:
    env, tmp = setup
    if transport == "http":
        target: Any = url
    else:
        share = {"stdio": "0", "bridge": "1"}[transport]
        args = ["-m", "hub", "serve"] + (["--no-share"] if share == "0" else [])
        target = StdioServerParameters(
            command=sys.executable, args=args, env={**env, "HUB_SHARE": share}, cwd=str(tmp)
        )
    async with Client(target, mode=mode, **answers.callbacks(), **options) as client:  # type: ignore[arg-type]
        yield client


async def wait_for_tools(client: Client, *names: str) -> None:
    """The first session of a fresh hub may list before its servers have answered: ask again."""
    with anyio.fail_after(60):
        while not set(names) <= {tool.name for tool in (await client.list_tools()).tools}:
            await anyio.sleep(0.2)


@pytest.mark.parametrize("mode", ["legacy", "auto"])
@pytest.mark.parametrize("transport", ["stdio", "bridge", "http"])
async def test_questions_of_servers_reach_the_client_on_every_transport(setup, http_hub, transport, mode):
    answers = Answers()
    options = {"log_level": "error"} if mode == "auto" else {}
    async with connect(transport, mode, answers, setup, http_hub, **options) as client:
        await wait_for_tools(client, "asking__all", "asking26__chain", "askhttp__all")
        assert answer_of(await client.call_tool("asking__all", {"prompt": "P"})) == EXPECTED["all"]
        assert answer_of(await client.call_tool("asking26__chain", {})) == EXPECTED["chain"]
        assert answer_of(await client.call_tool("askhttp__all", {"prompt": "P"})) == EXPECTED["all"]
        if mode == "legacy":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", MCPDeprecationWarning)
                await client.set_logging_level("error")
        answers.logs.clear()
        await client.call_tool("asking__noisy", {})
        assert answers.logs == ["error", "critical", "alert", "emergency"]


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_server_everything_asks_through_the_hub(setup, mode):
    answers = Answers()
    async with connect("stdio", mode, answers, setup) as client:
        await wait_for_tools(client, "everything__trigger-sampling-request", "everything__get-roots-list")
        calls = {
            "trigger-sampling-request": ({"prompt": "hello", "maxTokens": 10}, "answer to"),
            "trigger-elicitation-request": ({}, "Name: Ada"),
            "trigger-url-elicitation": (
                {"url": "https://example.com/sign-in"},
                "completed the URL elicitation",
            ),
            "get-roots-list": ({}, "file:///work/project"),
        }
        for tool, (arguments, expected) in calls.items():
            result = await client.call_tool(f"everything__{tool}", arguments)
            text = "".join(getattr(block, "text", "") for block in result.content)
            assert not result.is_error and expected in text, (tool, text)
        assert answers.asked == ["sampling", "elicitation:form", "elicitation:url", "roots"]
        if mode == "legacy":  # the client's roots changed: the server asks again, outside any call
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", MCPDeprecationWarning)
                await client.session.send_roots_list_changed()
            with anyio.fail_after(20):
                while answers.asked.count("roots") < 2:
                    await anyio.sleep(0.05)


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_two_sessions_of_one_shared_process_each_get_only_their_own_questions(setup, mode):
    """Both calls wait in their sampling callbacks until the other's question has arrived too,
    so the two questions are out at once, on one shared downstream server's process or its
    sessions' own (see README, "Requests from servers")."""
    first, second = Answers("A"), Answers("B")
    arrived = {"A": anyio.Event(), "B": anyio.Event()}

    def waiting_for(other: str, answers: Answers) -> Any:
        answer = answers.sampling

        async def sampling(ctx: Any, params: Any) -> Any:
            arrived[answers.tag].set()
            with anyio.fail_after(30):
                await arrived[other].wait()
            return await answer(ctx, params)

        return sampling

    async with (
        connect("bridge", mode, first, setup) as a,
        connect("bridge", mode, second, setup) as b,
    ):
        await wait_for_tools(a, "asking__sample")
        await wait_for_tools(b, "asking__sample")
        assert answer_of(await a.call_tool("asking__sample", {"prompt": "warm-up"}))  # the server asks
        first.sampling = waiting_for("B", first)  # type: ignore[method-assign]
        second.sampling = waiting_for("A", second)  # type: ignore[method-assign]
        a.session._sampling_callback = first.sampling  # type: ignore[attr-defined]
        b.session._sampling_callback = second.sampling  # type: ignore[attr-defined]
        results: dict[str, Any] = {}

        async def call(client: Client, tag: str) -> None:
            results[tag] = answer_of(await client.call_tool("asking__sample", {"prompt": f"from {tag}"}))

        async with anyio.create_task_group() as tg:
            tg.start_soon(call, a, "A")
            tg.start_soon(call, b, "B")
        # B's own connection; A's calls keep the shared one (older sessions' connections close).
        with anyio.fail_after(20):
            while await own_connections(a, "asking") != 1:
                await anyio.sleep(0.1)
    assert results == {
        tag: {"sample": {"model": "fake-llm", "text": f"answer to from {tag}"}} for tag in "AB"
    }
    assert first.prompts == ["warm-up", "from A"] and second.prompts == ["from B"]


async def own_connections(client: Client, server: str) -> int:
    status = json.loads((await client.read_resource("hub://status")).contents[0].text)  # type: ignore[union-attr]
    return int(status["servers"][server]["own_connections"])
