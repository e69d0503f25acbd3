"""``calhooks mcp``: the MCP server over stdio; ``mcp serve`` over HTTP alone; ``mcp token``.

The MCP modules (and the SDK behind them) are imported inside the commands so other
``calhooks`` commands do not pay for them at start-up.
"""

from __future__ import annotations

import secrets
from typing import Annotated

import typer

from calhooks.service.cli.output import fail

app = typer.Typer(
    help="The 37 Cal.com tools as an MCP server (stdio by default).",
    invoke_without_command=True,
)


@app.callback()
def stdio(ctx: typer.Context) -> None:
    """Serve MCP over stdin/stdout, as Claude Desktop, Cursor and the Inspector launch it."""
    if ctx.invoked_subcommand is not None:
        return
    import structlog

    from calhooks.service.core.logs import configure_from_settings
    from calhooks.service.core.settings import get_settings
    from calhooks.service.mcp.server import has_own_credentials
    from calhooks.service.mcp.stdio import run_stdio

    settings = get_settings()
    configure_from_settings()  # logs go to stderr; stdout carries the protocol
    if not has_own_credentials(settings) and settings.encryption_key is None:
        structlog.get_logger(__name__).warning(
            "mcp.unusable",
            hint="set CALHOOKS_API_KEY, or CALHOOKS_ENCRYPTION_KEY to use stored connections",
        )
    run_stdio(settings)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8790,
) -> None:
    """Serve only MCP over streamable HTTP at /cal-organizations (bearer CALHOOKS_MCP_TOKEN)."""
    import uvicorn

    from calhooks.service.core.logs import configure_from_settings
    from calhooks.service.core.settings import get_settings
    from calhooks.service.mcp.http import MCP_PATH, create_standalone_app
    from calhooks.service.mcp.tenants import TokenConfigError

    settings = get_settings()
    configure_from_settings()
    try:
        mcp_app = create_standalone_app(settings)
    except TokenConfigError as exc:
        fail(str(exc))
    if not (settings.mcp_token or settings.mcp_tokens):
        typer.echo("warning: no CALHOOKS_MCP_TOKEN: every request will get 503", err=True)
    typer.echo(f"MCP on http://{host}:{port}{MCP_PATH}", err=True)
    uvicorn.run(mcp_app, host=host, port=port, log_config=None, proxy_headers=True)


@app.command()
def token() -> None:
    """Print a new random bearer token for CALHOOKS_MCP_TOKEN."""
    typer.echo(secrets.token_urlsafe(32))
