from hub import hookimpl


@hookimpl
def hub_register_tool(register):  # misspelt: the hook is hub_register_tools
    pass
