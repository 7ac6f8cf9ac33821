"""`hub dashboard`: a live page of what the hubs on a state directory are doing.

A process of its own (`hub.cli.dashboard` starts it) serving server-rendered HTML on loopback:
`source` asks a shared hub process over its control socket what it holds
(`hub.launch.dashboard_answers`), `render` turns that into HTML fragments, `spend` buckets the
budget's ledger for the chart, and `app` serves the page, its server-sent events (each fragment
that changed, about once a second), the panels' actions and the files panels link to. The page's
live parts use htmx and its SSE extension, the chart uPlot, vendored in `static/` (no CDN, no
build step).
"""
