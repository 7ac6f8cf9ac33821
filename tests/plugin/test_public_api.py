"""The public plugin API: what `hub` exports, that the built-in plugins need nothing else, that
`async def` hooks are refused, and plugin objects (`hub.Plugin`) holding their own state."""

from __future__ import annotations

import subprocess
import sys
import types
from pathlib import Path

import pytest
from importcheck import private_hub_imports

import hub
from hub import Plugin, PluginContext, RegisterTool, Tool, ToolCall, hookimpl
from hub.host import Hub
from hub.plugin.manager import PluginLoadError
from hub.testing import call_ok, make_config, running_hub

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[2]
BUILTIN_CODE = [ROOT / "hub" / "builtin", *sorted((ROOT / "plugins").glob("*/hub_*"))]


def test_the_import_check_catches_a_private_import():
    assert private_hub_imports("from hub import Tool\nimport hub\n") == []
    assert private_hub_imports("if TYPE_CHECKING:\n    from hub.host import PluginContext\n") == [
        "line 2: from hub.host import PluginContext"
    ]
    assert private_hub_imports("import hub.registry") == ["line 1: import hub.registry"]


def test_the_test_plugins_import_only_from_the_hub_package_too():
    support = ROOT / "tests" / "support"
    files = [support / "example_plugin.py", support / "complete_plugin.py"]
    files += sorted((ROOT / "tests" / "thirdparty").glob("hub-*/hub_*/*.py"))
    problems = [
        f"{p.relative_to(ROOT)} {problem}" for p in files for problem in private_hub_imports(p.read_text())
    ]
    assert problems == []


def test_builtin_plugins_import_only_from_the_hub_package():
    files = [path for folder in BUILTIN_CODE for path in sorted(folder.rglob("*.py"))]
    assert len(files) > 10, BUILTIN_CODE
    problems = [
        f"{path.relative_to(ROOT)} {problem}"
        for path in files
        for problem in private_hub_imports(path.read_text())
    ]
    assert problems == [], "built-in plugins must import from `hub` only:\n" + "\n".join(problems)


def test_every_public_name_resolves_and_is_documented():
    docs = (ROOT / "docs" / "plugins.md").read_text()
    for name in hub.__all__:
        assert getattr(hub, name) is not None
        assert f"`{name}`" in docs or name == "__version__", f"{name} is not in docs/plugins.md"


def test_importing_hub_does_not_load_the_mcp_sdk():
    code = "import hub, sys; hub.__version__; print(any(m.split('.')[0] == 'mcp' for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "False"


def _module(name: str, **hooks: object) -> types.ModuleType:
    module = types.ModuleType(name)
    for hook, function in hooks.items():
        setattr(module, hook, hookimpl(function))  # type: ignore[call-overload]
    return module


async def test_an_async_def_hook_is_refused_at_load(tmp_path):
    async def hub_register_tools(register):
        raise AssertionError("never called")

    plugin = _module("asyncplugin", hub_register_tools=hub_register_tools)
    with pytest.raises(PluginLoadError) as caught:
        async with Hub(make_config(tmp_path), extra_plugins={"asyncplugin": plugin}):
            pass
    assert "hook 'hub_register_tools' is `async def`, but hooks are plain functions" in str(caught.value)


async def test_a_registration_hook_returning_a_coroutine_fails_the_plugin(tmp_path):
    async def later() -> None:
        pass

    def hub_register_tools(register):
        return later()

    plugin = _module("returnsawaitable", hub_register_tools=hub_register_tools)
    with pytest.raises(PluginLoadError, match="registration hooks run synchronously"):
        async with Hub(make_config(tmp_path), extra_plugins={"returnsawaitable": plugin}):
            pass


class Counter(Plugin):
    """A plugin object: its state is its attributes, one object per hub run."""

    count: int
    stopped: bool = False

    @hookimpl
    def hub_startup(self) -> object:
        async def start() -> None:
            self.count = 0

        return start

    @hookimpl
    def hub_register_tools(self, register: RegisterTool, hub: PluginContext) -> None:
        assert hub is self.hub

        async def bump(args: object, call: ToolCall) -> dict[str, object]:
            self.count += 1
            return {"count": self.count, "plugin": self.hub.name}

        register(Tool("counter_bump", bump, "Count one up."))

    @hookimpl
    def hub_shutdown(self) -> object:
        async def stop() -> None:
            self.stopped = True

        return stop


async def test_a_plugin_class_gets_one_object_per_hub_that_holds_its_state(tmp_path):
    async with running_hub(make_config(tmp_path / "a"), plugins={"counter": Counter}) as (first, client):
        assert await call_ok(client, "counter_bump") == {"count": 1, "plugin": "counter"}
        assert await call_ok(client, "counter_bump") == {"count": 2, "plugin": "counter"}
        async with running_hub(make_config(tmp_path / "b"), plugins={"counter": Counter}) as (second, other):
            assert await call_ok(other, "counter_bump") == {"count": 1, "plugin": "counter"}
        a, b = first.plugins["counter"].plugin, second.plugins["counter"].plugin
        assert isinstance(a, Counter) and isinstance(b, Counter) and a is not b
        assert b.stopped and not a.stopped


async def test_shutdown_runs_only_for_plugins_whose_startup_ran(tmp_path, example_plugin):
    def failing_startup(hub):
        async def start() -> None:
            raise RuntimeError("no database")

        return start

    failing = _module("failing", hub_startup=failing_startup)
    counter = Counter()  # loaded after `failing`, so its startup never runs
    with pytest.raises(PluginLoadError, match="no database"):
        async with Hub(make_config(tmp_path), extra_plugins={"failing": failing, "counter": counter}):
            pass
    assert not counter.stopped and not hasattr(counter, "count")


def test_the_builtin_context_plugin_does_not_import_the_host():
    # hub.host loads hub.builtin.core; the other way round would be an import cycle.
    code = "import sys, hub.builtin.core; print('hub.host' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "False"
