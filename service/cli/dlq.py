"""``calhooks dlq``: look at, replay and drop the rules that failed for good.

``list`` shows entries newest first (with each one's organization - ``env``, or its
connection's name - and event id); ``show ID`` prints one
(parameters with secrets redacted; ``--json`` for the record); ``replay ID`` or ``replay
--all`` reopens the rule and queues its event again - the steps that succeeded before are not
repeated; ``drop ID`` (or ``drop --all --yes``) forgets entries. Times are ISO 8601 (UTC).
IDs may be shortened to any unique prefix of four characters or more.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from calhooks.service.cli.output import fail, iso, print_json

if TYPE_CHECKING:
    from arq.connections import ArqRedis

    from calhooks.service.core.settings import Settings
    from calhooks.workers.deadletter import DeadLetter, DeadLetterQueue
    from calhooks.workers.eventlog import EventLog
    from calhooks.workers.ledger import Ledger

app = typer.Typer(help="The dead-letter queue: rules that failed for good.", no_args_is_help=True)

T = TypeVar("T")


@dataclass
class Stores:
    arq: ArqRedis
    dlq: DeadLetterQueue
    ledger: Ledger
    eventlog: EventLog
    settings: Settings


@asynccontextmanager
async def open_stores() -> AsyncIterator[Stores]:
    from arq.connections import create_pool

    from calhooks.service.core.redisconn import arq_redis_settings
    from calhooks.service.core.settings import get_settings
    from calhooks.service.events import deserialize_job, serialize_job
    from calhooks.workers.deadletter import DeadLetterQueue
    from calhooks.workers.eventlog import EventLog
    from calhooks.workers.ledger import Ledger

    settings = get_settings()
    arq = await create_pool(
        arq_redis_settings(settings),
        job_serializer=serialize_job,
        job_deserializer=deserialize_job,
        default_queue_name=settings.queue_name,
    )
    try:
        yield Stores(
            arq,
            DeadLetterQueue(
                arq,
                max_entries=settings.worker_dead_letter_max,
                max_age=settings.worker_dead_letter_max_age,
                record_ttl=settings.worker_record_ttl,
            ),
            Ledger(arq, ttl=settings.worker_record_ttl),
            EventLog(arq, ttl=settings.worker_record_ttl),
            settings,
        )
    finally:
        await arq.aclose()


def run(work: Callable[[Stores], Awaitable[T]]) -> T:
    async def main() -> T:
        async with open_stores() as stores:
            return await work(stores)

    return asyncio.run(main())


def as_json(entry: DeadLetter) -> dict[str, Any]:
    """An entry as JSON, its times in ISO 8601."""
    record = entry.to_dict()
    record["dead_at"] = iso(entry.dead_at)
    record["replayed_at"] = iso(entry.replayed_at) if entry.replayed_at is not None else None
    return record


def _error_text(entry: DeadLetter) -> str:
    error = entry.error
    if "status" in error:
        return f"{error['status']} {error.get('code', '')}: {error.get('message', '')}"
    return f"{error.get('type', 'Error')}: {error.get('message', '')}"


def show_lines(entry: DeadLetter) -> list[str]:
    """One entry as text: what failed, where, why, and what to do next."""
    step = f"{entry.step}[{entry.index}]" if entry.index is not None else entry.step
    where = f"rule {entry.rule}" + (f", step {step}" if step else "")
    lines = [
        f"entry    {entry.id}  {entry.status} since {iso(entry.dead_at)}",
        f"event    {entry.event_id}  {entry.trigger}",
        f"org      {organization_text(entry)}",
        f"failed   {where}" + (f" (tool {entry.tool})" if entry.tool else ""),
        f"tries    {entry.attempts}"
        + (
            f"; replayed {entry.replays} time(s), last {iso(entry.replayed_at)}"
            if entry.replays
            else ""
        ),
        f"error    {_error_text(entry)}",
    ]
    if entry.params:
        lines.append("params")
        for key, value in entry.params.items():
            lines.append(f"  {key}: {json.dumps(value, ensure_ascii=False, default=str)}")
    lines.append(
        f"next     `calhooks dlq replay {entry.id}` to try again;"
        f" `calhooks events show {entry.event_id}` for the whole story"
    )
    return lines


def organization_text(entry: DeadLetter) -> str:
    """The organization of an entry: its connection (``globex (PCID)``, the PCID alone when
    its name was unknown), or the one the environment configures."""
    if entry.connection is None:
        return "the environment's (CALHOOKS_API_KEY)"
    name = entry.connection_name
    return f"connection {name} ({entry.connection})" if name else f"connection {entry.connection}"


def connection_label(entry: DeadLetter) -> str:
    """A short name of an entry's organization for one-line lists: ``env``, a connection's
    name, or its PCID's first 8 characters."""
    if entry.connection is None:
        return "env"
    return entry.connection_name or entry.connection[:8]


def _short_error(entry: DeadLetter) -> str:
    text = _error_text(entry)
    return text if len(text) <= 80 else text[:77] + "..."


async def _entry(stores: Stores, entry_id: str) -> DeadLetter:
    entry = await stores.dlq.get(entry_id)
    if entry is None:
        fail(f"no dead-letter entry {entry_id!r} (ids may be shortened to a unique prefix)")
    return entry


@app.command("list")
def list_entries(
    limit: Annotated[int, typer.Option(help="Entries to show, newest first.")] = 50,
    offset: Annotated[int, typer.Option(help="Entries to skip.")] = 0,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List dead-lettered rules, newest first."""

    async def work(stores: Stores) -> tuple[int, list[DeadLetter]]:
        return await stores.dlq.count(), await stores.dlq.page(offset=offset, limit=limit)

    total, entries = run(work)
    if json_output:
        print_json([as_json(entry) for entry in entries])
        return
    if not entries:
        typer.echo("The dead-letter queue is empty.")
        return
    for entry in entries:
        step = f"{entry.step}[{entry.index}]" if entry.index is not None else entry.step or "-"
        typer.echo(
            f"{entry.id}  {iso(entry.dead_at)}  {entry.status:<9} {entry.trigger:<18} "
            f"{connection_label(entry):<12} "
            f"event {entry.event_id[:16]}  {entry.rule} / {step}  tries={entry.attempts}  "
            f"{_short_error(entry)}"
        )
    shown = offset + len(entries)
    if shown < total:
        typer.echo(f"... {total - shown} more (--offset {shown})")


@app.command()
def show(
    entry_id: Annotated[str, typer.Argument(help="Entry id or a unique prefix.")],
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Print one entry: event, rule, failing step, parameters (secrets redacted), error."""

    async def work(stores: Stores) -> DeadLetter:
        return await _entry(stores, entry_id)

    entry = run(work)
    if json_output:
        print_json(as_json(entry))
        return
    for line in show_lines(entry):
        typer.echo(line)


@app.command("replay")
def replay_entries(
    entry_id: Annotated[str | None, typer.Argument(help="Entry id or a unique prefix.")] = None,
    all_entries: Annotated[bool, typer.Option("--all", help="Replay every entry.")] = False,
) -> None:
    """Queue the event again for its dead-lettered rule; steps that succeeded are not repeated."""
    if (entry_id is None) == (not all_entries):
        fail("give one entry id, or --all")

    async def work(stores: Stores) -> tuple[int, int]:
        if entry_id is not None:
            targets = [await _entry(stores, entry_id)]
        else:
            targets = []
            for id_ in await stores.dlq.ids():
                found = await stores.dlq.get(id_)
                if found is not None:
                    targets.append(found)
        queued = already = 0
        started = time.monotonic()
        show_progress = len(targets) > 1
        for done, entry in enumerate(targets, start=1):
            from calhooks.workers.deadletter import replay

            fresh = await replay(
                entry,
                dlq=stores.dlq,
                ledger=stores.ledger,
                arq=stores.arq,
                queue_name=stores.settings.queue_name,
            )
            queued += fresh
            already += not fresh
            if show_progress and (done % 50 == 0 or done == len(targets)):
                rate = done / max(time.monotonic() - started, 1e-6)
                typer.echo(f"replayed {done}/{len(targets)} ({rate:.0f}/s)", err=True)
        return queued, already

    queued, already = run(work)
    if queued + already == 0:
        typer.echo("Nothing to replay.")
        return
    message = f"Queued {queued} event(s) again"
    if already:
        message += f"; {already} already queued or running (the rule runs on their next attempt)"
    typer.echo(message + ". Follow one with `calhooks events show EVENT_ID`.")


@app.command()
def drop(
    entry_id: Annotated[str | None, typer.Argument(help="Entry id or a unique prefix.")] = None,
    all_entries: Annotated[bool, typer.Option("--all", help="Drop every entry.")] = False,
    yes: Annotated[bool, typer.Option("--yes", help="Confirm --all.")] = False,
) -> None:
    """Forget entries: their rules are not retried again."""
    if (entry_id is None) == (not all_entries):
        fail("give one entry id, or --all --yes")
    if all_entries and not yes:
        fail("--all drops every entry; add --yes to confirm")

    async def work(stores: Stores) -> int:
        if entry_id is not None:
            targets = [await _entry(stores, entry_id)]
        else:
            targets = [e for i in await stores.dlq.ids() if (e := await stores.dlq.get(i))]
        dropped = 0
        for entry in targets:
            dropped += await stores.dlq.remove(entry.id)
            state = await stores.ledger.load(entry.event_id)
            dead = [rule for rule, outcome in state.rules.items() if outcome == "dead"]
            if not await stores.dlq.event_entries(entry.event_id, dead):
                await stores.ledger.release_now(entry.event_id)
                await stores.eventlog.expire(entry.event_id)
        return dropped

    typer.echo(f"Dropped {run(work)} entr{'y' if entry_id else 'ies'}.")
