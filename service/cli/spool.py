"""``calhooks spool``: what the intake's disk spool holds aside.

``quarantine`` lists the spooled deliveries that could not be queued for a reason other than
Redis being away (see ``calhooks.service.intake.spool``), oldest first: each stays in
``<CALHOOKS_SPOOL_DIR>/quarantine/`` as one JSON file with its reason and the body (base64),
to inspect, fix and re-post by hand, or delete.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Annotated

import typer

from calhooks.service.cli.output import print_json

app = typer.Typer(help="The intake's disk spool.", no_args_is_help=True)


def _when(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S")


@app.command("quarantine")
def quarantine(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List spooled deliveries that could not be queued, with why."""
    from calhooks.service.app import spool_directory
    from calhooks.service.core.settings import get_settings
    from calhooks.service.intake.spool import QUARANTINE, list_quarantine

    directory = spool_directory(get_settings())
    held = list_quarantine(directory)
    if as_json:
        print_json([dataclasses.asdict(record) for record in held])
        return
    if not held:
        typer.echo(f"Nothing quarantined in {directory / QUARANTINE}.")
        return
    for record in held:
        typer.echo(
            f"{record.file}  event {record.event_id[:16]}  received {_when(record.received_at)}"
            f"  {record.bytes} bytes\n    {record.reason}"
        )
    typer.echo(f"{len(held)} in {directory / QUARANTINE}")
