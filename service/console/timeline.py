"""One event as the console shows it: its summary, timeline, rules, dead letters, payload.

The timeline is the workers' delivery log (``workers/eventlog.py``) turned into rows; the
rules' final state comes from the ledger; the payload from the event's arq job (while it is
queued, or its result is kept) or from one of its dead-letter entries - with secrets masked
as the logs mask them. For rules that did not match, the reason comes from evaluating the
current rules file against the payload.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as aioredis
from arq.constants import job_key_prefix

from calhooks.service.core.eventindex import INDEX_KEY, bucket_key, summary_key
from calhooks.service.events import Event, deserialize_job
from calhooks.workers import keys
from calhooks.workers.deadletter import DeadLetterQueue, entry_id
from calhooks.workers.eventlog import EventLog, redact
from calhooks.workers.ledger import Ledger
from calhooks.workers.rules import RuleSet
from calhooks.workers.rules.dryrun import QuietLog
from calhooks.workers.rules.scope import Origin

ID_PREFIX_MIN = 6


@dataclass
class Row:
    at: float
    kind: str
    text: str
    status: str = ""
    ms: float | None = None
    detail: str = ""

    @property
    def level(self) -> str:
        """``ok``, ``warn`` or ``bad``: how the status reads (the CSS class of its tag)."""
        status = self.status
        if status == "429" or status in ("retry", "deferred", "skipped"):
            return "warn"
        if status[:1] in ("4", "5") or status in ("failed", "dead_lettered", "no answer"):
            return "bad"
        return "ok"

    @property
    def clock(self) -> str:
        return datetime.fromtimestamp(self.at, UTC).strftime("%H:%M:%S.%f")[:-3]


@dataclass
class EventView:
    id: str
    summary: dict[str, Any] | None
    rows: list[Row]
    rules: dict[str, str]
    matched: list[str] | None
    unmatched: list[tuple[str, str]]
    dead_letters: dict[str, str]
    payload: str | None
    runs: int
    trigger: str = ""
    received_at: float | None = None
    steps: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: The connection (PCID) it came through and its name (``None``: the environment's org).
    connection: str | None = None
    connection_name: str | None = None


def error_text(error: Any) -> str:
    if not isinstance(error, dict):
        return str(error)
    if "status" in error:
        return f"{error['status']} {error.get('code', '')}: {error.get('message', '')}"
    return f"{error.get('type', 'Error')}: {error.get('message', '')}"


def row(record: dict[str, Any]) -> Row:
    """One delivery-log record as a timeline row."""
    kind = str(record.get("kind", "?"))
    at = float(record.get("at", 0))
    if kind == "attempt":
        return Row(at, kind, f"attempt {record.get('attempt')} on {record.get('worker')}")
    if kind == "matched":
        rules = record.get("rules") or []
        return Row(at, kind, "matched " + (", ".join(rules) if rules else "no rule"))
    if kind == "call":
        status = record.get("status")
        return Row(
            at,
            kind,
            f"Cal.com {record.get('tool')}",
            status=str(status) if status is not None else "no answer",
            ms=record.get("ms"),
            detail=f"request {record['request_id']}" if record.get("request_id") else "",
        )
    if kind == "step":
        where = f"{record.get('rule')} / {record.get('step')}"
        if record.get("index") is not None:
            where += f"[{record['index']}]"
        if "error" in record:
            return Row(at, kind, f"step {where}", "failed", detail=error_text(record["error"]))
        return Row(at, kind, f"step {where}", str(record.get("how", "")), record.get("ms"))
    if kind == "rule":
        return Row(
            at,
            kind,
            f"rule {record.get('rule')}",
            str(record.get("outcome", "")),
            detail=" - ".join(
                x
                for x in (
                    record.get("reason"),
                    error_text(record["error"]) if record.get("error") else "",
                )
                if x
            ),
        )
    if kind in ("retry", "deferred"):
        return Row(
            at, kind, f"{kind} in {record.get('delay')} s", detail=str(record.get("reason", ""))
        )
    if kind == "dead_lettered":
        return Row(
            at,
            kind,
            f"rule {record.get('rule')} dead-lettered",
            detail=str(record.get("dead_letter")),
        )
    if kind == "skipped":
        return Row(at, kind, "skipped", detail=str(record.get("reason", "")))
    return Row(at, kind, kind)


async def resolve(redis: aioredis.Redis, id_or_prefix: str) -> str | None:
    """The event id, given itself or a unique prefix of ``ID_PREFIX_MIN``+ characters."""
    if not id_or_prefix.isalnum():
        return None
    if await redis.zscore(INDEX_KEY, id_or_prefix) is not None:
        return id_or_prefix
    if await redis.exists(keys.eventlog(id_or_prefix)):
        return id_or_prefix
    if len(id_or_prefix) < ID_PREFIX_MIN:
        return None
    members = await redis.zrange(bucket_key(id_or_prefix), 0, -1)
    found = [m.decode() for m in members if m.decode().startswith(id_or_prefix.lower())]
    return found[0] if len(found) == 1 else None


async def job_event(redis: aioredis.Redis, event_id: str) -> dict[str, Any] | None:
    """The event as queued (arq's job, or its kept result), or ``None``."""
    for key in (job_key_prefix + event_id, keys.arq_result(event_id)):
        raw = await redis.get(key)
        if raw is None:
            continue
        try:
            args = deserialize_job(raw).get("a") or []
        except ValueError:
            continue
        if args and isinstance(args[0], dict):
            return args[0]
    return None


def _origin(
    view: EventView, summary: dict[str, Any] | None, first: dict[str, Any]
) -> Origin | None:
    """The event's connection as the rules see it, from what the worker recorded."""
    if view.connection is None:
        return None
    tenant = (summary or {}).get("connection_tenant") or first.get("connection_tenant") or ""
    return Origin(view.connection, view.connection_name or view.connection, str(tenant))


async def gather(redis: aioredis.Redis, event_id: str, *, ttl: int, rules: RuleSet) -> EventView:
    raw_summary = await redis.get(summary_key(event_id))
    summary = json.loads(raw_summary) if raw_summary else None
    log = await EventLog(redis, ttl=ttl).read(event_id)
    state = await Ledger(redis, ttl=ttl).load(event_id)
    dlq = DeadLetterQueue(redis)
    dead = [rule for rule, outcome in state.rules.items() if outcome == "dead"]
    present = set(await dlq.event_entries(event_id, dead))
    dead_letters = {r: entry_id(event_id, r) for r in dead if entry_id(event_id, r) in present}
    event_data = await job_event(redis, event_id)
    if event_data is None and present:
        entry = await dlq.get(next(iter(present)))
        event_data = entry.event if entry else None
    first = next((r for r in log if r.get("kind") == "attempt"), {})
    view = EventView(
        id=event_id,
        summary=summary,
        rows=[row(r) for r in log],
        rules=dict(state.rules),
        matched=state.matched,
        unmatched=[],
        dead_letters=dead_letters,
        payload=None,
        runs=state.runs,
        trigger=str((summary or {}).get("trigger") or first.get("trigger") or ""),
        received_at=(summary or {}).get("received_at") or first.get("received_at"),
        steps={
            name.removeprefix("step:"): {"state": r.state, "how": r.how}
            for name, r in state.steps.items()
        },
        connection=(summary or {}).get("connection") or first.get("connection"),
        connection_name=(summary or {}).get("connection_name") or first.get("connection_name"),
    )
    if event_data is not None:
        view.payload = json.dumps(redact(event_data.get("raw", event_data)), indent=2, default=str)
        try:
            event = Event.from_dict(event_data)
        except ValueError:
            return view
        view.unmatched = [
            (m.rule.name, m.reason or "")
            for m in rules.evaluate(event, log=QuietLog(), origin=_origin(view, summary, first))
            if not m.matched and m.rule.name not in (view.matched or [])
        ]
    return view
