#!/usr/bin/env python3
"""Set up and run the hub, its tests and its benchmarks with nothing but python3, pip, node and npm.

    python3 dev.py hub [HUB ARGS...]     set up .venv and run the hub (stdio unless told otherwise)
    python3 dev.py test [PYTEST ARGS...] set up .venv and test packages, then ruff, mypy and pytest
    python3 dev.py bench [NAME...]       set up, then run the benchmarks in bench/ (all by default)

Setup is incremental: .venv is created once and reinstalled only when pyproject.toml changes;
npm packages the tests need go to .cache/npm (see NPM_TEST_PACKAGES).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / "python"
NPM_PREFIX = ROOT / ".cache" / "npm"
# npm packages the test suite drives (real third-party MCP servers and clients).
NPM_TEST_PACKAGES: list[str] = [
    # third-party downstream servers for the proxy and batchit tests
    "@modelcontextprotocol/server-filesystem@2026.8.31",
    "@modelcontextprotocol/server-everything@2026.8.31",
    # the real Claude Code CLI, run by the pool plugin's tests against a fake Messages API
    "@anthropic-ai/claude-code@2.1.330",
    # MCP Inspector, whose CLI mode lists and calls the hub's tools in the client tests
    "@modelcontextprotocol/inspector@2.12.0",
]


def say(message: str) -> None:
    print(f"dev.py: {message}", file=sys.stderr, flush=True)


def run(*cmd: str | Path, **kwargs: object) -> None:
    subprocess.run([str(c) for c in cmd], check=True, **kwargs)  # type: ignore[call-overload]


def ensure_venv(extras: str = "") -> None:
    """Install the hub (with `extras`, e.g. "[test]") into .venv unless an install of the same
    pyproject.toml with those extras (or more: `test` includes what `hub` needs) is there."""
    if not PY.exists():
        say("creating .venv")
        run(sys.executable, "-m", "venv", VENV, stdout=sys.stderr)
    stamp = VENV / ".hub-installed"
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    installed = stamp.read_text().split() if stamp.exists() else []
    if installed[:1] == [digest] and (not extras or extras in installed[1:]):
        return
    say(f"installing the hub{' with ' + extras if extras else ''} into .venv")
    # The distribution was called "hub" before it became "mcp-plugin-hub": drop that install and
    # its metadata, or every built-in plugin is found twice.
    shutil.rmtree(ROOT / "hub.egg-info", ignore_errors=True)
    subprocess.run([str(PY), "-m", "pip", "uninstall", "--quiet", "-y", "hub"], capture_output=True)
    # stdout is the MCP channel when Claude Code starts the hub through this script (the plugin).
    run(
        PY,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "-e",
        f"{ROOT}{extras}",
        stdout=sys.stderr,
    )
    kept = [e for e in installed[1:] if installed[:1] == [digest]] if extras else []
    stamp.write_text(" ".join([digest, *sorted(set(kept) | ({extras} if extras else set()))]))


def ensure_npm() -> None:
    if not NPM_TEST_PACKAGES:
        return
    stamp = NPM_PREFIX / ".installed"
    wanted = "\n".join(NPM_TEST_PACKAGES)
    if stamp.exists() and stamp.read_text() == wanted:
        return
    say(f"installing npm packages for the tests: {', '.join(NPM_TEST_PACKAGES)}")
    NPM_PREFIX.mkdir(parents=True, exist_ok=True)
    run(
        "npm",
        "install",
        "--prefix",
        NPM_PREFIX,
        "--no-audit",
        "--no-fund",
        "--loglevel=error",
        *NPM_TEST_PACKAGES,
    )
    stamp.write_text(wanted)


def ensure_postgres() -> None:
    """What the PostgreSQL tests need from the system (tests/support/pgserver.py): Debian's
    `postgresql` (a real server), and `iproute2` (`ip netns`: a worker on another host), installed
    here when missing (as root, with apt-get), so a clean machine's CI has them."""
    missing = []
    if not (list(Path("/usr/lib/postgresql").glob("*/bin/initdb")) or shutil.which("initdb")):
        missing.append("postgresql")
    if not shutil.which("ip"):
        missing.append("iproute2")
    if not missing:
        return
    if os.name != "posix" or os.geteuid() != 0 or not shutil.which("apt-get"):
        say(f"missing for the PostgreSQL tests: install Debian's {' and '.join(missing)} package(s)")
        return
    say(f"installing what the PostgreSQL tests need (apt-get install {' '.join(missing)})")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    run("apt-get", "update", "-qq", stdout=sys.stderr, env=env)
    run("apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing, stdout=sys.stderr, env=env)


def ensure_chromium() -> None:
    """Debian's chromium, for the dashboard's browser test (tests/e2e/test_dashboard.py): installed
    with apt-get where it is missing and this runs as root (CI); elsewhere that test is skipped."""
    if Path("/usr/bin/chromium").exists() or shutil.which("chromium"):
        return
    if os.name != "posix" or os.geteuid() != 0 or not shutil.which("apt-get"):
        say("no chromium: the dashboard's browser test is skipped (apt-get install chromium)")
        return
    say("installing chromium for the dashboard's browser test (apt-get)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        run("apt-get", "update", "-qq", stdout=sys.stderr, env=env)
        run("apt-get", "install", "-y", "-qq", "chromium", stdout=sys.stderr, env=env)
    except subprocess.CalledProcessError:
        say("installing chromium failed: the dashboard's browser test is skipped")


def env_with_venv() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(BIN), str(NPM_PREFIX / "node_modules" / ".bin"), env.get("PATH", "")])
    env["VIRTUAL_ENV"] = str(VENV)
    return env


def cmd_hub(args: list[str]) -> int:
    ensure_venv()
    hub = str(BIN / "hub")
    if os.name == "posix":  # become the hub: signals and stdin reach it directly
        os.execve(hub, [hub, *args], env_with_venv())
    return subprocess.call([hub, *args], env=env_with_venv())


def cmd_test(args: list[str]) -> int:
    ensure_venv("[test]")
    ensure_npm()
    ensure_chromium()
    ensure_postgres()
    env = env_with_venv()
    steps = [
        ("ruff format --check", [BIN / "ruff", "format", "--check", "--quiet", "."]),
        ("ruff check", [BIN / "ruff", "check", "--quiet", "."]),
        ("mypy", [BIN / "mypy", "hub", *sorted(str(p) for p in ROOT.glob("plugins/*/hub_*"))]),
    ]
    for label, cmd in steps:
        say(label)
        if subprocess.call([str(c) for c in cmd], cwd=ROOT, env=env) != 0:
            say(f"{label} failed")
            return 1
    say("pytest")
    return subprocess.call([str(PY), "-m", "pytest", *args], cwd=ROOT, env=env)


def cmd_bench(args: list[str]) -> int:
    ensure_venv("[test]")
    ensure_npm()
    ensure_postgres()
    return subprocess.call([str(PY), str(ROOT / "bench" / "run.py"), *args], cwd=ROOT, env=env_with_venv())


def main(argv: list[str]) -> int:
    commands = {"hub": cmd_hub, "test": cmd_test, "bench": cmd_bench}
    if not argv or argv[0] not in commands:
        print(__doc__, file=sys.stderr)
        return 2
    return commands[argv[0]](argv[1:])


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
