"""batch_execute and the proxy in a real hub process over stdio, as Claude Code would run it:
both plugins on two downstream servers (ours and server-filesystem from npm)."""

from __future__ import annotations

import signal
import sys
import time

import psutil
from hubtests import DOWNSTREAM, StdioPeer, hub_env, npm_bin


def test_batch_across_servers_then_sigterm_mid_batch_leaves_no_child(tmp_path):
    root = tmp_path / "files"
    root.mkdir()
    (root / "name.txt").write_text("Ada")
    (tmp_path / "hub.toml").write_text(
        f'[servers.d]\ncommand = "{sys.executable}"\nargs = ["{DOWNSTREAM}"]\n'
        f'[servers.fs]\ncommand = "{npm_bin("mcp-server-filesystem")}"\nargs = ["{root}"]\n'
    )
    peer = StdioPeer(["--plugins", "batchit,proxy"], hub_env(tmp_path), tmp_path)
    try:
        peer.initialize()
        names = {t["name"] for t in peer.request("tools/list")["result"]["tools"]}
        assert "batch_execute" in names
        request = {
            "operations": [
                {
                    "id": "name",
                    "server": "fs",
                    "tool": "read_text_file",
                    "arguments": {"path": str(root / "name.txt")},
                },
                {
                    "id": "hi",
                    "server": "d",
                    "tool": "echo",
                    "arguments": {"text": {"$text": "hello {{name}}"}},
                },
                {
                    "server": "fs",
                    "tool": "write_file",
                    "arguments": {
                        "path": str(root / "greeting.txt"),
                        "content": {"$ref": "hi", "path": "text"},
                    },
                },
            ]
        }
        reply = peer.request("tools/call", {"name": "batch_execute", "arguments": request})["result"]
        assert not reply.get("isError"), reply
        assert [op["status"] for op in reply["structuredContent"]["operations"]] == ["ok", "ok", "ok"]
        assert (root / "greeting.txt").read_text() == "hello Ada"

        # The proxy serves the same connections.
        proxied = peer.request(
            "tools/call", {"name": "fs__read_text_file", "arguments": {"path": str(root / "greeting.txt")}}
        )
        assert proxied["result"]["content"][0]["text"] == "hello Ada"

        children = {p.pid for p in psutil.Process(peer.proc.pid).children(recursive=True)}
        assert len(children) >= 2
        echo = {"tool": "echo", "arguments": {"text": "first"}}
        slow = {"server": "d", "operations": [echo] + [{"tool": "sleep", "arguments": {"seconds": 60}}] * 3}
        call = {"name": "batch_execute", "arguments": slow, "_meta": {"progressToken": "batch"}}
        peer.request("tools/call", call, wait=False)
        peer.wait_for("notifications/progress")  # the echo is done: the batch is running
        peer.proc.send_signal(signal.SIGTERM)
        assert peer.proc.wait(timeout=20) == 0, peer.stderr()
        deadline = time.monotonic() + 10
        while any(psutil.pid_exists(pid) for pid in children) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not [pid for pid in children if psutil.pid_exists(pid)]
    finally:
        peer.close()
