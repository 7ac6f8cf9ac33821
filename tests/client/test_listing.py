"""The key of a server's listing: its configuration as the hub runs it, never its bare name, and
no value kept in clear; and what a server offers that the hub does not relay."""

from __future__ import annotations

from pathlib import Path

import pytest

from hub.client.cache import ConnectionCache
from hub.client.listing import ServerListing, config_digest, not_relayed
from hub.config.settings import ServerConfig
from hub.errors import ConfigError


def key(environ: dict[str, str] | None = None, cwd: Path | None = None, **config: object) -> str:
    server = ServerConfig.model_validate(config)
    cache = ConnectionCache({"s": server}, environ=environ or {})
    if cwd is None:
        return cache.config_key("s")
    return config_digest(server, lambda text, where: text, cwd=cwd, client=cache.client_profile())


def test_the_key_follows_every_part_of_the_configuration():
    base = {"command": "node", "args": ["server.js"], "env": {"TOKEN": "a"}}
    same = key(**base)
    assert key(**base) == same
    assert key(**{**base, "command": "python"}) != same
    assert key(**{**base, "args": ["other.js"]}) != same
    assert key(**{**base, "env": {"TOKEN": "b"}}) != same  # a value, not only the names
    assert key(**{**base, "cwd": "/srv"}) != same
    assert key(cwd=Path("/project/a"), **base) != key(cwd=Path("/project/b"), **base)  # another project
    http = {"url": "https://h/mcp", "headers": {"Authorization": "Bearer a"}}
    assert key(**http) != key(**{**http, "headers": {"Authorization": "Bearer b"}})
    assert key(**http) != key(**{**http, "url": "https://h/other"})


def test_variables_are_expanded_first_and_an_unset_one_is_named():
    config = {"command": "node", "env": {"TOKEN": "${TOKEN}"}}
    assert key({"TOKEN": "a"}, **config) == key(**{"command": "node", "env": {"TOKEN": "a"}})
    assert key({"TOKEN": "a"}, **config) != key({"TOKEN": "b"}, **config)
    with pytest.raises(ConfigError, match="servers.s.env.TOKEN: environment variable TOKEN is not set"):
        key(**config)


def test_what_is_not_relayed_is_named():
    listing = ServerListing(
        tools=[{"name": "research", "execution": {"taskSupport": "required"}}, {"name": "echo"}],
        capabilities={"logging": {}, "resources": {"subscribe": True}, "experimental": {"x": {}}},
    )
    assert not_relayed(listing) == [  # logging and subscriptions are relayed
        "experimental capability 'x'",
        "tool 'research', which runs only as a task",
    ]
    assert not_relayed(ServerListing(capabilities={"resources": {"subscribe": False}, "tools": {}})) == []
