"""The shared services every plugin receives through its `hub.PluginContext`: the store
(`store`), the budget (`budget`), the hub processes on one state directory (`instances`), child
processes that die with the hub (`processes`), the shared key/value context (`context_store`) and
the plugins' status lines (`statusline`). Services know nothing of plugins, servers or clients."""
