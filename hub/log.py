"""Logging: structlog to stderr only (stdout is the stdio protocol channel), console or JSON.

A redaction processor runs on every event, so a secret cannot reach the log even when code
logs a whole config or environment by mistake: values under secret-looking keys, and values
that look like API keys or bearer tokens, are replaced by ``***``.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any, Literal

import structlog

__all__ = ["configure_logging", "redact"]

MASK = "***"
_SECRET_KEY = re.compile(
    r"(api[_-]?key|token|secret|password|passwd|authorization|auth|cookie|credential|^env$|headers)", re.I
)
_SECRET_VALUE = re.compile(r"(sk-ant-[A-Za-z0-9_-]{8,}|sk-[A-Za-z0-9]{20,}|Bearer\s+[A-Za-z0-9._~+/=-]{8,})")


def redact(value: Any, key: str = "") -> Any:
    """`value` with secrets masked: a whole value under a secret key, and token-like substrings."""
    if key and _SECRET_KEY.search(key):
        if isinstance(value, dict):
            return {k: MASK for k in value}
        return MASK if value not in (None, "", False) else value
    if isinstance(value, str):
        return _SECRET_VALUE.sub(MASK, value)
    if isinstance(value, dict):
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(redact(v) for v in value)
    return value


def _redact_processor(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in list(event_dict):
        if key in ("event", "exception", "timestamp", "level", "logger"):
            if key in ("event", "exception") and isinstance(event_dict[key], str):
                event_dict[key] = _SECRET_VALUE.sub(MASK, event_dict[key])
            continue
        event_dict[key] = redact(event_dict[key], key)
    return event_dict


def configure_logging(
    fmt: Literal["console", "json"] = "console", level: str = "info", stream: Any = None
) -> None:
    """Configure structlog (and the stdlib loggers of our dependencies) once, at start-up."""
    stream = stream or sys.stderr
    numeric = logging.getLevelNamesMapping()[level.upper()]
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _redact_processor,
    ]
    renderer: Any
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer()
        shared.append(structlog.processors.format_exc_info)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
    # Dependencies (mcp, uvicorn, httpx) log through the stdlib: send them to stderr as well,
    # one level quieter than ours so their chatter does not drown the hub's own events.
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(asctime)s [%(levelname)-7s] %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(numeric, logging.WARNING))
    # The SDK's OAuth client logs every failed sign-in with a traceback; the hub says what
    # failed itself, in one sentence (hub.client.auth).
    logging.getLogger("mcp.client.auth.oauth2").setLevel(logging.CRITICAL)
