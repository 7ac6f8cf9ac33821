"""The hub as an MCP client of downstream servers: the connection cache (`cache`), the stdio
downstream (`stdio`), the environment a child gets (`environment`), remote servers' credentials
and sign-in (`auth`, with their OAuth tokens in the store: `tokens`), what goes wrong and how it
is told to a user (`errors`), and the two modules that touch the SDK's private client internals
(`sdk`, and `sdk_oauth` for its OAuth client). It never imports the hub's server side."""
