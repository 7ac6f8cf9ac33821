"""A plugin whose hub_startup is `async def`: refused at load (hooks are plain functions that
return a coroutine), even though awaiting its result would happen to work."""

from hub import hookimpl


@hookimpl
async def hub_startup(hub):
    pass
