"""Putting events on arq's queue: JSON jobs, de-duplicated and enqueued in one atomic step.

The job format and the key names are the contract with the workers, in
``calhooks.service.events``; this module only writes jobs.

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
import time

from arq.constants import job_key_prefix, result_key_prefix

from calhooks.service.events import DEDUPE_PREFIX, Event, job_bytes, wake_key
from calhooks.service.intake.redispipe import RedisPipe, Script

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
