"""The environment a stdio downstream server gets: the SDK's safe inherited variables, a few more
that servers need to behave (locale, temp directories, CA files), and the server's own `env`."""

from __future__ import annotations

import os
from collections.abc import Mapping

from mcp.client.stdio import get_default_environment

__all__ = ["EXTRA_INHERITED", "child_environment"]

# Besides the SDK's defaults (HOME, LOGNAME, PATH, SHELL, TERM, USER): locale and temp dirs,
# which many servers need to behave (Node, Python and git read these).
EXTRA_INHERITED = (
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TMPDIR",
    "TZ",
    "XDG_RUNTIME_DIR",
    "XDG_CACHE_HOME",
    "XDG_CONFIG_HOME",
    "XDG_DATA_HOME",
    "XDG_STATE_HOME",
    "SSL_CERT_FILE",
    "NODE_EXTRA_CA_CERTS",
)


def child_environment(user_env: Mapping[str, str], parent: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a stdio child: safe inherited variables plus the server's `env`.

    A `PATH` in the server's `env` is put in front of the inherited one, never instead of it,
    so a server that sets PATH still finds `node`, `python` and friends.
    """
    parent = os.environ if parent is None else parent
    env = (
        get_default_environment()
        if parent is os.environ
        else {k: parent[k] for k in ("HOME", "LOGNAME", "PATH", "SHELL", "TERM", "USER") if k in parent}
    )
    env.update({key: parent[key] for key in EXTRA_INHERITED if key in parent})
    for key, value in user_env.items():
        if key == "PATH" and env.get("PATH"):
            parts = [p for p in value.split(os.pathsep) if p]
            parts += [p for p in env["PATH"].split(os.pathsep) if p and p not in parts]
            env["PATH"] = os.pathsep.join(parts)
        else:
            env[key] = value
    return env
