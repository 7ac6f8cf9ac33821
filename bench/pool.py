"""The pool's overheads, each against a baseline from the same run, in paired rounds
(bench/paired.py: verdicts on the median per-round ratio, with load average; issue 5 targets):

- `pool_run` through a stdio hub against the same `claude -p` command run directly, with the real
  CLI and the fake Messages API: at most 1.1x per task;
- 32 prompts of 1 s each (the fake CLI, `[delay=1]`) fanned out over 8 slots, against the ideal
  4 s: at most 1.15x.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
from mcp import Client, StdioServerParameters

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "peers"))
from fake_anthropic import FakeAnthropic  # noqa: E402
from paired import Rounds, summary  # noqa: E402

CLAUDE = ROOT / ".cache" / "npm" / "node_modules" / ".bin" / "claude"
FAKE_CLAUDE = ROOT / "tests" / "peers" / "fake_claude.py"
RUNS = 5
FAN_OUT_ROUNDS = 3


def hub_params(work: Path, settings: str, env: dict[str, str]) -> StdioServerParameters:
    (work / "hub.toml").write_text(f'[plugins]\nenabled = ["pool"]\n[plugins.pool]\n{settings}')
    return StdioServerParameters(
        command=sys.executable, args=["-m", "hub", "--config", str(work / "hub.toml")], env=env, cwd=str(work)
    )


async def per_task(work: Path) -> dict[str, Any]:
    with FakeAnthropic() as api:
        (work / "home").mkdir()
        env = {
            "PATH": os.environ["PATH"],
            "HOME": str(work / "home"),
            "ANTHROPIC_BASE_URL": api.url,
            "ANTHROPIC_API_KEY": api.api_key,
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            "DISABLE_TELEMETRY": "1",
            "HUB_STATE_DIR": str(work / "state"),
            "HUB_LOG_LEVEL": "warning",
        }
        argv = [
            str(CLAUDE),
            "-p",
            "--output-format",
            "stream-json",
            "--verbose",
            "--permission-mode",
            "plan",
            "--max-budget-usd",
            "1",
            "--model",
            "claude-sonnet-4-5",
        ]
        params = hub_params(
            work, f'claude_command = "{CLAUDE}"\nmodel = "claude-sonnet-4-5"\nslots = 1\n', env
        )
        async with Client(params, mode="legacy") as client:
            await client.call_tool("pool_run", {"prompt": "warm up"})
            counter = iter(range(10**6))

            async def direct() -> float:
                started = time.perf_counter()
                result = await anyio.run_process(
                    argv, input=f"task {next(counter)}".encode(), env=env, cwd=str(work), check=True
                )
                assert b'"type":"result"' in result.stdout
                return time.perf_counter() - started

            async def pooled() -> float:
                started = time.perf_counter()
                out = await client.call_tool("pool_run", {"prompt": f"task {next(counter)}"})
                assert out.structured_content["status"] == "completed", out
                return time.perf_counter() - started

            rounds = Rounds()
            await rounds.run(RUNS, {"direct": direct, "pool_run": pooled})
    return {
        "rounds": RUNS,
        "seconds": {name: rounds.side(name, 1.0) for name in rounds.values},
        **summary(rounds, {"ratio": (rounds.ratio("pool_run", "direct"), 1.1)}),
    }


async def fan_out(work: Path) -> dict[str, Any]:
    env = {
        "PATH": os.environ["PATH"],
        "HUB_STATE_DIR": str(work / "state2"),
        "HUB_LOG_LEVEL": "warning",
        "HUB_SHARE": "0",
    }
    # The fake is run by this Python directly (a pyenv shim in its #! line would add ~0.4 s a run),
    # without site-packages (-S): it needs only the standard library.
    params = hub_params(work, f"claude_command = '{sys.executable} -S {FAKE_CLAUDE}'\nslots = 8\n", env)
    rounds = Rounds()

    async def ideal() -> float:
        return 4.0  # 32 prompts of 1 s over 8 slots

    async with Client(params, mode="legacy") as client:

        async def fanned() -> float:
            started = time.perf_counter()
            out = await client.call_tool(
                "pool_fan_out", {"prompts": [f"job {i} [delay=1]" for i in range(32)]}
            )
            assert out.structured_content["completed"] == 32, out
            return time.perf_counter() - started

        await rounds.run(FAN_OUT_ROUNDS, {"ideal": ideal, "fan_out": fanned})
    return {
        "prompts": 32,
        "slots": 8,
        "task_s": 1.0,
        "rounds": FAN_OUT_ROUNDS,
        "wall_s": rounds.side("fan_out", 1.0),
        **summary(rounds, {"ratio_to_ideal_4s": (rounds.ratio("fan_out", "ideal"), 1.15)}),
    }


async def run() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        return {
            "benchmark": "pool",
            "per_task": await per_task(Path(tmp)),
            "fan_out": await fan_out(Path(tmp)),
        }


def main() -> dict[str, Any]:
    return anyio.run(run)


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
