"""How clients reach the hub: `stdio` (one client on stdin/stdout) and `http` (streamable HTTP,
with bearer auth and DNS-rebinding checks)."""
