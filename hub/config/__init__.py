"""The hub's configuration: where hub.toml and the state live (`paths`, standard library only),
the typed settings (`settings`, pydantic-settings), how they are loaded and checked (`load`) and
``${VAR}`` expansion (`expand`). Import the module you need: this package imports nothing, so
`hub statusline` can read `paths` without loading pydantic."""
