"""Protocol abuse over raw stdio: every malformed message gets the JSON-RPC error the spec names,
with its id where it can be recovered, and the hub keeps serving; end of input still delivers
every answer; odd kinds of stdin (closed, /dev/null, a terminal) end or start quietly."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hubtests import hub_env, stop_shared_hubs

from hub.server.hygiene import MAX_DEPTH, MessageCheck

INIT = {
    "jsonrpc": "2.0",
    "id": "init",
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "t", "version": "0"},
    },
}


class RawPeer:
    """A hub subprocess fed raw bytes, read line by line with a deadline per answer."""

    def __init__(self, tmp_path: Path, *args: str, **env: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hub", "--plugins", "batchit", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=(tmp_path / "stderr.log").open("w"),
            env=hub_env(tmp_path, HUB_FAST_START="0", **env),
            cwd=tmp_path,
        )
        self.buffer = b""

    def send(self, raw: bytes | str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((raw.encode() if isinstance(raw, str) else raw) + b"\n")
        self.proc.stdin.flush()

    def read(self, deadline_s: float) -> object:
        """The next line as JSON; fails the test if none comes before the deadline."""
        assert self.proc.stdout is not None
        end = time.monotonic() + deadline_s
        while b"\n" not in self.buffer:
            left = end - time.monotonic()
            assert left > 0, "no answer within the deadline"
            ready, _, _ = select.select([self.proc.stdout], [], [], left)
            if ready:
                chunk = os.read(self.proc.stdout.fileno(), 65536)
                assert chunk, "the hub closed stdout"
                self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return json.loads(line)

    def close(self) -> int:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        return self.proc.wait(timeout=30)


def _call(request_id: object, arguments_json: str) -> str:
    return (
        f'{{"jsonrpc":"2.0","id":{json.dumps(request_id)},"method":"tools/call",'
        f'"params":{{"name":"context_set","arguments":{arguments_json}}}}}'
    )


# (what, raw line, expected answer: (id, code) or a list of them for a batch)
ABUSE: list[tuple[str, str | bytes, object]] = [
    ("lone surrogate", _call(1, '{"key":"k","value":"\\ud800"}'), (1, -32602)),
    ("surrogate in a key", _call(2, '{"\\udfff":"v","key":"k"}'), (2, -32602)),
    ("nested 500 deep", _call(3, '{"key":"k","value":' + "[" * 500 + "]" * 500 + "}"), (3, -32602)),
    ("nested 5000 deep", _call(4, '{"key":' + "[" * 5000 + "]" * 5000 + "}"), (4, -32602)),
    ("batch array", json.dumps([{"jsonrpc": "2.0", "id": 5, "method": "ping"}]), [(5, -32600)]),
    ("empty batch", "[]", (None, -32600)),
    ("jsonrpc 1.0", json.dumps({"jsonrpc": "1.0", "id": 6, "method": "ping"}), (6, -32600)),
    ("no jsonrpc", json.dumps({"id": 7, "method": "ping"}), (7, -32600)),
    (
        "params a string",
        json.dumps({"jsonrpc": "2.0", "id": 8, "method": "tools/list", "params": "x"}),
        (8, -32602),
    ),
    (
        "params an array",
        json.dumps({"jsonrpc": "2.0", "id": 9, "method": "ping", "params": [1]}),
        (9, -32602),
    ),
    ("method a number", json.dumps({"jsonrpc": "2.0", "id": 10, "method": 5}), (10, -32600)),
    ("id null", json.dumps({"jsonrpc": "2.0", "id": None, "method": "ping"}), (None, -32600)),
    ("id a float", json.dumps({"jsonrpc": "2.0", "id": 1.5, "method": "ping"}), (None, -32600)),
    ("garbage", "hello world", (None, -32700)),
    ("truncated", '{"jsonrpc":"2.0","id":11,"method":"ping"', (11, -32700)),
    ("invalid UTF-8", b"\xff\xfe{}", (None, -32700)),
    ("a number", "42", (None, -32600)),
    ("empty object", "{}", (None, -32600)),
    # tools/call params the SDK refuses are refused, not run with no arguments.
    ("arguments a list", _call(13, "[]"), (13, -32602)),
    ("arguments false", _call(14, "false"), (14, -32602)),
    ("arguments a string", _call(15, '""'), (15, -32602)),
    (
        "_meta a string",
        '{"jsonrpc":"2.0","id":16,"method":"tools/call","params":{"name":"context_set","_meta":"x"}}',
        (16, -32602),
    ),
    (
        "progressToken an object",
        '{"jsonrpc":"2.0","id":17,"method":"tools/call",'
        '"params":{"name":"context_set","_meta":{"progressToken":{}}}}',
        (17, -32602),
    ),
    (
        "a request with an error member",
        json.dumps({"jsonrpc": "2.0", "id": 12, "method": "ping", "error": {"code": 1, "message": "x"}}),
        (12, -32600),
    ),
]


def _check(answer: object, expected: object) -> None:
    if isinstance(expected, list):
        assert isinstance(answer, list) and len(answer) == len(expected), answer
        for item, one in zip(answer, expected, strict=True):
            _check(item, one)
        return
    request_id, code = expected  # type: ignore[misc]
    assert isinstance(answer, dict), answer
    assert answer["jsonrpc"] == "2.0" and answer["id"] == request_id, answer
    assert answer["error"]["code"] == code, answer
    assert answer["error"]["message"], answer


def test_every_malformed_message_is_answered_and_the_hub_keeps_serving(tmp_path):
    peer = RawPeer(tmp_path)
    try:
        # Handshake era: a request before initialize is told so (ping is allowed).
        peer.send(json.dumps({"jsonrpc": "2.0", "id": "early", "method": "tools/list", "params": {}}))
        early = peer.read(30)  # the first answer waits for the hub to start
        assert early["id"] == "early" and early["error"]["code"] == -32600  # type: ignore[index]
        assert "not initialized" in early["error"]["message"]  # type: ignore[index]
        peer.send(json.dumps({"jsonrpc": "2.0", "id": "p0", "method": "ping"}))
        assert peer.read(5) == {"jsonrpc": "2.0", "id": "p0", "result": {}}
        peer.send(json.dumps(INIT))
        assert peer.read(5)["id"] == "init"  # type: ignore[index]
        peer.send('{"jsonrpc":"2.0","method":"notifications/initialized"}')
        for what, raw, expected in ABUSE:
            peer.send(raw)
            answer = peer.read(5)
            try:
                _check(answer, expected)
            except AssertionError as exc:
                raise AssertionError(f"{what}: {exc}") from None
        # A malformed notification is not answered (JSON-RPC forbids it); the next request is.
        peer.send(json.dumps({"jsonrpc": "2.0", "method": "notifications/x", "params": "bad"}))
        peer.send(json.dumps({"jsonrpc": "2.0", "id": "last", "method": "ping"}))
        assert peer.read(5) == {"jsonrpc": "2.0", "id": "last", "result": {}}
        # Deep but within the limit: served normally.
        deep = "[" * (MAX_DEPTH - 20) + "]" * (MAX_DEPTH - 20)
        peer.send(_call("ok", json.dumps({"key": "k", "value": "v"})))
        assert peer.read(5)["result"]["isError"] is False  # type: ignore[index]
        peer.send(_call("deep-ok", '{"key":"k","value":' + deep + "}"))
        assert peer.read(5)["result"]["isError"] is True  # type: ignore[index]  # value must be a string
    finally:
        assert peer.close() == 0


def test_answers_to_piped_requests_are_written_before_exit(tmp_path):
    """Requests followed at once by end of input: every one is answered (the last one too)."""
    lines = [json.dumps(INIT), '{"jsonrpc":"2.0","method":"notifications/initialized"}']
    lines += [_call(i, json.dumps({"key": f"k{i}", "value": "v" * 1000})) for i in range(20)]
    lines.append(
        json.dumps(
            {"jsonrpc": "2.0", "id": "read", "method": "resources/read", "params": {"uri": "hub://context"}}
        )
    )
    out = subprocess.run(
        [sys.executable, "-m", "hub", "--plugins", "batchit"],
        input="\n".join(lines) + "\n",
        capture_output=True,
        text=True,
        env=hub_env(tmp_path, HUB_FAST_START="0"),
        cwd=tmp_path,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    answers = {m["id"]: m for m in map(json.loads, out.stdout.splitlines())}
    assert set(answers) == {"init", "read", *range(20)}
    assert all(answers[i]["result"]["isError"] is False for i in range(20))


@pytest.mark.parametrize("stdin", ["devnull", "closed", "empty file"])
def test_no_input_ends_the_hub_quietly(tmp_path, stdin):
    empty = tmp_path / "empty"
    empty.write_text("")
    command = [sys.executable, "-m", "hub", "--plugins", "batchit"]
    env = hub_env(tmp_path)
    if stdin == "closed":
        out = subprocess.run(
            ["/bin/sh", "-c", 'exec "$@" <&-', "sh", *command],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
    else:
        with open(os.devnull) if stdin == "devnull" else empty.open() as handle:
            out = subprocess.run(command, stdin=handle, capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout == ""
    assert "Traceback" not in out.stderr and "Error" not in out.stderr, out.stderr


@pytest.mark.parametrize("share", ["0", "1"], ids=["in-process", "bridge"])
def test_a_terminal_on_stdin_gets_one_line_saying_what_the_hub_is(tmp_path, share):
    import pty

    leader, follower = pty.openpty()
    env = hub_env(tmp_path, HUB_SHARE=share)
    proc = subprocess.Popen(
        [sys.executable, "-m", "hub", "--plugins", "batchit"],
        stdin=follower,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    os.close(follower)
    try:
        assert proc.stderr is not None
        seen = []
        for line in proc.stderr:
            seen.append(line.decode())
            if b"speaks JSON-RPC on stdin" in line:
                break
        hint = [line for line in seen if "MCP server" in line]
        assert len(hint) == 1 and "inspector" in hint[0], seen
        os.write(leader, b'{"jsonrpc":"2.0","id":1,"method":"ping"}\n')
        assert proc.stdout is not None
        assert json.loads(proc.stdout.readline()) == {"jsonrpc": "2.0", "id": 1, "result": {}}
        os.write(leader, b"\x04")  # Ctrl-D: end of input
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(leader)
        if share == "1":
            stop_shared_hubs(env, tmp_path)


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ('{"jsonrpc":"2.0","id":"x","method":"ping","params":"s"}', -32602),
        ('[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","method":"n"}]', -32600),
    ],
)
def test_message_check_unit(text, code):
    parsed, answer = MessageCheck().parse(text)
    assert parsed is None
    first = answer[0] if isinstance(answer, list) else answer
    assert first["error"]["code"] == code
    if isinstance(answer, list):
        assert len(answer) == 1  # the notification in the batch gets no answer


def test_piped_requests_are_answered_with_a_fast_start_too(tmp_path):
    """With answers kept from the last run, the fast start reads input before the hub is up;
    input that ends then must still get every answer, not a silent exit."""
    meta = {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientInfo": {"name": "test", "version": "1"},
        "io.modelcontextprotocol/clientCapabilities": {},
    }
    modern = [
        json.dumps({"jsonrpc": "2.0", "id": "d", "method": "server/discover", "params": {"_meta": meta}}),
        json.dumps({"jsonrpc": "2.0", "id": "t", "method": "tools/list", "params": {"_meta": meta}}),
        json.dumps(
            {
                "jsonrpc": "2.0",
                "id": "c",
                "method": "tools/call",
                "params": {"_meta": meta, "name": "context_set", "arguments": {"key": "k", "value": "v"}},
            }
        ),
        "not json",
    ]
    env = hub_env(tmp_path)
    for run in range(2):  # the first run keeps the answers the second starts with
        out = subprocess.run(
            [sys.executable, "-m", "hub", "--plugins", "batchit"],
            input="\n".join(modern) + "\n",
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=60,
        )
        assert out.returncode == 0, out.stderr
        answers = [json.loads(line) for line in out.stdout.splitlines()]
        assert {a["id"] for a in answers} == {"d", "t", "c", None}, (run, answers)
        call = next(a for a in answers if a["id"] == "c")
        assert call.get("result", {}).get("isError") is False, call
        assert (tmp_path / "state" / "fastfront.json").exists()


def test_a_terminal_that_only_gets_the_hint_leaves_no_shared_process_behind(tmp_path):
    """`hub` typed in a terminal (the bridge): the hint names this hub by its full path, and
    Ctrl-D before any input ends it without starting a shared process."""
    import pty

    leader, follower = pty.openpty()
    env = hub_env(tmp_path, HUB_SHARE="1")
    hub = str(Path(sys.executable).parent / "hub")
    proc = subprocess.Popen([hub, "--plugins", "batchit"], stdin=follower, stderr=subprocess.PIPE, env=env)
    os.close(follower)
    try:
        assert proc.stderr is not None
        hint = proc.stderr.readline().decode()
        assert f"inspector {hub} serve" in hint, hint
        os.write(leader, b"\x04")  # Ctrl-D
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(leader)
    assert not (tmp_path / "state" / "hub.sqlite").exists()  # no hub ever started
