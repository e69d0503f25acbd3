"""The MCP server over stdio (``calhooks mcp``), for Claude Desktop, Cursor and friends.

The client launches calhooks and talks JSON-RPC over its stdin/stdout. The SDK's transport
points file descriptor 1 at stderr while it serves, so stray output (an embedded
redis-server starting, a library's print) cannot corrupt the protocol; logs go to stderr.

A local user owns the Redis and the encryption key anyway, so stdio may use every
connection, whatever its tenant. With ``CALHOOKS_API_KEY`` (or a platform client) set,
the PCID may be omitted and that key is used.
"""

from __future__ import annotations

import anyio
from mcp.server.stdio import stdio_server

from calhooks.service.core.settings import Settings
from calhooks.service.mcp.server import create_mcp_server


async def serve_stdio(settings: Settings) -> None:
    """Serve MCP on stdin/stdout until the client closes stdin."""
    server = create_mcp_server(settings, transport="stdio")
    async with stdio_server() as (read_stream, write_stream):
        await server.run(read_stream, write_stream, server.create_initialization_options())


def run_stdio(settings: Settings) -> None:
    anyio.run(serve_stdio, settings)
