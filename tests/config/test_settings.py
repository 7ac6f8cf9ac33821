"""hub.toml, HUB_* variables and --set: layering, ${VAR} expansion and precise errors."""

from __future__ import annotations

import pytest

from hub.config.expand import expand_vars
from hub.config.load import load_config
from hub.errors import ConfigError


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

    config = load_config(Path(__file__).parents[2] / "hub.toml", environ={})
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
        (
            "[servers.r]\nurl = 'https://h/mcp'\nbearer_token_env_var = 'T'\n[servers.r.oauth]\nclientId = 'x'\n",
            "servers.r: oauth and bearer_token_env_var both authenticate to the server; keep one",
        ),
        (
            "[servers.fs]\ncommand = 'x'\nheadersHelper = 'y'\n",
            "'headersHelper' applies to remote (url) servers",
        ),
        (
            "[servers.r]\nurl = 'https://h'\n[servers.r.oauth]\ncallbackPort = 0\n",
            "oauth.callbackPort: Input should",
        ),
        (  # a wrong value is shown with its secret masked
            "state_url = 'postgressql://hub:s3cret@db:5432/hub'\n",
            "state_url: must be a PostgreSQL URL, postgresql://user:password@host:5432/database "
            "(leave it unset for SQLite under state_dir) (got 'postgressql://hub:***@db:5432/hub')",
        ),
        (
            "[liveness]\ndead_after_s = 0\n",
            "liveness.dead_after_s: Input should be greater than or equal to 1",
        ),
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

    from hub.plugin.manager import HubPluginManager, plugin_config

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
        '[servers.c]\nurl = "http://h/mcp"\noauth = { clientId = "hub", client_secret = "s3cret", scopes = ["a", "b"] }\n'
        '[http]\ntoken = "tok"\n',
    )
    masked = load_config(path, environ={}).masked()
    assert masked["servers"]["c"]["oauth"] == {
        "scopes": "a b",
        "client_id": "hub",
        "client_secret": "***",
        "client_metadata_url": None,
        "callback_port": None,
        "callback_timeout_s": 300.0,
    }
    assert masked["servers"]["a"]["env"] == {"API_KEY": "***"}
    assert masked["servers"]["b"]["headers"] == {"Authorization": "***"}
    assert masked["http"]["token"] == "***"
    assert "sk-secret" not in str(masked) and "abc" not in str(masked) and "s3cret" not in str(masked)


def test_settings_sources_and_precedence(tmp_path):
    """pydantic-settings: user file < project file < HUB_* (nested and short names) < --set < flags."""
    from pydantic_settings import BaseSettings

    from hub.config.settings import HubConfig

    assert issubclass(HubConfig, BaseSettings)
    user = tmp_path / "xdg" / "hub" / "hub.toml"
    user.parent.mkdir(parents=True)
    user.write_text('log_level = "error"\n[http]\nport = 1000\nhost = "127.0.0.2"\n[budget]\nlimit_usd = 1\n')
    project = write(tmp_path, "[http]\nport = 2000\n")
    environ = {
        "XDG_CONFIG_HOME": str(tmp_path / "xdg"),
        "HUB_HTTP__PATH": "/from-env",
        "HUB_BUDGET__PERIOD": "day",
        "HUB_SERVERS__FS__COMMAND": "npx",
        "HUB_HTTP_TOKEN": "env-token",
        "HUB_PLUGINS": "pool,  batch",
    }
    config = load_config(project, environ=environ)
    assert (config.http.host, config.http.port, config.http.path) == ("127.0.0.2", 2000, "/from-env")
    assert config.log_level == "error" and config.budget.limit_usd == 1 and config.budget.period == "day"
    assert config.servers["fs"].command == "npx"
    assert config.http.token is not None and config.http.token.get_secret_value() == "env-token"
    assert config.plugins.enabled == ["pool", "batch"]
    assert config.origin_of("http.host") == str(user)
    assert config.origin_of("http.port") == str(project)
    assert config.origin_of("http.path") == "HUB_HTTP__PATH"
    assert config.origin_of("http.token") == "HUB_HTTP_TOKEN"
    assert config.origin_of("plugins.enabled") == "HUB_PLUGINS"
    assert config.origin_of("state_dir") == "(defaults)"
    assert config.scopes == [("user", str(user)), ("project", str(project))]

    config = load_config(
        project,
        environ=environ,
        overrides=["http.token=set-token", "http.port=3000", "budget.limit_usd=2"],
        flags={"http.port": ("--port", 4000)},
        budget_usd=3,
    )
    assert config.http.token is not None and config.http.token.get_secret_value() == "set-token"
    assert config.http.port == 4000 and config.origin_of("http.port") == "--port"
    assert config.budget.limit_usd == 3 and config.origin_of("budget.limit_usd") == "--budget-usd"
    # A plugin's table from variables: values read as TOML, as --set reads them.
    config = load_config(
        project, environ={**environ, "HUB_PLUGINS__POOL__SLOTS": "4", "HUB_PLUGINS__POOL__M": "x"}
    )
    assert config.plugins.tables() == {"pool": {"slots": 4, "m": "x"}}
    assert config.origin_of("plugins.pool.slots") == "HUB_PLUGINS__POOL__SLOTS"


def test_every_error_line_names_its_source(tmp_path):
    user = tmp_path / "xdg" / "hub" / "hub.toml"
    user.parent.mkdir(parents=True)
    user.write_text("[servers.fs]\nargs = ['x']\n")
    project = write(tmp_path, "log_level = 'loud'\n")
    with pytest.raises(ConfigError) as caught:
        load_config(
            project,
            environ={"XDG_CONFIG_HOME": str(tmp_path / "xdg"), "HUB_HTTP__PORT": "-5", "HUB_BUDGET_USD": "x"},
            overrides=["budget.period=fortnight"],
            flags={"log_format": ("--log-format", "xml")},
        )
    lines = str(caught.value).splitlines()
    assert f"{user}: servers.fs: set exactly one of 'command' (stdio) or 'url' (streamable HTTP)" in lines
    assert any(line.startswith(f"{project}: log_level: ") for line in lines)
    assert any(line.startswith("HUB_HTTP__PORT: http.port: Input should be greater") for line in lines)
    assert any(line.startswith("HUB_BUDGET_USD: budget.limit_usd: ") for line in lines)
    assert any(line.startswith("--set: budget.period: Input should be 'total', 'day'") for line in lines)
    assert any(line.startswith("--log-format: log_format: ") for line in lines)


def test_user_and_project_scopes_merge_table_by_table(tmp_path, monkeypatch):
    user = tmp_path / "xdg" / "hub" / "hub.toml"
    user.parent.mkdir(parents=True)
    user.write_text(
        '[plugins.pool]\nslots = 2\nmodel = "opus"\n[servers.fs]\ncommand = "npx"\nargs = ["a"]\n'
        '[servers.gh]\nurl = "https://gh/mcp"\n[context]\nwho = "ada"\n'
    )
    project = tmp_path / "proj"
    project.mkdir()
    (project / "hub.toml").write_text('[plugins.pool]\nslots = 4\n[servers.fs]\nargs = ["b"]\n')
    monkeypatch.chdir(project)
    config = load_config(environ={"XDG_CONFIG_HOME": str(tmp_path / "xdg")})
    assert config.plugins.tables() == {"pool": {"slots": 4, "model": "opus"}}
    assert config.servers["fs"].command == "npx" and config.servers["fs"].args == ["b"]
    assert config.servers["gh"].url == "https://gh/mcp"
    assert config.context == {"who": "ada"}
    assert config.origin_of("plugins.pool.slots") == "hub.toml"
    assert config.origin_of("plugins.pool.model") == str(user)
    assert config.source == "hub.toml"
    # Without a project file the user's is the whole config.
    monkeypatch.chdir(tmp_path)
    config = load_config(environ={"XDG_CONFIG_HOME": str(tmp_path / "xdg")})
    assert config.plugins.tables() == {"pool": {"slots": 2, "model": "opus"}}
    assert config.source == str(user)


def test_mcp_json_server_shape_is_accepted(tmp_path):
    config = load_config(
        write(
            tmp_path,
            '[servers.a]\ntype = "stdio"\ncommand = "npx"\nargs = ["x"]\ntimeout = 5000\n'
            '[servers.b]\ntype = "http"\nurl = "https://h/mcp"\n[servers.c]\ntype = "streamable-http"\n'
            'url = "https://h/mcp"\n[servers.d]\ntype = "sse"\nurl = "https://h/sse"\n',
        ),
        environ={},
    )
    assert config.servers["a"].transport == "stdio" and config.servers["a"].startup_timeout_s == 5
    assert config.servers["b"].transport == config.servers["c"].transport == "http"
    assert config.servers["d"].transport == "sse"
    with pytest.raises(ConfigError, match=r"servers.a: type 'stdio' needs a 'command'"):
        load_config(write(tmp_path, '[servers.a]\ntype = "stdio"\nurl = "https://h"\n'), environ={})
    with pytest.raises(ConfigError, match=r"servers.a.type: Input should be 'stdio', 'http'"):
        load_config(write(tmp_path, '[servers.a]\ntype = "ws"\nurl = "https://h"\n'), environ={})
