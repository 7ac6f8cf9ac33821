"""Plugin discovery, selection and failure handling, through real installed packages."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from hubtests import hub_env
from mcp import Client, StdioServerParameters
from mcp.shared.exceptions import MCPError

from hub.errors import ConfigError
from hub.host import Hub
from hub.plugin.manager import PluginLoadError
from hub.testing import make_config, result_json, running_hub


def run_hub(*args: str, env: dict[str, str], cwd=None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hub", *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=60
    )


def test_third_party_plugin_is_discovered_and_reported(tmp_path, thirdparty_path):
    env = hub_env(tmp_path, thirdparty_path)
    out = run_hub("plugins", "--json", env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    rows = {row["name"]: row for row in json.loads(out.stdout)}
    hello = rows["hello"]
    assert hello["status"] == "loaded"
    assert (hello["distribution"], hello["version"], hello["module"]) == ("hub-hello", "1.2.3", "hub_hello")
    assert hello["tools"] == ["hello", "hello_via", "hello_wait"]
    assert hello["resources"] == ["hello://about"]
    # Broken plugins are reported by name with their error; the others still load.
    assert rows["unimportable"]["status"] == "failed"
    assert "No module named 'a_module_that_does_not_exist'" in rows["unimportable"]["error"]
    assert rows["misspelt"]["status"] == "failed"
    assert (
        "unknown hook 'hub_register_tool' (did you mean 'hub_register_tools'?)" in rows["misspelt"]["error"]
    )
    assert rows["failstart"]["status"] == "failed"
    assert rows["failstart"]["error"] == "RuntimeError: database unreachable"
    # `async def` hooks are refused at load, naming the hook and the fix.
    for name, hook in (("asyncstart", "hub_startup"), ("asynctools", "hub_register_tools")):
        assert rows[name]["status"] == "failed"
        assert f"hook '{hook}' is `async def`, but hooks are plain functions" in rows[name]["error"]
        assert "make it a plain `def`" in rows[name]["error"]
    assert "returns a coroutine" in rows["asyncstart"]["error"]
    assert "never_registered" not in json.dumps(rows)
    assert rows["core"]["tools"] == ["context_delete", "context_get", "context_list", "context_set"]

    text = run_hub("plugins", env=env, cwd=tmp_path)
    assert "hello 1.2.3  (hub-hello)" in text.stdout
    assert "  tools: hello, hello_via, hello_wait" in text.stdout


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_third_party_plugin_served_and_excluded_by_plugins_flag(
    tmp_path, thirdparty_path, anyio_backend
):
    env = hub_env(tmp_path, thirdparty_path)
    (tmp_path / "hub.toml").write_text('[plugins.hello]\ngreeting = "howdy"\n')
    base = ["-m", "hub", "--config", str(tmp_path / "hub.toml")]

    # All installed plugins: the broken ones are reported and skipped, hello is served.
    async with Client(
        StdioServerParameters(command=sys.executable, args=base, env=env, cwd=str(tmp_path))
    ) as client:
        names = {tool.name for tool in (await client.list_tools()).tools}
        assert {"hello", "context_set"} <= names
        result = await client.call_tool("hello", {"name": "Ada"})
        assert result_json(result) == {"message": "howdy, Ada!"}
        status = json.loads((await client.read_resource("hub://status")).contents[0].text)
        failed = {p["name"]: p["error"] for p in status["plugins"] if p["status"] == "failed"}
        assert set(failed) == {"unimportable", "misspelt", "failstart", "asyncstart", "asynctools"}
        assert "hook 'hub_startup' is `async def`" in failed["asyncstart"]

    # --plugins with an empty list: only the core; hello is excluded.
    args = [*base, "--plugins", ""]
    async with Client(
        StdioServerParameters(command=sys.executable, args=args, env=env, cwd=str(tmp_path))
    ) as client:
        names = {tool.name for tool in (await client.list_tools()).tools}
        assert "hello" not in names and "context_set" in names

    # HUB_PLUGINS selects too.
    env_selected = {**env, "HUB_PLUGINS": "hello"}
    async with Client(
        StdioServerParameters(command=sys.executable, args=base, env=env_selected, cwd=str(tmp_path))
    ) as client:
        assert "hello" in {tool.name for tool in (await client.list_tools()).tools}


@pytest.mark.parametrize(
    ("selection", "expected"),
    [
        ("unimportable", "plugin 'unimportable' failed to load: ModuleNotFoundError: No module named"),
        ("misspelt", "plugin 'misspelt' failed to load: unknown hook 'hub_register_tool'"),
        ("failstart", "plugin 'failstart' failed to start: RuntimeError: database unreachable"),
    ],
)
def test_named_plugin_that_fails_stops_the_hub(tmp_path, thirdparty_path, selection, expected):
    out = run_hub("--plugins", f"hello,{selection}", env=hub_env(tmp_path, thirdparty_path), cwd=tmp_path)
    assert out.returncode == 1
    assert expected in out.stderr


def test_unknown_plugin_name(tmp_path, thirdparty_path):
    out = run_hub("--plugins", "hello,nope", env=hub_env(tmp_path, thirdparty_path), cwd=tmp_path)
    assert out.returncode == 2
    assert (
        "unknown plugin 'nope' (installed: asyncstart, asynctools, batch, batchit, failstart, hello, misspelt, "
        "pool, proxy, unimportable)" in out.stderr
    )


def test_invalid_plugin_settings_name_file_and_key(tmp_path, thirdparty_path):
    (tmp_path / "hub.toml").write_text('[plugins.hello]\ngreeting = 3\ncolour = "red"\n')
    out = run_hub("--plugins", "hello", "config", env=hub_env(tmp_path, thirdparty_path), cwd=tmp_path)
    assert out.returncode == 2
    assert "hub.toml: plugins.hello.greeting: Input should be a valid string (got 3)" in out.stderr
    assert "hub.toml: plugins.hello.colour: unknown key" in out.stderr


@pytest.mark.anyio
async def test_lifecycle_hooks_run_in_order(tmp_path, example_plugin):
    async with running_hub(make_config(tmp_path), plugins={"example": example_plugin}):
        assert example_plugin.events == ["startup"]
    assert example_plugin.events == ["startup", "shutdown"]


@pytest.mark.anyio
async def test_plugin_added_and_removed_at_run_time(tmp_path, example_plugin):
    async with running_hub(make_config(tmp_path)) as (hub, client):
        assert "greet" not in {t.name for t in (await client.list_tools()).tools}
        await hub.add_plugin(example_plugin, "example")
        assert "greet" in {t.name for t in (await client.list_tools()).tools}
        await hub.remove_plugin("example")
        assert "greet" not in {t.name for t in (await client.list_tools()).tools}
        assert example_plugin.events == ["startup", "shutdown"]


@pytest.mark.anyio
async def test_plugin_without_config_model_rejects_a_table(tmp_path):
    import types as pytypes

    bare = pytypes.SimpleNamespace(__name__="bare")
    config = make_config(tmp_path, plugins={"bare": {"x": 1}})
    with pytest.raises(ConfigError, match="plugins.bare: plugin 'bare' takes no settings"):
        async with Hub(config, extra_plugins={"bare": bare}):
            pass


@pytest.mark.anyio
async def test_startup_failure_of_an_always_loaded_plugin_is_fatal(tmp_path):
    import types as pytypes

    from hub import hookimpl

    def hub_startup(hub):
        async def start():
            raise OSError("disk full")

        return start

    broken = pytypes.SimpleNamespace(__name__="broken", hub_startup=hookimpl(hub_startup))
    with pytest.raises(PluginLoadError, match="plugin 'broken' failed to start: OSError: disk full"):
        async with Hub(make_config(tmp_path), extra_plugins={"broken": broken}):
            pass


@pytest.mark.anyio
async def test_plugin_tools_and_hide_keep_only_the_chosen_tools(tmp_path, example_plugin):
    """`[plugins.NAME] tools = [...]` / `hide = [...]` work for any plugin (the core's too), also
    for tools a plugin adds at run time; the plugin's own settings model never sees the keys."""
    plugins = {
        "example": {
            "greeting": "hi",
            "tools": ["greet", "add", "add_dynamic", "remove_dynamic"],
            "hide": ["add"],
        },
        "core": {"hide": ["context_delete"]},
    }
    async with running_hub(make_config(tmp_path, plugins=plugins), plugins={"example": example_plugin}) as (
        hub,
        client,
    ):
        names = {t.name for t in (await client.list_tools()).tools}
        assert {"greet", "add_dynamic", "context_set", "context_get", "context_list"} <= names
        assert names.isdisjoint({"add", "boom", "slow", "context_delete"})
        assert (
            result_json(await client.call_tool("greet", {"name": "Ada"}))["greeting"] == "hi Ada"
        )  # settings kept
        with pytest.raises(MCPError, match="Unknown tool: add"):
            await client.call_tool("add", {"a": 1, "b": 2})
        contributions = hub.registry.contributions("example")
        assert "add" in contributions["hidden_tools"] and "greet" in contributions["tools"]
        # A tool added at run time that the list does not name is left out too.
        assert not (await client.call_tool("add_dynamic", {"name": "dyn"})).is_error
        assert "dyn" not in {t.name for t in (await client.list_tools()).tools}
        assert "dyn" in hub.registry.contributions("example")["hidden_tools"]


@pytest.mark.anyio
async def test_unknown_names_in_tools_or_hide_stop_the_hub_with_a_suggestion(tmp_path, example_plugin):
    config = make_config(tmp_path, plugins={"example": {"tools": ["gret"], "hide": ["nothing_like_it"]}})
    with pytest.raises(ConfigError) as caught:
        async with Hub(config, extra_plugins={"example": example_plugin}):
            pass
    message = str(caught.value)
    assert (
        "(defaults): plugins.example.tools: plugin 'example' has no tool 'gret' (did you mean 'greet'?)"
        in message
    )
    assert (
        "plugins.example.hide: plugin 'example' has no tool 'nothing_like_it'; its tools: add, add_dynamic"
        in message
    )
    bad = make_config(tmp_path, plugins={"example": {"tools": "greet"}})
    with pytest.raises(
        ConfigError, match=r"plugins.example.tools: expected a list of tool names, e.g. tools = \["
    ):
        async with Hub(bad, extra_plugins={"example": example_plugin}):
            pass


def test_unknown_tool_name_in_hub_toml_exits_2(tmp_path, thirdparty_path):
    (tmp_path / "hub.toml").write_text('[plugins.hello]\ntools = ["helo"]\n')
    out = run_hub("--plugins", "hello", "plugins", env=hub_env(tmp_path, thirdparty_path), cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    assert (
        "hub.toml: plugins.hello.tools: plugin 'hello' has no tool 'helo' (did you mean 'hello'?)"
        in out.stderr
    )
