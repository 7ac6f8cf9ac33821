"""The wire, used by both sides of the hub: JSON-RPC lines out of byte streams, whole lines onto
file descriptors, the 2026-era envelope keys, and small JSON-RPC helpers. Standard library only
(`mcp_types` at most), so the bridge and the fast start can use it before anything heavy loads.

Nothing here imports another room of the hub."""
