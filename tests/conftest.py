from __future__ import annotations

import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).parent
ROOT = TESTS.parent
DOWNSTREAM = TESTS / "servers" / "downstream.py"


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
