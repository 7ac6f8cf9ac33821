"""FastMCP's proxy over stdio (run by the FastMCP venv's python, see peers.py): `create_proxy` of
the `mcpServers` config given as JSON in argv[1]."""

import json
import sys

from fastmcp.server import create_proxy

create_proxy(json.loads(sys.argv[1]), name="fastmcp-proxy").run(transport="stdio", show_banner=False)
