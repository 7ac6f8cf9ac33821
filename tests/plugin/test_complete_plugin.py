"""A plugin written against docs/plugins.md alone, importing only from `hub`
(`tests/support/complete_plugin.py`), does everything a built-in does, through an MCP client."""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path

import anyio
import pytest
from complete_plugin import CompletePlugin
from hubtests import DOWNSTREAM
from importcheck import private_hub_imports

from hub.services import statusline
from hub.testing import call_error, call_ok, make_config, running_hub

pytestmark = pytest.mark.anyio

SUPPORT = Path(__file__).resolve().parents[1] / "support"


def config(tmp_path: Path, **extra: object):
    return make_config(
        tmp_path,
        plugins={"complete": {"greeting": "ahoy"}},
        servers={"d": {"command": sys.executable, "args": [str(DOWNSTREAM)]}},
        budget={"limit_usd": 10},
        **extra,
    )


def test_it_imports_only_from_the_hub_package():
    assert private_hub_imports((SUPPORT / "complete_plugin.py").read_text()) == []


async def test_a_third_party_plugin_object_does_everything_a_builtin_does(tmp_path):
    async with running_hub(config(tmp_path), plugins={"complete": CompletePlugin}) as (hub, client):
        plugin = hub.plugins["complete"].plugin
        assert isinstance(plugin, CompletePlugin) and hub.plugins["complete"].status == "loaded"
        # Config and a background task.
        with anyio.fail_after(10):
            await plugin.service.ticked.wait()
        greeted = await call_ok(client, "complete_greet", name="Ada")
        assert greeted["message"] == "ahoy, Ada!" and greeted["ticks"] >= 1
        assert "name is empty" in await call_error(client, "complete_greet", name=" ")
        # Resources and prompts.
        state = await client.read_resource("complete://state")
        assert '"open_jobs": []' in state.contents[0].text
        prompt = await client.get_prompt("complete_haiku", {"name": "Ada"})
        assert prompt.messages[0].content.text == "ahoy, Ada: write a haiku."
        # Downstream sessions, a server added at run time, and an unknown one as a clear error.
        assert await call_ok(client, "complete_call", server="d", text="hi") == {"echo": "hi"}
        assert "added" in (await call_ok(client, "complete_add_server"))["servers"]
        assert await call_ok(client, "complete_call", server="added", text="again") == {"echo": "again"}
        assert "no downstream server called 'nope'" in await call_error(
            client, "complete_call", server="nope", text="x"
        )
        # Budget reservations: committed, refused past the limit, left open.
        done = await call_ok(client, "complete_job", usd=2, spend_usd=0.5)
        assert done["state"] == "done" and done["budget"]["spent_usd"] == 0.5
        assert "cannot start the job" in await call_error(client, "complete_job", usd=100)
        running = await call_ok(client, "complete_job", usd=1, finish=False)
        assert running["state"] == "running"
        # Status lines, as `hub statusline` reads them.
        database = tmp_path / "state" / "hub.sqlite"
        assert statusline.read_lines(database) == ["complete: 1 running"]
        # Tools added at run time; a clash is a RegistrationError the plugin catches.
        added = await call_ok(client, "complete_add_tool")
        assert "context_set" in added["refused"]
        assert "complete_late" in {tool.name for tool in (await client.list_tools()).tools}
        # A child process that dies with the hub.
        argv = await call_ok(client, "complete_argv")
        assert argv["returncode"] == 0 and argv["token"]
        crashed = hub.instances.id
    assert statusline.read_lines(database) == []  # hub_shutdown removed its line

    # As if that hub had been killed with the job open: the next hub's hub_recover settles it.
    gone = await anyio.run_process([sys.executable, "-c", "import os; print(os.getpid())"])
    with sqlite3.connect(database) as conn:
        conn.execute(
            "UPDATE hub_instances SET stopped_at = NULL, clean = 0, pid = ? WHERE id = ?",
            (int(gone.stdout), crashed),
        )
    async with running_hub(config(tmp_path), plugins={"complete": CompletePlugin}) as (hub, client):
        job = await client.read_resource(f"complete://jobs/{running['job']}")
        assert '"state": "interrupted"' in job.contents[0].text
        budget = await hub.budget.summary()
        assert budget["reserved_usd"] == 0 and budget["spent_usd"] == 0.5  # released, not charged
