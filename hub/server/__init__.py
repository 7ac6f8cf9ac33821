"""The hub as an MCP server to its clients: the SDK server over the registry (`app`), the one
executor of tool calls and the cached list answers (`dispatch`), answers to malformed JSON-RPC
(`hygiene`), the transports (`stdio`, `http`, `http_replies`), the shortcuts that answer hot
requests before the SDK (`shortcuts`) and the one module that touches the SDK's private server
internals (`sdk`). It never imports the hub's client side."""
