"""The documentation is run: every `hub` command in a fenced shell block of README.md and docs/
runs, in the order written, in a sandbox project with a real downstream server (as datasette
runs its documentation); commands that cannot run here are named with the reason; and the error
messages the docs show are the ones the hub prints."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from hubtests import DOWNSTREAM, hub_env, stop_shared_hubs

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
HUB = str(Path(sys.executable).parent / "hub")
# Shell commands the docs show that this test does not run, and why.
NOT_RUN = {
    "git": "cloning is what the reader does before any of this",
    "cd": "the sandbox is the working directory",
    "claude": "tests/e2e/test_claude_plugin.py drives the real Claude Code CLI",
    "pipx": "tests/e2e/test_install.py installs the distribution",
    "uvx": "tests/e2e/test_install.py installs the distribution",
    "pip": "tests/e2e/test_install.py installs the distribution",
    "python3 dev.py test": "this is the test suite",
    "python3 dev.py hub": "without arguments it serves stdio; dev.py hub --version is run",
}


def commands() -> list[tuple[str, str]]:
    """(page, command line) for every line of every fenced shell block, comments removed."""
    found = []
    for page in PAGES:
        for block in re.findall(r"```(?:sh|bash|shell)\n(.*?)```", page.read_text(), re.S):
            for line in block.splitlines():
                command = line.split("  #")[0].split(" #")[0].strip()
                if command and not command.startswith("#"):
                    found.append((page.name, command))
    return found


def _argv(command: str) -> list[str] | None:
    """The command to run for a documented one, or None when it is one of `NOT_RUN`."""
    words = shlex.split(command.replace("<this repository>", "REPO"))
    if words[1:2] == [
        "dashboard"
    ]:  # serves until stopped: tests/e2e/test_dashboard.py drives it in a browser
        return None
    if words[0].endswith("/hub") or words[0] == "hub":
        return [HUB, *words[1:]]
    if words[0] == "python3" and words[1].endswith("dev.py") and words[2:] == ["hub", "--version"]:
        return [sys.executable, str(ROOT / "dev.py"), "hub", "--version"]
    for prefix in NOT_RUN:
        if command == prefix or command.startswith(prefix + " "):
            return None
    raise AssertionError(f"a documented command this test does not know how to run: {command!r}")


def test_every_documented_command_runs(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    servers = {"d": {"command": sys.executable, "args": [str(DOWNSTREAM)]}}
    (project / ".mcp.json").write_text(json.dumps({"mcpServers": servers}))
    env = hub_env(tmp_path, HUB_SHARE="1")
    ran = 0
    try:
        for page, command in commands():
            argv = _argv(command)
            if argv is None:
                continue
            out = subprocess.run(argv, env=env, cwd=project, capture_output=True, text=True, timeout=120)
            assert out.returncode == 0, f"{page}: {command}\n{out.stdout}{out.stderr}"
            ran += 1
    finally:
        stop_shared_hubs(env, project)
    assert ran >= 8
    assert set(json.loads((project / ".mcp.json").read_text())["mcpServers"]) == {"hub"}


@pytest.mark.parametrize(
    ("toml", "environ", "args", "shown"),
    [
        (
            "[servers.fs]\ncomand = 'x'\n",
            {},
            [],
            "hub.toml: servers.fs.comand: unknown key (did you mean 'command'?)",
        ),
        (
            "",
            {"HUB_BUDGET_USD": "lots"},
            [],
            "HUB_BUDGET_USD: budget.limit_usd: Input should be a valid number",
        ),
        (
            "",
            {},
            ["--set", "http.port=70000"],
            "--set: http.port: Input should be less than or equal to 65535",
        ),
        (
            "[plugins.pool]\nmin_slots = 5\nmax_slots = 3\n",
            {},
            [],
            "hub.toml: plugins.pool: min_slots (5) is above max_slots (3)",
        ),
    ],
)
def test_the_config_errors_the_docs_show_are_the_ones_printed(tmp_path, toml, environ, args, shown):
    assert f"`{shown}`" in (ROOT / "docs" / "configuration.md").read_text().replace("\n", " ")
    (tmp_path / "hub.toml").write_text(toml)
    out = subprocess.run(
        [HUB, *args, "config"], env=hub_env(tmp_path, **environ), cwd=tmp_path, capture_output=True, text=True
    )
    assert out.returncode == 2 and shown in out.stderr, out.stderr


def test_a_typo_in_one_table_does_not_hide_a_typo_in_another(tmp_path):
    (tmp_path / "hub.toml").write_text("[budget]\nlimt_usd = 1\n[plugins.pool]\nslotz = 2\n")
    out = subprocess.run([HUB, "config"], env=hub_env(tmp_path), cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 2
    assert "budget.limt_usd: unknown key" in out.stderr and "plugins.pool.slotz" in out.stderr, out.stderr
