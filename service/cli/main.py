"""The ``calhooks`` entry point: assembles the command groups into one Typer app."""

from __future__ import annotations

import typer

from calhooks.service.cli import (
    connections,
    dev,
    dlq,
    events,
    mcp,
    sandbox,
    serve,
    spool,
    tools,
    webhooks,
    worker,
)
from calhooks.service.cli import rules as rules_cli
from calhooks.service.core.secretbox import generate_key

app = typer.Typer(
    name="calhooks",
    help="Webhook receiver and event processor for Cal.com organizations.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(tools.app, name="tools")
app.add_typer(rules_cli.app, name="rules")
app.command(name="serve")(serve.serve)
app.add_typer(sandbox.app, name="sandbox")
app.add_typer(mcp.app, name="mcp")
app.add_typer(connections.app, name="connections")
app.add_typer(dlq.app, name="dlq")
app.add_typer(spool.app, name="spool")
app.add_typer(events.app, name="events")
app.add_typer(webhooks.app, name="webhooks")
app.add_typer(worker.app, name="worker")
app.add_typer(dev.app, name="dev")


@app.command()
def keygen() -> None:
    """Print a new CALHOOKS_ENCRYPTION_KEY (Fernet) for secrets kept in Redis."""
    typer.echo(generate_key())


def main() -> None:
    app()
