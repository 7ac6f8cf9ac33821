"""A plugin whose hub_register_tools is `async def`: it would register nothing, so it is refused."""

from hub import Tool, hookimpl


@hookimpl
async def hub_register_tools(register):
    async def never(args, call):
        return "unreachable"

    register(Tool("never_registered", never, "Never registered."))
