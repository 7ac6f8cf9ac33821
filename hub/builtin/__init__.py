"""Plugins that ship inside the hub package and are always loaded: `core` (the shared-context
tools and the hub's own resources). They use the public plugin API (`hub`) only."""
