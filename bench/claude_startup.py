"""The real Claude Code CLI answering one `-p` prompt (fake Messages API) with the hub configured
(all plugins, from a `.mcp.json` like the README's) against the same run with no MCP servers,
in paired rounds (bench/paired.py; the first round warms caches and is not counted): the verdict
is on the median per-round difference, with load average (issue 6 target: at most +0.5 s)."""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "peers"))
from fake_anthropic import FakeAnthropic  # noqa: E402
from paired import Rounds, summary  # noqa: E402

CLAUDE = ROOT / ".cache" / "npm" / "node_modules" / ".bin" / "claude"
RUNS = 7


def main() -> dict[str, Any]:
    import subprocess

    with tempfile.TemporaryDirectory() as tmp, FakeAnthropic() as api:
        work = Path(tmp)
        (work / "home").mkdir()
        (work / "hub.toml").write_text(
            '[plugins]\nenabled = ["batch", "batchit", "pool", "proxy"]\n'
            f'[plugins.pool]\nclaude_command = "{CLAUDE}"\n'
        )
        hub_entry = {
            "type": "stdio",
            "command": str(Path(sys.executable).parent / "hub"),
            "args": ["serve"],
            "env": {
                "HUB_CONFIG": str(work / "hub.toml"),
                "HUB_STATE_DIR": str(work / "state"),
                "HUB_LOG_LEVEL": "warning",
            },
        }
        (work / "with.json").write_text(json.dumps({"mcpServers": {"hub": hub_entry}}))
        (work / "without.json").write_text(json.dumps({"mcpServers": {}}))
        env = {k: v for k, v in os.environ.items() if k != "CLAUDECODE"}
        env.update(
            HOME=str(work / "home"),
            ANTHROPIC_BASE_URL=api.url,
            ANTHROPIC_API_KEY=api.api_key,
            CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1",
            DISABLE_TELEMETRY="1",
        )
        counter = iter(range(10**6))

        def launch(name: str) -> float:
            i = next(counter)
            started = time.perf_counter()
            done = subprocess.run(
                [
                    str(CLAUDE),
                    "-p",
                    f"hello {i}",
                    "--mcp-config",
                    str(work / f"{name}.json"),
                    "--strict-mcp-config",
                    "--output-format",
                    "json",
                    "--model",
                    "claude-sonnet-4-5",
                ],
                capture_output=True,
                text=True,
                env=env,
                cwd=work,
                timeout=120,
            )
            elapsed = time.perf_counter() - started
            assert done.returncode == 0 and json.loads(done.stdout)["result"].startswith("reply to:"), (
                done.stderr[-500:]
            )
            return elapsed

        launch("without")  # warms caches
        launch("with")
        rounds = Rounds()
        rounds.run_sync(RUNS, {"without": lambda: launch("without"), "with": lambda: launch("with")})
    return {
        "benchmark": "claude_startup",
        "rounds": RUNS,
        "seconds": {name: rounds.side(name, 1.0) for name in rounds.values},
        **summary(rounds, {"added_s": (rounds.added("with", "without", 1.0), 0.5)}),
    }


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    print(json.dumps(main(), indent=2))
