from __future__ import annotations

import sys
from pathlib import Path

import pytest
from hubtests import DOWNSTREAM, TESTS


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def example_plugin():
    import example_plugin

    example_plugin.events.clear()
    return example_plugin


@pytest.fixture
def downstream_server() -> dict[str, object]:
    """A `[servers.NAME]` table for the test downstream server."""
    return {"command": sys.executable, "args": [str(DOWNSTREAM)]}


@pytest.fixture(scope="session")
def thirdparty_path(tmp_path_factory) -> Path:
    """hub-hello and hub-broken installed (with their entry points) into a directory for PYTHONPATH."""
    import subprocess

    target = tmp_path_factory.mktemp("site")
    for package in ("hub-hello", "hub-broken"):
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--no-deps",
                "--no-build-isolation",
                "--disable-pip-version-check",
                "--target",
                str(target),
                str(TESTS / "thirdparty" / package),
            ],
            check=True,
        )
    return target


@pytest.fixture(scope="session", autouse=True)
def no_shared_hub_left_behind(tmp_path_factory):
    """A shared hub process (`hub serve`'s bridge starts one, detached) that a test left running is
    stopped when the session ends, so a run leaves no process behind; tests of the shared process
    check their own cleanup (tests/test_shared.py)."""
    yield
    import psutil

    base = str(tmp_path_factory.getbasetemp())
    for proc in psutil.process_iter(["cmdline", "cwd"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        shared = "-m hub shared " in cmdline or " hub shared --key " in f" {cmdline} "
        if shared and (proc.info["cwd"] or "").startswith(base):
            proc.kill()
