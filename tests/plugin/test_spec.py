"""One test per hook (named test_hook_<hook>), and checks that every hook is documented and tested."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest
from hubtests import ROOT

from hub.plugin import spec as hookspecs
from hub.testing import make_config, result_json, running_hub

HOOKS = sorted(name for name in dir(hookspecs) if name.startswith("hub_"))


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_has_a_docstring_and_is_documented(hook):
    spec = getattr(hookspecs, hook)
    assert (spec.__doc__ or "").strip(), f"{hook} has no docstring"
    guide = (ROOT / "docs" / "plugins.md").read_text()
    signature = f"{hook}{inspect.signature(spec)}".replace("'", "")
    heading = re.search(rf"^### `{hook}\((.*?)\)`", guide, re.M)
    assert heading, f"docs/plugins.md has no '### `{hook}(...)`' section"
    assert f"`{signature}`" in guide, f"docs/plugins.md does not show `{signature}`"


def hook_tests() -> dict[str, object]:
    """The test functions of this module named test_hook_<hook>, as pytest collects them (a
    comment or a string naming one does not count, nor does a skipped or xfailed one)."""
    found = {}
    for name, value in globals().items():
        if not (name.startswith("test_hook_") and inspect.isfunction(value) and value.__module__ == __name__):
            continue
        marks = {mark.name for mark in getattr(value, "pytestmark", [])}
        if not marks & {"skip", "skipif", "xfail"}:
            found[name.removeprefix("test_hook_")] = value
    return found


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_has_a_test(hook):
    assert hook in hook_tests(), f"no test function test_hook_{hook} in {Path(__file__).name}"


def test_every_hook_test_is_for_a_hook():
    assert set(hook_tests()) <= set(HOOKS), "a test_hook_<name> names a hook that does not exist"


@pytest.mark.anyio
async def test_hook_hub_config_model(tmp_path, example_plugin):
    config = make_config(tmp_path, plugins={"example": {"greeting": "ahoy", "repeat": 2}})
    async with running_hub(config, plugins={"example": example_plugin}) as (hub, client):
        assert hub.contexts["example"].config.repeat == 2
        assert result_json(await client.call_tool("greet", {"name": "x"})) == {"greeting": "ahoy x ahoy x"}


@pytest.mark.anyio
async def test_hook_hub_server_config_model(tmp_path, downstream_server):
    from types import SimpleNamespace

    from pydantic import BaseModel

    from hub import hookimpl
    from hub.errors import ConfigError

    class Keys(BaseModel):
        note: str = "none"

    noter = SimpleNamespace(hub_server_config_model=hookimpl(lambda: Keys))
    config = make_config(tmp_path, servers={"d": {**downstream_server, "note": "hi"}})
    async with running_hub(config, plugins={"noter": noter}) as (hub, _):
        assert hub.config.servers["d"].plugin_settings(Keys).note == "hi"
        # the proxy's own keys are declared the same way
        assert "expose" not in type(hub.config.servers["d"]).model_fields
    bad = make_config(
        tmp_path,
        servers={"d": {**downstream_server, "nots": "x", "expose": "maybe"}},
        plugins={"enabled": ["proxy"]},
    )
    with pytest.raises(ConfigError) as caught:
        async with running_hub(bad, plugins={"noter": noter}):
            pass
    text = str(caught.value)
    assert "servers.d.nots: unknown key (did you mean 'note'?)" in text
    assert "servers.d.expose: Input should be a valid boolean" in text


@pytest.mark.anyio
async def test_hook_hub_startup(tmp_path, example_plugin):
    async with running_hub(make_config(tmp_path), plugins={"example": example_plugin}) as (hub, _):
        assert example_plugin.events == ["startup"]
        assert (await hub.store.schema_versions())["example"] == 1  # its migration ran
        assert any(t.get_name().startswith("example:") for t in _tasks())  # its background task runs


def _tasks():
    import asyncio

    return asyncio.all_tasks()


@pytest.mark.anyio
async def test_hook_hub_shutdown(tmp_path, example_plugin):
    async with running_hub(make_config(tmp_path), plugins={"example": example_plugin}):
        pass
    assert example_plugin.events == ["startup", "shutdown"]
    assert not any(t.get_name().startswith("example:") for t in _tasks())  # background task cancelled


@pytest.mark.anyio
async def test_hook_hub_register_tools(tmp_path, example_plugin):
    async with running_hub(make_config(tmp_path), plugins={"example": example_plugin}) as (hub, client):
        assert hub.registry.contributions("example")["tools"][:3] == ["add", "add_dynamic", "boom"]
        assert hub.registry.tools["greet"].plugin == "example"
        assert result_json(await client.call_tool("add", {"a": 2, "b": 3})) == {"result": 5}


@pytest.mark.anyio
async def test_hook_hub_register_resources(tmp_path, example_plugin):
    async with running_hub(make_config(tmp_path), plugins={"example": example_plugin}) as (hub, client):
        assert hub.registry.contributions("example")["resources"] == [
            "example://greetings",
            "example://greetings/{name}",
        ]
        assert "hello Ada" in (await client.read_resource("example://greetings/Ada")).contents[0].text


@pytest.mark.anyio
async def test_hook_hub_register_prompts(tmp_path, example_plugin):
    async with running_hub(make_config(tmp_path), plugins={"example": example_plugin}) as (hub, client):
        assert hub.registry.contributions("example")["prompts"] == ["greeting"]
        prompt = await client.get_prompt("greeting", {"name": "Ada"})
        assert prompt.messages[0].content.text == "Write a short greeting for Ada."


@pytest.mark.anyio
async def test_hook_hub_recover(tmp_path, example_plugin):
    import sys

    import anyio

    gone = await anyio.run_process([sys.executable, "-c", "import os; print(os.getpid())"])
    dead_pid = int(gone.stdout)
    async with running_hub(make_config(tmp_path), plugins={"example": example_plugin}) as (hub, _):
        crashed = hub.instances.id
        await hub.budget.reserve("example", 0.5, "in flight")
    # As if that hub had been killed: not stopped, its pid gone.
    import sqlite3

    with sqlite3.connect(tmp_path / "state" / "hub.sqlite") as conn:
        conn.execute(
            "UPDATE hub_instances SET stopped_at = NULL, clean = 0, pid = ? WHERE id = ?", (dead_pid, crashed)
        )
    example_plugin.events.clear()
    async with running_hub(make_config(tmp_path), plugins={"example": example_plugin}) as (hub, _):
        assert example_plugin.events == ["startup", f"recover {crashed} pid {dead_pid}"]
        budget = await hub.budget.summary()
        assert (budget["spent_usd"], budget["reserved_usd"]) == (0.5, 0.0)  # charged in full afterwards
    example_plugin.events.clear()
    async with running_hub(make_config(tmp_path), plugins={"example": example_plugin}):
        assert example_plugin.events == ["startup"]  # recovered once, by one hub


@pytest.mark.anyio
async def test_hook_hub_dashboard_panels(tmp_path):
    from types import SimpleNamespace

    from hub import Panel, PanelAction, PanelLink, PanelTable, PanelView, ToolError, hookimpl
    from hub.launch.dashboard_answers import hub_snapshot

    forgotten: list[str] = []

    def panels(register, hub):
        async def render():
            row = ["ada", PanelLink("notes", "/tmp/ada.md"), PanelAction("forget", "forget", {"name": "ada"})]
            return PanelView(
                facts={"greetings": 1}, tables=[PanelTable(["name", "file", ""], [row], "Greetings")]
            )

        async def forget(args):
            if args["name"] != "ada":
                raise ToolError(f"no greeting for {args['name']}")
            forgotten.append(args["name"])
            return f"forgot {args['name']}"

        async def broken():
            raise RuntimeError("the panel's own bug")

        register(Panel("greetings", "Greetings", render, actions={"forget": forget}))
        register(Panel("broken", "Broken", broken, order=200))
        register(Panel("Bad Name", "Skipped", render))

    greeter = SimpleNamespace(hub_dashboard_panels=hookimpl(panels))
    async with running_hub(make_config(tmp_path), plugins={"greeter": greeter}) as (hub, _):
        assert sorted(hub.panels.panels) == [("greeter", "broken"), ("greeter", "greetings")]
        assert any("Bad Name" in warning for warning in hub.plugins["greeter"].warnings)
        shown = (await hub_snapshot(hub))["panels"]
        assert [p["name"] for p in shown] == ["greetings", "broken"]
        assert shown[0]["view"] == {
            "facts": {"greetings": 1},
            "tables": [
                {
                    "title": "Greetings",
                    "columns": ["name", "file", ""],
                    "rows": [
                        [
                            "ada",
                            {"link": "notes", "path": "/tmp/ada.md"},
                            {
                                "button": "forget",
                                "action": "forget",
                                "args": {"name": "ada"},
                                "confirm": None,
                            },
                        ]
                    ],
                    "empty": "none",
                }
            ],
            "note": None,
        }
        assert shown[1]["error"] == "RuntimeError: the panel's own bug"
        assert await hub.panels.act("greeter", "greetings", "forget", {"name": "ada"}) == "forgot ada"
        assert forgotten == ["ada"]
        with pytest.raises(ToolError, match="no greeting for bob"):
            await hub.panels.act("greeter", "greetings", "forget", {"name": "bob"})
        with pytest.raises(ToolError, match="no action 'drop'"):
            await hub.panels.act("greeter", "greetings", "drop", {})
        await hub.remove_plugin("greeter")
        assert hub.panels.panels == {}


@pytest.mark.anyio
async def test_hook_hub_worker(tmp_path, example_plugin):
    """`hub worker` runs each plugin's worker role: the pool's slots take a task another hub
    queued (on one SQLite state directory here; tests/e2e/test_workers.py runs real workers on
    PostgreSQL, one on another host). A hub with no plugin that has a role refuses to be one."""
    import sys

    import anyio
    import hub_pool
    from hubtests import TESTS

    from hub.errors import PluginLoadError
    from hub.host import Hub

    pool = {
        "claude_command": f"{sys.executable} {TESTS / 'peers' / 'fake_claude.py'}",
        "slots": 0,
        "queue": "shared",
    }
    config = make_config(tmp_path, plugins={"pool": pool})
    plugins = {"pool": hub_pool.PoolPlugin}
    async with (
        running_hub(config, plugins=plugins) as (queuer, client),
        Hub(config, extra_plugins={"pool": hub_pool.PoolPlugin()}, role="worker") as worker,
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(worker.run_workers, 2)
        result = result_json(await client.call_tool("pool_run", {"prompt": "from the queue"}))
        assert result["status"] == "completed" and result["output"] == "done: from the queue"
        assert result["worker"]["instance"] == worker.instances.id and result["worker"]["role"] == "worker"
        assert (
            len(queuer.contexts["pool"].config.model_dump())
            and worker.instances.work["pool"]["capacity"] == 2
        )
        tg.cancel_scope.cancel()
    async with Hub(make_config(tmp_path), extra_plugins={"example": example_plugin}, role="worker") as lone:
        with pytest.raises(PluginLoadError, match="no loaded plugin has a worker role"):
            await lone.run_workers(None)
