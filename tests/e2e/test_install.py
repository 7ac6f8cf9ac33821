"""The package as a user installs it: a wheel of this checkout, non-editable, in a fresh venv
outside the repository. Its dependencies come from the test .venv (a path entry, so the .venv's
own editable hub is not seen) to keep this fast and offline; the hub itself is the wheel's."""

from __future__ import annotations

import json
import os
import site
import subprocess
import sys
import tomllib
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_pyproject_names_a_distribution_other_than_hub():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    # "hub" on PyPI is another project: `pip install -U hub` would replace this one.
    assert project["name"] == "mcp-plugin-hub"
    assert project["scripts"] == {"hub": "hub.cli.main:main"}
    assert any(dep.startswith("mcp-types") for dep in project["dependencies"])
    assert any(dep.startswith("tomlkit") for dep in project["dependencies"])


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX venv layout")
def test_wheel_installed_into_a_fresh_venv_runs_hub_and_lists_plugins(tmp_path):
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", wheels, ROOT],
        check=True,
        capture_output=True,
        timeout=120,
    )
    (wheel,) = wheels.glob("mcp_plugin_hub-*.whl")
    fresh = tmp_path / "fresh"
    venv.EnvBuilder(with_pip=False).create(fresh)
    python = fresh / "bin" / "python"
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    # The test .venv's packages as a plain path entry: its .pth files (the editable hub) stay unread.
    (Path(purelib) / "deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps", str(wheel)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    env = {
        "PATH": f"{fresh / 'bin'}:{os.environ['PATH']}",
        "HOME": str(tmp_path),
        "HUB_STATE_DIR": str(tmp_path / "state"),
        "HUB_CONFIG": str(tmp_path / "none.toml"),
    }
    (tmp_path / "none.toml").write_text("")
    where = subprocess.run(
        [python, "-c", "import hub; print(hub.__file__)"],
        env=env,
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert where.stdout.startswith(purelib), where.stdout + where.stderr
    version = subprocess.run(
        [fresh / "bin" / "hub", "--version"], env=env, capture_output=True, text=True, cwd=tmp_path
    )
    assert version.stdout.strip() == "hub 0.1.0", version.stderr
    listed = subprocess.run(
        [fresh / "bin" / "hub", "plugins", "--json"],
        env=env,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert listed.returncode == 0, listed.stderr
    rows = {row["name"]: row for row in json.loads(listed.stdout)}
    for name in ("pool", "batch", "batchit", "proxy"):
        assert rows[name]["distribution"] == "mcp-plugin-hub"
        assert rows[name]["status"] == "loaded"
