"""`python -m hub`: the `hub` command (a bridge starts the shared process this way)."""

from hub.cli.main import main

raise SystemExit(main())
