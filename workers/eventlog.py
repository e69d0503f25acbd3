"""The event log: what happened to each event, for ``calhooks events show ID``.

One Redis list per event (``calhooks:eventlog:<id>``) of JSON records, oldest first, kept
``CALHOOKS_WORKER_RECORD_TTL`` seconds and capped at ``MAX_RECORDS``. Each record has ``at``
(epoch seconds), ``kind`` and fields of its own:

* ``attempt`` - a worker started the event (``attempt``, ``worker``);
* ``matched`` - the rules whose conditions matched (``rules``) and why each other rule did
  not (``not_matched``: rule name to reason);
* ``step`` - a tool step ended (``rule``, ``step``, ``index``, ``tool``, ``how``: ``called``,
  ``recorded`` (reused from an earlier attempt), ``found`` (an earlier attempt's create found
  in Cal.com), ``already`` (an earlier attempt's delete or create had happened);
  ``ms``, or ``error``);
* ``call`` - one HTTP attempt toward Cal.com (``tool``, ``status``, ``ms``, ``request_id``,
  ``sent_at``: when it was sent);
* ``rule`` - a rule ended (``rule``, ``outcome``: done / retry / dead_lettered, ``error``);
* ``retry`` / ``deferred`` - the event will run again (``delay``, ``reason``);
* ``dead_lettered`` - a rule went to the dead-letter queue (``rule``, ``dead_letter``);
* ``done`` / ``skipped`` - the event finished (``reason`` when skipped).

Records are buffered in memory during an attempt and written along with the ledger's own
writes (a create's record, the attempt's last write), so logging adds no Redis round trip
of its own. A
worker killed mid-attempt loses the records since its last write; the step ledger, not this
log, is what exactly-once relies on.
"""

from __future__ import annotations

import json
import time
from contextvars import ContextVar
from typing import Any

import httpx
import redis.asyncio as aioredis

from calhooks.service.calcom.tools import Tool
from calhooks.service.core import timeseries
from calhooks.service.core.logs import redact_secrets
from calhooks.workers import keys
from calhooks.workers.redistyped import lrange

MAX_RECORDS = 1000
#: Record fields that may carry values from Cal.com or the rules (the others are names,
#: numbers and statuses): only records with one of them go through the redaction.
_MAY_HOLD_SECRETS = frozenset({"params", "error", "output", "fields", "reason"})
_COMPACT: dict[str, Any] = {"default": str, "separators": (",", ":")}

_current: ContextVar[EventRecorder | None] = ContextVar("calhooks_event_recorder", default=None)


def redact(value: Any) -> Any:
    """``value`` with secrets masked as the logs mask them (secret keys, API keys)."""
    return redact_secrets(None, "", {"value": value})["value"]


class EventRecorder:
    """Collects one attempt's records for one event and writes them in batches."""

    def __init__(self, redis: aioredis.Redis, event_id: str, ttl: int) -> None:
        self.redis = redis
        self.event_id = event_id
        self.ttl = ttl
        #: Keep the log without expiry (the event has a rule in the dead-letter queue).
        self.kept = False
        self._pending: list[dict[str, Any]] = []

    def add(self, kind: str, **fields: Any) -> None:
        self._pending.append({"at": round(time.time(), 6), "kind": kind, **fields})

    def write_into(self, pipe: Any) -> None:
        """Add the buffered records to ``pipe`` (a redis pipeline someone else executes)."""
        if not self._pending:
            return
        records, self._pending = self._pending, []
        key = keys.eventlog(self.event_id)
        encoded = [
            json.dumps(redact(r) if _MAY_HOLD_SECRETS & r.keys() else r, **_COMPACT)
            for r in records
        ]
        pipe.rpush(key, *encoded)
        pipe.ltrim(key, -MAX_RECORDS, -1)
        if self.kept:
            pipe.persist(key)
        else:
            pipe.expire(key, self.ttl)

    async def flush(self) -> None:
        """Write the buffered records now."""
        if not self._pending:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            self.write_into(pipe)
            await pipe.execute()

    def activate(self) -> object:
        """Make this the recorder that ``CallLog`` writes to in the current task."""
        return _current.set(self)

    @staticmethod
    def deactivate(token: object) -> None:
        _current.reset(token)  # type: ignore[arg-type]


class EventLog:
    """Reads and writes event logs."""

    def __init__(self, redis: aioredis.Redis, *, ttl: int) -> None:
        self.redis = redis
        self.ttl = ttl

    def recorder(self, event_id: str) -> EventRecorder:
        return EventRecorder(self.redis, event_id, self.ttl)

    async def read(self, event_id: str) -> list[dict[str, Any]]:
        raw = await lrange(self.redis, keys.eventlog(event_id), 0, -1)
        return [json.loads(item) for item in raw]

    async def expire(self, event_id: str) -> None:
        await self.redis.expire(keys.eventlog(event_id), self.ttl)


class CallLog:
    """A ``RequestGate`` adding a ``call`` record for every HTTP attempt to the current event."""

    async def before(self, tool: Tool) -> None:
        return None

    async def after(self, tool: Tool, response: httpx.Response | None, elapsed: float) -> None:
        status = response.status_code if response is not None else None
        timeseries.RECORDER.count("calcom.calls")
        if status == 429:
            timeseries.RECORDER.count("calcom.429")
        recorder = _current.get()
        if recorder is None:
            return
        recorder.add(
            "call",
            sent_at=round(time.time() - elapsed, 6),
            tool=tool.name,
            status=status,
            ms=round(elapsed * 1000, 2),
            request_id=response.headers.get("x-request-id") if response is not None else None,
        )
