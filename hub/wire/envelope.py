"""The names the 2026-07-28 protocol era puts in a request's `_meta` (its envelope) and the
subscription methods, defined once for every reader of raw lines (the fast start, the shortcuts,
the message checks)."""

from __future__ import annotations

__all__ = [
    "ACKNOWLEDGED",
    "CAPABILITIES_KEY",
    "CLIENT_INFO_KEY",
    "LISTEN",
    "LOG_LEVEL_KEY",
    "SESSION_TOOLS_KEY",
    "SUBSCRIPTION_KEY",
    "VERSION_KEY",
]

VERSION_KEY = "io.modelcontextprotocol/protocolVersion"
SUBSCRIPTION_KEY = "io.modelcontextprotocol/subscriptionId"
CLIENT_INFO_KEY = "io.modelcontextprotocol/clientInfo"
CAPABILITIES_KEY = "io.modelcontextprotocol/clientCapabilities"
LOG_LEVEL_KEY = "io.modelcontextprotocol/logLevel"
LISTEN = "subscriptions/listen"
ACKNOWLEDGED = "notifications/subscriptions/acknowledged"
#: In a tools/list result's `_meta`: the tools this session loaded (`hub.server.discovery`); such
#: an answer is the session's own, not kept for the next fast start.
SESSION_TOOLS_KEY = "hub/sessionTools"
