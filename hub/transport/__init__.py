"""How clients reach the hub: `stdio` (one client on stdin/stdout) and `http` (streamable HTTP,
with bearer auth and DNS-rebinding checks)."""

# What a person who runs `hub` in a terminal is told (by the in-process stdio transport and by the
# bridge); kept here so the bridge need not import the transport (the MCP SDK) to say it.
TTY_HINT = (
    "hub: this is an MCP server; it speaks JSON-RPC on stdin/stdout to an MCP client. To try it: "
    "npx @modelcontextprotocol/inspector hub serve   (Ctrl-D or Ctrl-C quits)"
)
