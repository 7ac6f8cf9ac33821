"""The plugin contract: the hooks (`spec`), what a plugin registers (`items`: tools, resources,
prompts), the live registry of it all (`registry`), the base class of a plugin object (`base`),
what every hook receives (`context`: `PluginContext`) and how plugins are found and loaded
(`manager`). Plugins import none of this directly: the top-level `hub` package re-exports it."""
