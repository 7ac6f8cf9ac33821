"""The real Claude Code CLI answering one `-p` prompt (fake Messages API) with the hub configured
(all plugins, from a `.mcp.json` like the README's) against the same run with no MCP servers,
alternating, medians (issue 6 target: the hub adds at most 0.5 s)."""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "servers"))
from fake_anthropic import FakeAnthropic  # noqa: E402

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
        times: dict[str, list[float]] = {"without": [], "with": []}
        for i in range(RUNS + 1):
            for name in ("without", "with"):
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
                if i:  # the first round warms caches
                    times[name].append(elapsed)
    without, with_hub = statistics.median(times["without"]), statistics.median(times["with"])
    return {
        "benchmark": "claude_startup",
        "runs": RUNS,
        "without_mcp_median_s": round(without, 3),
        "with_hub_median_s": round(with_hub, 3),
        "added_s": round(with_hub - without, 3),
        "target_added_s": 0.5,
    }


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
