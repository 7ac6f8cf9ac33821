"""`Plugin`, the base class of a plugin written as a class: one object per hub run holds its state.

A plugin may be a module of hook functions or a class whose methods are the hooks (as pytest and
tox plugins are objects). For a class, the hub creates one instance per hub run when it loads
the plugin (no arguments) and sets ``self.hub``, the plugin's `hub.PluginContext`, before any hook
other than ``hub_config_model`` runs. Whatever the plugin builds in ``hub_startup`` (a service,
a pool, a cache) is then an ordinary attribute of ``self``, typed, and seen by every later hook;
two hubs in one process never share it::

    class Greeter(Plugin):
        service: GreetingService  # set in hub_startup, which runs before every other hook

        @hookimpl
        def hub_startup(self) -> Lifecycle:
            async def start() -> None:
                self.service = await GreetingService.open(self.hub.store)
            return start

        @hookimpl
        def hub_register_tools(self, register: RegisterTool) -> None:
            register(Tool("greet", self.service.greet, "Greet someone", input_model=Greet))

The entry point names the class: ``greeter = "hub_greeter:Greeter"``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hub.plugin.context import PluginContext

__all__ = ["Plugin"]


class Plugin:
    """Base class of a plugin object; see the module docstring.

    `hub` is set by the hub before ``hub_startup``; hooks may still take a ``hub`` argument (it is
    the same object). Do not name attributes ``hub_*``: that prefix is reserved for hooks.
    """

    hub: PluginContext
