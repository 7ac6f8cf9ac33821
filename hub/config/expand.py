"""``${VAR}`` and ``${VAR:-default}`` in `[servers.NAME]` strings, expanded as Claude Code expands
them in `.mcp.json`: when a server starts, never when the configuration is stored."""

from __future__ import annotations

import re
from collections.abc import Mapping

from hub.errors import ConfigError

__all__ = ["expand_vars"]

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-(.*?))?\}")


def expand_vars(text: str, environ: Mapping[str, str], *, where: str) -> str:
    """Expand ``${VAR}`` and ``${VAR:-default}`` in `text`; an unset VAR without default is an error."""

    def substitute(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        value = environ.get(name)
        if value is None or (value == "" and default is not None):
            if default is None:
                raise ConfigError(
                    f"{where}: environment variable {name} is not set (write ${{{name}:-default}})"
                )
            return default
        return value

    return _VAR.sub(substitute, text)
