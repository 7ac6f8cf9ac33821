from hub import hookimpl


@hookimpl
def hub_startup(hub):
    async def start():
        raise RuntimeError("database unreachable")

    return start
