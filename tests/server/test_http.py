"""HTTP hardening over a real socket: DNS-rebinding checks on every loopback address served
without a token, the bearer scheme in any case, malformed JSON-RPC answered, and a port in use
said in one line."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest
from hubtests import hub_env

ACCEPT = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
INIT = {
    "jsonrpc": "2.0",
    "id": 0,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "t", "version": "0"},
    },
}


def _serve(tmp_path: Path, host: str, **env: str) -> Iterator[str]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hub",
            "--plugins",
            "batchit",
            "serve",
            "-t",
            "http",
            "--host",
            host,
            "--port",
            "0",
        ],
        stdin=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=hub_env(tmp_path, **env),
        cwd=tmp_path,
        text=True,
    )
    try:
        assert proc.stderr is not None
        port = None
        for line in proc.stderr:
            found = re.search(r"listening on port (\d+)", line)
            if found:
                port = int(found.group(1))
                break
        assert port, "the hub did not start"
        # Keep reading its log so a chatty hub never blocks on a full pipe.
        threading.Thread(target=proc.stderr.read, daemon=True).start()
        yield f"http://{host}:{port}/mcp"
    finally:
        proc.terminate()
        proc.wait(timeout=20)


@pytest.fixture
def open_hub(tmp_path: Path) -> Iterator[str]:
    """A hub without a token on 127.0.0.2: loopback, but not one of the SDK's three names."""
    yield from _serve(tmp_path, "127.0.0.2")


@pytest.fixture
def token_hub(tmp_path: Path) -> Iterator[str]:
    yield from _serve(tmp_path, "127.0.0.1", HUB_HTTP_TOKEN="s3cret")


def test_origin_and_host_are_checked_on_every_loopback_address(open_hub):
    port = open_hub.rsplit(":", 1)[1].split("/")[0]
    with httpx2.Client(timeout=10) as http:
        evil_origin = http.post(open_hub, json=INIT, headers={**ACCEPT, "origin": "http://evil.example"})
        assert evil_origin.status_code == 403 and "evil.example" in evil_origin.json()["error"]
        evil_host = http.post(open_hub, json=INIT, headers={**ACCEPT, "host": f"evil.example:{port}"})
        assert evil_host.status_code == 421
        null_origin = http.post(open_hub, json=INIT, headers={**ACCEPT, "origin": "null"})
        assert null_origin.status_code == 403
        for origin in (None, f"http://localhost:{port}", "http://127.0.0.1:3000", "http://[::1]:80"):
            headers = {**ACCEPT, **({"origin": origin} if origin else {})}
            ok = http.post(open_hub, json=INIT, headers=headers)
            assert ok.status_code == 200, (origin, ok.text)
        local_host = http.post(open_hub, json=INIT, headers={**ACCEPT, "host": f"localhost:{port}"})
        assert local_host.status_code == 200


def test_malformed_json_rpc_over_http_gets_the_spec_error(open_hub):
    with httpx2.Client(timeout=10, headers=ACCEPT) as http:
        early = http.post(open_hub, json={"jsonrpc": "2.0", "id": 7, "method": "tools/list", "params": {}})
        assert early.status_code == 400 and early.json()["id"] == 7
        assert "not initialized" in early.json()["error"]["message"]
        init = http.post(open_hub, json=INIT)
        session = {"mcp-session-id": init.headers["mcp-session-id"]}
        cases = [
            (b'{"jsonrpc":"2.0","id":1,"method":"ping","params":{"x":"\\ud800"}}', 1, -32602),
            (json.dumps([{"jsonrpc": "2.0", "id": 2, "method": "ping"}]).encode(), [2], -32600),
            (json.dumps({"jsonrpc": "1.0", "id": 3, "method": "ping"}).encode(), 3, -32600),
            (
                json.dumps({"jsonrpc": "2.0", "id": 4, "method": "tools/list", "params": "x"}).encode(),
                4,
                -32602,
            ),
            (b"not json", None, -32700),
            (
                b'{"jsonrpc":"2.0","id":5,"method":"ping","params":{"v":' + b"[" * 600 + b"]" * 600 + b"}}",
                5,
                -32602,
            ),
        ]
        for body, request_id, code in cases:
            response = http.post(open_hub, content=body, headers=session)
            assert response.status_code == 400, body[:60]
            answer = response.json()
            if isinstance(request_id, list):
                assert [a["id"] for a in answer] == request_id and answer[0]["error"]["code"] == code
            else:
                assert answer["id"] == request_id and answer["error"]["code"] == code, answer
        ping = http.post(open_hub, json={"jsonrpc": "2.0", "id": 9, "method": "ping"}, headers=session)
        assert ping.status_code == 200 and '"id":9' in ping.text


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER", "BeArEr"])
def test_bearer_scheme_is_case_insensitive(token_hub, scheme):
    with httpx2.Client(timeout=10, headers=ACCEPT) as http:
        ok = http.post(token_hub, json=INIT, headers={"authorization": f"{scheme} s3cret"})
        assert ok.status_code == 200, ok.text
        for wrong in (f"{scheme} S3CRET", "Basic s3cret", "s3cret", ""):
            refused = http.post(token_hub, json=INIT, headers={"authorization": wrong})
            assert refused.status_code == 401, wrong


def test_a_port_in_use_is_one_line_naming_the_port_and_the_fix(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = subprocess.run(
            [sys.executable, "-m", "hub", "serve", "-t", "http", "--port", str(port)],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            env=hub_env(tmp_path),
            timeout=60,
        )
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == [
        f"hub: port {port} on 127.0.0.1 is already in use: stop what listens there, or choose another "
        "port with --port N or [http] port (0 picks a free one)"
    ]
