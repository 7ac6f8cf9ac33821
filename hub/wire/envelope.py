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
