"""The `hub` command, one module per command (`serve`, `status`, `plugins`, `config`, `servers`,
`budget`, `statusline`), the parser (`parser`) and the dispatch (`main`). Heavy modules are
imported inside the commands that need them, so `hub statusline` starts fast."""
