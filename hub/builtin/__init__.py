"""Plugins that ship inside the hub package itself and are always loaded (`context`: the
shared-context tools and the hub's own resources). They use the public plugin API only."""
