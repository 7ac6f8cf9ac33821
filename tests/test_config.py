"""hub.toml, HUB_* variables and --set: layering, ${VAR} expansion and precise errors."""

from __future__ import annotations

import pytest

from hub.config import ConfigError, expand_vars, load_config


def write(tmp_path, text: str):
    path = tmp_path / "hub.toml"
    path.write_text(text)
    return path


def test_defaults_without_a_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = load_config(environ={"XDG_CONFIG_HOME": str(tmp_path)})
    assert config.source == "(defaults)"
    assert config.plugins.enabled is None
    assert config.budget.limit_usd is None
    assert config.state_dir.name == "hub"


def test_the_documented_example_is_valid():
    from pathlib import Path

    config = load_config(Path(__file__).parents[1] / "hub.toml", environ={})
    assert config.http.port == 8765


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("colour = 1\n", "hub.toml: colour: unknown key"),
        ("[budget]\nlimit_usd = 'lots'\n", "hub.toml: budget.limit_usd: Input should be a valid number"),
        (
            "[budget]\nlimit_usd = -1\n",
            "hub.toml: budget.limit_usd: Input should be greater than or equal to 0",
        ),
        ("log_format = 'xml'\n", "hub.toml: log_format: Input should be 'console' or 'json' (got 'xml')"),
        ("[servers.fs]\ncomand = 'x'\n", "hub.toml: servers.fs.comand: unknown key"),
        ("[servers.fs]\nargs = ['x']\n", "servers.fs: set exactly one of 'command' (stdio) or 'url'"),
        ("[servers.fs]\ncommand = 'x'\nurl = 'http://h'\n", "servers.fs: set exactly one of"),
        ("[servers.'bad name']\ncommand = 'x'\n", "servers: server name 'bad name' must be"),
        ("[http]\nport = 99999\n", "hub.toml: http.port: Input should be less than or equal to 65535"),
        ("[budget\nlimit_usd = 1\n", "hub.toml: invalid TOML: "),
    ],
)
def test_invalid_file_names_file_key_and_problem(tmp_path, text, expected):
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text), environ={})
    assert expected in str(caught.value)
    assert str(tmp_path / "hub.toml") in str(caught.value)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.toml", environ={})


def test_layers_file_env_then_flags(tmp_path):
    path = write(tmp_path, 'log_level = "warning"\n[budget]\nlimit_usd = 5\n[plugins.pool]\nslots = 2\n')
    config = load_config(
        path, environ={"HUB_BUDGET_USD": "7", "HUB_PLUGINS": "pool, batch", "HUB_LOG_LEVEL": "debug"}
    )
    assert config.budget.limit_usd == 7
    assert config.plugins.enabled == ["pool", "batch"]
    assert config.log_level == "debug"
    assert config.plugins.tables() == {"pool": {"slots": 2}}

    config = load_config(
        path,
        overrides=["plugins.pool.slots=4", "plugins.pool.model=sonnet", 'context.lang="rust"'],
        plugins="pool",
        budget_usd=9.5,
        environ={"HUB_BUDGET_USD": "7", "HUB_PLUGINS": "batch"},
    )
    assert config.budget.limit_usd == 9.5
    assert config.plugins.enabled == ["pool"]
    assert config.plugins.tables() == {"pool": {"slots": 4, "model": "sonnet"}}
    assert config.context == {"lang": "rust"}


def test_top_level_plugins_list(tmp_path):
    config = load_config(write(tmp_path, 'plugins = ["pool", "batch"]\n'), environ={})
    assert config.plugins.enabled == ["pool", "batch"]
    config = load_config(
        write(tmp_path, 'plugins = ["pool"]\n'), overrides=["plugins.pool.slots=3"], environ={}
    )
    assert config.plugins.enabled == ["pool"]
    assert config.plugins.tables() == {"pool": {"slots": 3}}


def test_bad_override(tmp_path):
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        load_config(write(tmp_path, ""), overrides=["budget.limit_usd"], environ={})
    with pytest.raises(ConfigError, match="^--set: budget.limit_usd: Input should be a valid number"):
        load_config(write(tmp_path, ""), overrides=["budget.limit_usd=abc"], environ={})


def test_errors_name_what_set_the_key(tmp_path):
    path = write(tmp_path, "log_level = 'loud'\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={"HUB_BUDGET_USD": "abc"}, overrides=["http.port=-1"])
    lines = str(caught.value).splitlines()
    assert any(line.startswith(f"{path}: log_level: ") for line in lines)
    assert any(line.startswith("HUB_BUDGET_USD: budget.limit_usd: ") for line in lines)
    assert any(line.startswith("--set: http.port: ") for line in lines)
    # A plugin's table, set on the command line, is named the same way.
    import hub_batchit

    from hub.plugins import HubPluginManager, plugin_config

    pm = HubPluginManager()
    pm.register(hub_batchit.BatchItPlugin(), name="batchit")
    config = load_config(
        None, environ={"XDG_CONFIG_HOME": str(tmp_path)}, overrides=["plugins.batchit.max_operations=0"]
    )
    with pytest.raises(ConfigError, match="^--set: plugins.batchit.max_operations: Input should be greater"):
        plugin_config(pm, "batchit", config)


def test_var_expansion():
    env = {"HOME": "/home/ada", "EMPTY": ""}
    assert expand_vars("${HOME}/x", env, where="w") == "/home/ada/x"
    assert expand_vars("${NOPE:-fallback}", env, where="w") == "fallback"
    assert expand_vars("${EMPTY:-fallback}", env, where="w") == "fallback"
    assert expand_vars("$HOME and ${HOME}", env, where="w") == "$HOME and /home/ada"
    with pytest.raises(ConfigError, match=r"servers.fs.args: environment variable NOPE is not set"):
        expand_vars("${NOPE}", env, where="servers.fs.args")


def test_masked_hides_secrets(tmp_path):
    path = write(
        tmp_path,
        '[servers.a]\ncommand = "x"\nenv = { API_KEY = "sk-secret" }\n'
        '[servers.b]\nurl = "http://h/mcp"\nheaders = { Authorization = "Bearer abc" }\n'
        '[http]\ntoken = "tok"\n',
    )
    masked = load_config(path, environ={}).masked()
    assert masked["servers"]["a"]["env"] == {"API_KEY": "***"}
    assert masked["servers"]["b"]["headers"] == {"Authorization": "***"}
    assert masked["http"]["token"] == "***"
    assert "sk-secret" not in str(masked) and "abc" not in str(masked)
