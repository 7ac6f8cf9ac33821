#!/usr/bin/env python3
"""A fake `claude` CLI for the pool tests: reads the prompt on stdin and prints the same
stream-json lines as `claude -p --output-format stream-json --verbose`.

Markers in the prompt script it:
  [delay=S]   take S seconds (an assistant message is printed first)
  [gate=PATH] finish only once the file PATH exists and, when PATH is a named pipe, once a writer
              opens it (the test says when it may end)
  [fail]      end with an error result (subtype error_during_execution), exit 1
  [cost=X]    report total_cost_usd X (default 0.001); over --max-budget-usd it stops with
              subtype error_max_budget_usd, as the real CLI does
  [overshoot=X] report X even past --max-budget-usd (subtype error_max_budget_usd), as a real CLI
              whose last turn passes the cap does: it checks the cap only between turns
  [crash]     exit 3 with no result line, after printing to stderr
  [hang]      never finish (and start a grandchild `sleep`, so tests can see the whole process
              group go)
  [linger]    print the result, but leave a grandchild holding stdout open (as a CLI whose MCP
              servers outlive it would)
With FAKE_CLAUDE_LOG=DIR every run writes DIR/<pid>.json: argv, stdin, cwd, whether CLAUDECODE
was set, the grandchild's pid, and the text and mode of the files --append-system-prompt-file and
--mcp-config name (the pool removes them after the run).
"""

from __future__ import annotations

import json
import os
import re
import stat
import sys
import time
import uuid


def arg(name: str) -> str | None:
    """An option's value, given as `--name=value` or `--name value` (options end at `--`)."""
    argv = sys.argv[1:]
    argv = argv[: argv.index("--")] if "--" in argv else argv
    for i, given in enumerate(argv):
        if given.startswith(f"{name}="):
            return given.split("=", 1)[1]
        if given == name and i + 1 < len(argv):
            return argv[i + 1]
    return None


def read_file(path: str | None) -> dict | None:
    """A file an option names: its text and mode (the pool passes secrets by file, 0600)."""
    if path is None or not os.path.isfile(path):
        return None
    with open(path) as f:
        return {"path": path, "text": f.read(), "mode": oct(os.stat(path).st_mode & 0o777)}


def emit(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def main() -> int:
    prompt = sys.stdin.read()
    model = arg("--model") or "claude-sonnet-4-5"
    session = arg("--resume") or arg("--session-id") or str(uuid.uuid4())
    record = {
        "argv": sys.argv[1:],
        "stdin": prompt,
        "cwd": os.getcwd(),
        "claudecode": "CLAUDECODE" in os.environ,
        "pool_depth": os.environ.get("HUB_POOL_DEPTH"),
        "pid": os.getpid(),
        "system_prompt_file": read_file(arg("--append-system-prompt-file")),
        "mcp_config_file": read_file(arg("--mcp-config")),
    }
    log_dir = os.environ.get("FAKE_CLAUDE_LOG")
    grandchild = None
    if "[hang]" in prompt or "[linger]" in prompt:
        import subprocess  # only here: the fake starts fast (the pool benchmark runs 32 of it)

        grandchild = subprocess.Popen(["sleep", "1000"])
        record["grandchild"] = grandchild.pid
    if log_dir:
        with open(os.path.join(log_dir, f"{os.getpid()}.json"), "w") as f:
            json.dump(record, f)
    started = time.monotonic()
    emit(
        {
            "type": "system",
            "subtype": "init",
            "session_id": session,
            "cwd": os.getcwd(),
            "model": model,
            "tools": ["Read", "Grep"],
            "permissionMode": arg("--permission-mode") or "default",
        }
    )
    if "[crash]" in prompt:
        print("fake claude: crashing on purpose", file=sys.stderr, flush=True)
        return 3
    delay = re.search(r"\[delay=([\d.]+)\]", prompt)
    emit(
        {
            "type": "assistant",
            "session_id": session,
            "message": {
                "id": f"msg_{uuid.uuid4().hex[:12]}",
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [{"type": "text", "text": "working on it"}],
                "usage": {"input_tokens": 10, "output_tokens": 3},
            },
        }
    )
    if "[hang]" in prompt:
        while True:
            time.sleep(3600)
    if delay:
        time.sleep(float(delay.group(1)))
    gate = re.search(r"\[gate=([^\]]+)\]", prompt)
    if gate:
        while not os.path.exists(gate.group(1)):
            time.sleep(0.02)
        if stat.S_ISFIFO(os.stat(gate.group(1)).st_mode):
            with open(gate.group(1)):  # a FIFO: opening it for reading waits for its writer
                pass
    cost_match = re.search(r"\[cost=([\d.]+)\]", prompt)
    cost = float(cost_match.group(1)) if cost_match else 0.001
    cap = arg("--max-budget-usd")
    subtype, is_error, output = "success", False, f"done: {prompt.strip()[:80]}"
    overshoot = re.search(r"\[overshoot=([\d.]+)\]", prompt)
    if overshoot:
        subtype, is_error, cost, output = "error_max_budget_usd", True, float(overshoot.group(1)), ""
    elif cap is not None and cost > float(cap):
        subtype, is_error, cost, output = "error_max_budget_usd", True, float(cap), ""
    elif "[fail]" in prompt:
        subtype, is_error, output = "error_during_execution", True, "it went wrong"
    tokens_in = len(prompt) // 4 + 1
    emit(
        {
            "type": "result",
            "subtype": subtype,
            "is_error": is_error,
            "duration_ms": int((time.monotonic() - started) * 1000),
            "duration_api_ms": 5,
            "num_turns": 1,
            "result": output,
            "stop_reason": "end_turn",
            "session_id": session,
            "total_cost_usd": cost,
            "usage": {
                "input_tokens": tokens_in,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
                "output_tokens": 20,
            },
            "modelUsage": {model: {"inputTokens": tokens_in, "outputTokens": 20, "costUSD": cost}},
            "permission_denials": [],
        }
    )
    return 1 if is_error else 0


if __name__ == "__main__":
    raise SystemExit(main())
