"""Putting events on arq's queue: JSON jobs, de-duplicated and enqueued in one atomic step.

The contract with the workers (``workers/``): one arq job per event, function
``process_event``, one positional argument (``Event.to_dict()``), job id = event id, on
``settings.queue_name``. Jobs are JSON, not pickle - ``serialize_job``/``deserialize_job`` are
what the worker hands arq as ``job_serializer``/``job_deserializer`` (they also carry arq's
result records, so anything JSON cannot hold is turned into something it can).

``ENQUEUE`` is one Lua script, so it is atomic and costs one command per event:

1. ``SET calhooks:intake:seen:<id> NX EX <dedupe window>`` - arq's own job id only blocks a
   re-enqueue while the job or its result is kept (an hour), so the intake holds its own key
   for days; if it exists the delivery is a duplicate and nothing else happens;
2. arq's ``enqueue_job`` steps, verbatim: skip if ``arq:job:<id>`` or ``arq:result:<id>`` exists,
   else ``PSETEX arq:job:<id>`` and ``ZADD <queue> <now ms> <id>``;
3. ``LPUSH <queue>:wake 1`` + ``LTRIM 0 63`` so an idle worker starts at once.

The job key lives as long as the dedupe window (arq's default is a day): a job that waits out
a long worker outage must still be there when workers return.
"""

from __future__ import annotations

import enum
import json
import time
from datetime import date, datetime
from typing import Any

import orjson
from arq.constants import job_key_prefix, result_key_prefix

from service.events import Event
from service.redispipe import RedisPipe, Script

JOB_FUNCTION = "process_event"
DEDUPE_PREFIX = "calhooks:intake:seen:"

ENQUEUE = Script(
    """
-- KEYS: dedupe key, arq job key, arq result key, queue, wake list
-- ARGV: dedupe ttl (s), job bytes, job ttl (ms), score (ms), job id
if not redis.call('SET', KEYS[1], ARGV[4], 'NX', 'EX', ARGV[1]) then
  return 0
end
if redis.call('EXISTS', KEYS[2], KEYS[3]) > 0 then
  return 0
end
redis.call('PSETEX', KEYS[2], ARGV[3], ARGV[2])
redis.call('ZADD', KEYS[4], ARGV[4], ARGV[5])
redis.call('LPUSH', KEYS[5], '1')
redis.call('LTRIM', KEYS[5], 0, 63)
return 1
"""
)


class Enqueued(enum.Enum):
    QUEUED = "queued"
    DUPLICATE = "duplicate"


def _jsonable(value: Any) -> Any:
    """What ``json`` cannot encode, in a form it can (arq's results may hold anything)."""
    if isinstance(value, BaseException):
        return {"error": type(value).__name__, "message": str(value)}
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, set | frozenset):
        return sorted(value, key=repr)
    return repr(value)


def serialize_job(obj: Any) -> bytes:
    """arq's ``job_serializer``: compact JSON.

    orjson for speed; the standard library's encoder when orjson refuses a value (an integer
    beyond 64 bits, a string with a lone surrogate), so every parsed body round-trips.
    """
    try:
        return orjson.dumps(obj, default=_jsonable)
    except TypeError:
        return json.dumps(obj, separators=(",", ":"), default=_jsonable).encode()


def deserialize_job(data: bytes) -> dict[str, Any]:
    """arq's ``job_deserializer`` (the standard library's: exact for any integer)."""
    value = json.loads(data)
    if not isinstance(value, dict):
        raise ValueError("an arq job must be a JSON object")
    return value


def job_bytes(event: Event, enqueue_time_ms: int) -> bytes:
    """The arq job record for ``event``, as arq's ``serialize_job`` lays it out."""
    return serialize_job(
        {"t": None, "f": JOB_FUNCTION, "a": [event.to_dict()], "k": {}, "et": enqueue_time_ms}
    )


def wake_key(queue_name: str) -> str:
    return f"{queue_name}:wake"


def dedupe_key(event_id: str) -> str:
    return DEDUPE_PREFIX + event_id


class EventQueue:
    """Enqueues events through a ``RedisPipe`` (one ``EVALSHA`` per event)."""

    def __init__(self, pipe: RedisPipe, *, queue_name: str, dedupe_window: int) -> None:
        self.pipe = pipe
        self.queue_name = queue_name
        self.dedupe_window = dedupe_window
        self._wake = wake_key(queue_name)

    async def enqueue(self, event: Event, *, deadline: float | None) -> Enqueued:
        """Queue ``event`` unless already seen; raises ``RedisUnavailable``/``RedisDeadline``."""
        now_ms = int(time.time() * 1000)
        keys = (
            DEDUPE_PREFIX + event.id,
            job_key_prefix + event.id,
            result_key_prefix + event.id,
            self.queue_name,
            self._wake,
        )
        args = (self.dedupe_window, job_bytes(event, now_ms), self.dedupe_window * 1000, now_ms)
        added = await self.pipe.evalsha(ENQUEUE, keys, (*args, event.id), deadline=deadline)
        return Enqueued.QUEUED if added == 1 else Enqueued.DUPLICATE

    async def ready_jobs(self, *, deadline: float) -> int:
        """Jobs due now (score <= now), not deferred ones: the backlog workers scale on."""
        now_ms = int(time.time() * 1000)
        count = await self.pipe.execute(
            "ZCOUNT", self.queue_name, "-inf", now_ms, deadline=deadline
        )
        return int(count)
