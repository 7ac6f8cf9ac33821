"""The hub as an MCP client of downstream servers: the connection cache (`cache`), the stdio
downstream (`stdio`), the environment a child gets (`environment`), what goes wrong and how it
is told to a user (`errors`), and the one module that touches the SDK's private client internals
(`sdk`). It never imports the hub's server side."""
