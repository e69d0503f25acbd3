"""``calhooks events show ID``: what happened to one event (its event log and ledger).

Prints the connection the event came through (its name and PCID; none for the organization
configured by the environment), the booking the event is about (its uid, the uid it replaced
when it is a reschedule, and the first booking of its chain of reschedules), each attempt,
the rules that matched (and why each other rule did not), every Cal.com call and step with
its result or error, retries, dead letters, and the final state of each rule. Attempts that
only waited (a cancellation waiting for its booking's creation) are one line: how often,
for how long, and what for. Times are ISO 8601 in UTC. The id is the one the intake
answered with (``202 {"id": ...}``); a unique prefix of eight characters or more will do.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import typer

from calhooks.service.cli.output import fail, iso, print_json

app = typer.Typer(help="What happened to the events calhooks received.", no_args_is_help=True)

_PREFIX_MIN = 8


def _clock(epoch: float) -> str:
    return iso(epoch)


def _error_text(error: Any) -> str:
    if not isinstance(error, dict):
        return str(error)
    if "status" in error:
        return f"{error['status']} {error.get('code', '')}: {error.get('message', '')}"
    return f"{error.get('type', 'Error')}: {error.get('message', '')}"


def connection_text(record: dict[str, Any]) -> str | None:
    """The connection of an ``attempt`` record (or dead letter): ``globex (PCID)``, the PCID
    alone when its name is unknown (removed), ``None`` for the environment's organization."""
    pcid = record.get("connection")
    if not pcid:
        return None
    name = record.get("connection_name")
    return f"{name} ({pcid})" if name else str(pcid)


def booking_text(record: dict[str, Any]) -> str:
    """A ``booking`` record: ``B (replaces A, chain A)``."""
    text = str(record.get("uid"))
    notes = []
    if record.get("replaces"):
        notes.append(f"replaces {record['replaces']}")
    if record.get("chain") and record.get("chain") != record.get("uid"):
        notes.append(f"chain {record['chain']}")
    return text + (f" ({', '.join(notes)})" if notes else "")


def describe(record: dict[str, Any]) -> str:
    """One delivery-log record as a line of text."""
    kind = record.get("kind")
    if kind == "booking":
        return f"booking {booking_text(record)}"
    if kind == "attempt":
        return f"attempt {record.get('attempt')} on {record.get('worker')}"
    if kind == "matched":
        rules = record.get("rules") or []
        text = "matched " + (", ".join(rules) if rules else "no rule")
        for rule, reason in (record.get("not_matched") or {}).items():
            text += f"\n    not {rule}: {reason}"
        return text
    if kind == "call":
        status = record.get("status") or "no answer"
        return f"  call {record.get('tool')} -> {status} ({record.get('ms')} ms)"
    if kind == "step":
        where = f"{record.get('rule')}/{record.get('step')}"
        if record.get("index") is not None:
            where += f"[{record['index']}]"
        if "error" in record:
            return f"  step {where} failed: {_error_text(record['error'])}"
        return f"  step {where} {record.get('how')} ({record.get('ms')} ms)"
    if kind == "rule":
        text = f"rule {record.get('rule')}: {record.get('outcome')}"
        if record.get("reason"):
            text += f" ({record['reason']})"
        if record.get("error"):
            text += f" - {_error_text(record['error'])}"
        return text
    if kind in ("retry", "deferred"):
        return f"{kind} in {record.get('delay')} s: {record.get('reason', '')}".rstrip(": ")
    if kind == "dead_lettered":
        return f"rule {record.get('rule')} dead-lettered as {record.get('dead_letter')}"
    if kind == "skipped":
        return f"skipped: {record.get('reason')}"
    if kind == "done":
        return "done"
    return str(kind)


def collapse(log: list[dict[str, Any]]) -> list[tuple[float, str]]:
    """The log as (time, text) lines; runs of attempts that only deferred, for one reason,
    become one line saying how often, over how long, and what for."""
    lines: list[tuple[float, str]] = []
    index = 0
    while index < len(log):
        run = _deferrals(log, index)
        if len(run) >= 2:
            first, last = log[run[0]], log[run[-1] + 1]
            span = float(last.get("at", 0)) - float(first.get("at", 0))
            attempts = f"attempts {first.get('attempt')}-{log[run[-1]].get('attempt')}"
            text = f"deferred {len(run)} times over {span:.1f} s ({attempts}): {last.get('reason')}"
            lines.append((float(first.get("at", 0)), text))
            index = run[-1] + 2
            continue
        lines.append((float(log[index].get("at", 0)), describe(log[index])))
        index += 1
    return lines


def _deferrals(log: list[dict[str, Any]], start: int) -> list[int]:
    """Indexes of consecutive ``attempt`` records, from ``start``, each followed at once by a
    ``deferred`` record with the same reason."""
    run: list[int] = []
    reason = None
    index = start
    while index + 1 < len(log):
        attempt, deferred = log[index], log[index + 1]
        if attempt.get("kind") != "attempt" or deferred.get("kind") != "deferred":
            break
        if reason is not None and deferred.get("reason") != reason:
            break
        reason = deferred.get("reason")
        run.append(index)
        index += 2
    return run


async def _resolve(event_id: str) -> str | None:
    from calhooks.service.core.redisconn import create_redis
    from calhooks.service.core.settings import get_settings
    from calhooks.workers import keys

    settings = get_settings()
    redis = create_redis(settings)
    try:
        if await redis.exists(keys.eventlog(event_id), keys.ledger(event_id)):
            return event_id
        if len(event_id) < _PREFIX_MIN:
            return None
        found: set[str] = set()
        for pattern in (keys.eventlog(event_id) + "*", keys.ledger(event_id) + "*"):
            async for key in redis.scan_iter(match=pattern, count=1000):
                found.add(key.decode().rsplit(":", 1)[-1])
        return found.pop() if len(found) == 1 else None
    finally:
        await redis.aclose()


async def _gather(event_id: str) -> dict[str, Any]:
    from calhooks.service.core.redisconn import create_redis
    from calhooks.service.core.settings import get_settings
    from calhooks.workers.deadletter import DeadLetterQueue, entry_id
    from calhooks.workers.eventlog import EventLog
    from calhooks.workers.ledger import Ledger

    settings = get_settings()
    redis = create_redis(settings)
    try:
        log = await EventLog(redis, ttl=settings.worker_record_ttl).read(event_id)
        state = await Ledger(redis, ttl=settings.worker_record_ttl).load(event_id)
        dead = [rule for rule, outcome in state.rules.items() if outcome == "dead"]
        present = await DeadLetterQueue(redis).event_entries(event_id, dead)
        steps = {
            field.removeprefix("step:"): {"state": r.state, "how": r.how, "output": r.output}
            for field, r in state.steps.items()
        }
        return {
            "id": event_id,
            "log": log,
            "matched": state.matched,
            "rules": state.rules,
            "steps": steps,
            "runs": state.runs,
            "dead_letters": {
                rule: entry_id(event_id, rule)
                for rule in dead
                if entry_id(event_id, rule) in present
            },
        }
    finally:
        await redis.aclose()


@app.command()
def show(
    event_id: Annotated[str, typer.Argument(help="Event id (or a unique prefix of 8+).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Say what happened to one event: rules matched, steps, calls, results, errors."""
    resolved = asyncio.run(_resolve(event_id))
    if resolved is None:
        fail(
            f"no record of event {event_id!r}: not processed yet, expired "
            "(CALHOOKS_WORKER_RECORD_TTL), or the prefix is ambiguous"
        )
    report = asyncio.run(_gather(resolved))
    if as_json:
        times = ("at", "received_at", "sent_at")
        log = [
            {
                key: iso(value) if key in times and value is not None else value
                for key, value in record.items()
            }
            for record in report["log"]
        ]
        print_json({**report, "log": log})
        return
    first: dict[str, Any] = next((r for r in report["log"] if r.get("kind") == "attempt"), {})
    trigger = first.get("trigger", "?")
    typer.echo(f"event {resolved}  {trigger}")
    connection = connection_text(first)
    if connection is not None:
        typer.echo(f"connection {connection}")
    booking = next((r for r in reversed(report["log"]) if r.get("kind") == "booking"), None)
    if booking is not None:
        typer.echo(f"booking {booking_text(booking)}")
    if first.get("received_at"):
        typer.echo(f"received {iso(float(first['received_at']))}")
    for at, text in collapse(report["log"]):
        typer.echo(f"{_clock(at)}  {text}")
    if report["rules"]:
        typer.echo("rules:")
        for rule, outcome in report["rules"].items():
            typer.echo(f"  {rule}: {outcome}")
    pending = [r for r in report["matched"] or [] if r not in report["rules"]]
    for rule in pending:
        typer.echo(f"  {rule}: in progress")
    for rule, dead_id in report["dead_letters"].items():
        typer.echo(f"dead letter {dead_id} ({rule}): `calhooks dlq show {dead_id}`")
