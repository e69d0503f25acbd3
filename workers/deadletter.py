"""The dead-letter queue: rules that failed for good, kept until someone replays or drops them.

arq has none: a job that fails is only a result that expires. Here a rule goes to the
dead-letter queue when it fails permanently (a 4xx, a rule that cannot be evaluated) or
still fails transiently after ``CALHOOKS_WORKER_MAX_TRIES`` attempts. One entry per event
and rule, id = a hash of both (so a rule failing again after a replay updates its entry),
holding: the event (to replay it), the connection it came through (PCID and name; none for
the environment's organization), the rule, the failing step, its parameters with secrets
redacted, the error and the attempt count.

Storage: a hash ``calhooks:dlq`` (id -> JSON entry) and a sorted set ``calhooks:dlq:index``
(id by time of death), so listing is newest first and paged.

Bounds: at most ``CALHOOKS_WORKER_DEAD_LETTER_MAX`` entries, none older than
``CALHOOKS_WORKER_DEAD_LETTER_MAX_AGE`` seconds. ``trim`` drops the oldest entries past
either bound - each time an entry is added, and every minute from each worker - and lets
the records of their events (ledger, delivery log) expire again after
``CALHOOKS_WORKER_RECORD_TTL`` once no entry of the event is left.

Replay (``calhooks dlq replay ID | --all``) reopens the rule in the event's ledger and queues
the event again under its own job id. The ledger still holds the steps that succeeded, so
they are not repeated; the failing step runs again (with the rules as they are now, say
after a fix). The entry stays, marked ``replaying``, until the rule succeeds (the worker
removes it) or fails again (the worker marks it ``dead`` once more). The event's ledger and
event log are kept without expiry while it has entries here.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import redis.asyncio as aioredis
from arq.connections import ArqRedis

from calhooks.service.calcom.errors import CalcomError, CalcomTransportError, ToolValidationError
from calhooks.service.events import JOB_FUNCTION, WAKE_LIST_LENGTH, wake_key
from calhooks.workers import keys
from calhooks.workers.eventlog import EventLog, redact
from calhooks.workers.formats import DEAD_LETTER_FORMAT, NewerFormat
from calhooks.workers.ledger import Ledger
from calhooks.workers.redistyped import hget

Status = Literal["dead", "replaying"]


def entry_id(event_id: str, rule: str) -> str:
    return hashlib.sha256(f"{event_id}\n{rule}".encode()).hexdigest()[:16]


def describe_error(exc: BaseException) -> dict[str, Any]:
    """An exception as plain data for an entry: type, message and Cal.com's details."""
    described: dict[str, Any] = {"type": type(exc).__name__, "message": str(exc)}
    if isinstance(exc, CalcomError):
        described.update(exc.to_dict())
    elif isinstance(exc, ToolValidationError):
        described["problems"] = [str(problem) for problem in exc.problems]
    elif isinstance(exc, CalcomTransportError):
        described["reason"] = exc.reason
    return described


@dataclass
class DeadLetter:
    """One rule of one event that failed for good."""

    event_id: str
    trigger: str
    rule: str
    error: dict[str, Any]
    attempts: int
    event: dict[str, Any]
    step: str | None = None
    index: int | None = None
    tool: str | None = None
    params: dict[str, Any] | None = None
    status: Status = "dead"
    dead_at: float = field(default_factory=time.time)
    replays: int = 0
    replayed_at: float | None = None
    #: The PCID of the connection the event came through (``None``: the environment's
    #: organization) and its name when the worker knew it.
    connection: str | None = None
    connection_name: str | None = None
    #: Format of the entry (``workers.formats``; absent: 1, written before versioning).
    v: int = DEAD_LETTER_FORMAT

    @property
    def id(self) -> str:
        return entry_id(self.event_id, self.rule)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, **asdict(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DeadLetter:
        """Any format (a newer one's unknown fields are left out); absent ``v`` is 1."""
        fields = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        fields.setdefault("v", 1)
        event = fields.get("event")
        if "connection" not in fields and isinstance(event, dict):  # written before the field
            fields["connection"] = event.get("connection")
        return cls(**fields)


#: Defaults of the bounds (the settings' defaults).
DEFAULT_MAX_ENTRIES = 10_000
DEFAULT_MAX_AGE = 30 * 24 * 3600
DEFAULT_RECORD_TTL = 7 * 24 * 3600


class DeadLetterQueue:
    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        max_age: float = DEFAULT_MAX_AGE,
        record_ttl: int = DEFAULT_RECORD_TTL,
    ) -> None:
        self.redis = redis
        self.max_entries = max_entries
        self.max_age = max_age
        self.record_ttl = record_ttl

    async def add(self, entry: DeadLetter) -> DeadLetter:
        """Store (or update, keeping its replay count) the entry for this event and rule,
        then ``trim`` the queue to its bounds."""
        previous = await self.get(entry.id)
        if previous is not None:
            entry.replays = previous.replays
            entry.replayed_at = previous.replayed_at
        entry.params = redact(entry.params) if entry.params is not None else None
        await self._save(entry)
        await self.trim()
        return entry

    async def trim(self, now: float | None = None) -> list[DeadLetter]:
        """Drop the entries older than ``max_age`` and the oldest past ``max_entries``;
        returns them. Their events' records expire again once no entry of theirs is left."""
        now = time.time() if now is None else now
        index = keys.dead_letter_index()
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zrangebyscore(index, "-inf", f"({now - self.max_age}")
            pipe.zcard(index)
            too_old, total = await pipe.execute()
        doomed = [member.decode() for member in too_old]
        surplus = int(total) - len(doomed) - self.max_entries
        if surplus > 0:
            oldest = await self.redis.zrange(index, len(doomed), len(doomed) + surplus - 1)
            doomed += [member.decode() for member in oldest]
        if not doomed:
            return []
        raw = await self.redis.hmget(keys.dead_letters(), doomed)  # type: ignore[misc]
        entries = [DeadLetter.from_dict(json.loads(item)) for item in raw if item is not None]
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hdel(keys.dead_letters(), *doomed)
            pipe.zrem(index, *doomed)
            await pipe.execute()
        for event_id in {entry.event_id for entry in entries}:
            await self._let_records_expire(event_id)
        return entries

    async def _let_records_expire(self, event_id: str) -> None:
        ledger = Ledger(self.redis, ttl=self.record_ttl)
        state = await ledger.load(event_id)
        dead = [rule for rule, outcome in state.rules.items() if outcome == "dead"]
        if not await self.event_entries(event_id, dead):
            await ledger.release_now(event_id)
            await EventLog(self.redis, ttl=self.record_ttl).expire(event_id)

    async def _save(self, entry: DeadLetter) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(keys.dead_letters(), entry.id, json.dumps(entry.to_dict(), default=str))
            pipe.zadd(keys.dead_letter_index(), {entry.id: entry.dead_at})
            await pipe.execute()

    async def get(self, id_or_prefix: str) -> DeadLetter | None:
        raw = await hget(self.redis, keys.dead_letters(), id_or_prefix)
        if raw is None:
            resolved = await self.resolve_prefix(id_or_prefix)
            if resolved is None:
                return None
            raw = await hget(self.redis, keys.dead_letters(), resolved)
            if raw is None:
                return None
        return DeadLetter.from_dict(json.loads(raw))

    async def resolve_prefix(self, prefix: str) -> str | None:
        """The one id starting with ``prefix`` (at least 4 characters), if exactly one does."""
        if len(prefix) < 4:
            return None
        found = [
            member.decode()
            for member in await self.redis.zrange(keys.dead_letter_index(), 0, -1)
            if member.decode().startswith(prefix)
        ]
        return found[0] if len(found) == 1 else None

    async def count(self) -> int:
        return int(await self.redis.zcard(keys.dead_letter_index()))

    async def page(self, *, offset: int = 0, limit: int = 50) -> list[DeadLetter]:
        """Entries, newest first."""
        ids = await self.redis.zrevrange(keys.dead_letter_index(), offset, offset + limit - 1)
        if not ids:
            return []
        raw = await self.redis.hmget(keys.dead_letters(), ids)  # type: ignore[misc]
        return [DeadLetter.from_dict(json.loads(item)) for item in raw if item is not None]

    async def ids(self) -> list[str]:
        """Every entry id, oldest first."""
        return [m.decode() for m in await self.redis.zrange(keys.dead_letter_index(), 0, -1)]

    async def remove(self, id_: str) -> bool:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hdel(keys.dead_letters(), id_)
            pipe.zrem(keys.dead_letter_index(), id_)
            removed, _ = await pipe.execute()
        return bool(removed)

    async def event_entries(self, event_id: str, rules: list[str]) -> list[str]:
        """Ids of the entries that exist for these rules of one event."""
        ids = [entry_id(event_id, rule) for rule in rules]
        if not ids:
            return []
        present = await self.redis.hmget(keys.dead_letters(), ids)  # type: ignore[misc]
        return [i for i, value in zip(ids, present, strict=True) if value is not None]

    async def mark_replaying(self, entry: DeadLetter) -> None:
        entry.status = "replaying"
        entry.replays += 1
        entry.replayed_at = time.time()
        await self._save(entry)

    async def enqueue(self, arq: ArqRedis, entry: DeadLetter, queue_name: str) -> bool:
        """Queue the entry's event again; ``False`` if its job is already queued or running.

        arq refuses a job id while the job or its result exists; the result of the event's
        last run is removed first (the ledger, not arq's result, is the record).
        """
        await arq.delete(keys.arq_result(entry.event_id))
        job = await arq.enqueue_job(
            JOB_FUNCTION, entry.event, _job_id=entry.event_id, _queue_name=queue_name
        )
        async with arq.pipeline(transaction=False) as pipe:
            pipe.lpush(wake_key(queue_name), 1)
            pipe.ltrim(wake_key(queue_name), 0, WAKE_LIST_LENGTH - 1)
            await pipe.execute()
        return job is not None


async def replay(
    entry: DeadLetter,
    *,
    dlq: DeadLetterQueue,
    ledger: Ledger,
    arq: ArqRedis,
    queue_name: str,
) -> bool:
    """Reopen the entry's rule and queue its event again; ``False`` if it was already queued.

    Either way the rule runs on the event's next attempt: a job already queued loads the
    reopened ledger when it starts, and one running now sees the rule reopened when it ends
    and runs once more. ``NewerFormat`` for an entry a newer release wrote.
    """
    if entry.v != DEAD_LETTER_FORMAT:
        raise NewerFormat("dead letter", entry.v, DEAD_LETTER_FORMAT)
    await ledger.reopen_rule(entry.event_id, entry.rule)
    await dlq.mark_replaying(entry)
    return await dlq.enqueue(arq, entry, queue_name)
