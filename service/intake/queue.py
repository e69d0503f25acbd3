"""Putting events on arq's queue: JSON jobs, de-duplicated, paced per connection, in one step.

The job format and the key names are the contract with the workers, in
``calhooks.service.events``; this module only writes jobs.

``ENQUEUE`` is one Lua script, so it is atomic and costs one command per event:

1. ``SET calhooks:intake:seen:<id> NX EX <dedupe window>`` - arq's own job id only blocks a
   re-enqueue while the job or its result is kept (an hour), so the intake holds its own key
   for days; if it exists the delivery is a duplicate and nothing else happens;
2. arq's ``enqueue_job`` steps: skip if ``arq:job:<id>`` or ``arq:result:<id>`` exists, else
   ``PSETEX arq:job:<id>`` and ``ZADD <queue> <score> <id>``, the score being when the job is
   due (now, unless the event's connection is paced - below);
3. ``LPUSH <queue>:wake 1`` + ``LTRIM 0 63`` so an idle worker starts at once.

The job key lives as long as the dedupe window after the job is due (arq's default is a day):
a job that waits out a long worker outage must still be there when workers return.

**Fair scheduling between connections (pacing).** Many Cal.com organizations (connections)
share one queue and one pool of workers. Without care, an organization that sends 5,000
deliveries at once stands in front of every other one's fresh events for as long as its
flood takes. arq starts due jobs only, in score order (its poll is a ``ZRANGEBYSCORE`` up to
now), so the score is the one lever needed: each connection gets a virtual clock, the GCRA
(generic cell rate algorithm) of ATM networks. With ``T = 60000 / CALHOOKS_CONNECTION_RATE``
ms (rounded to a whole millisecond) and ``B = CALHOOKS_CONNECTION_BURST``, ``ENQUEUE`` keeps
the connection's *theoretical arrival time* in ``calhooks:pace:<pcid>`` and, per new event::

    tat   = max(stored tat, now) + T
    score = max(now, tat - B * T)

A connection that sends at most ``B`` events at once, or no faster than its rate, gets every
event due now; past the burst its events are due one ``T`` apart, so a flood is released at
the connection's pace and every other connection's events, due now, come before the flood's
future ones. The clock only moves for an event that is queued: a duplicate (either check of
step 2) returns before it. The key expires once its ``tat`` is in the past (it would be
replaced by ``now`` anyway), so idle connections cost nothing. The environment's
organization (``connection`` None) is not paced: with no connections calhooks behaves as it
always did. ``CALHOOKS_CONNECTION_RATE=0`` turns pacing off. The spool's replay queues its
records through ``enqueue`` too, so replayed events are paced the same way (from the moment
they are replayed).

Why pacing at enqueue rather than a queue per connection: it keeps arq's single queue, and
so its retries, the workers' leases, the batched claim (``workers/wakeup.py``) and every
tool that reads the queue unchanged; the fairness costs one ``GET``/``SET`` in a script that
runs anyway. What it costs: a connection's events are released at most at its pace (120 a
minute by default) even when they need no Cal.com call at all, and even when the workers
are idle - a flood of events that match no rule still takes ``count / rate`` minutes to go
through. A rate at or above the connection's API-key limit keeps that cost small: its
events cannot be run faster than its key allows anyway.

How it meets the workers' rate limit (``workers/ratelimit.py``, one shared budget per API
key): pacing decides when a job may *start*; the rate limit decides when its calls may *go*.
A job whose key has no budget for longer than the limiter's longest wait raises ``Defer`` and
is re-queued for later instead of holding a worker slot, so a connection whose calls exceed
its key's budget waits on its own key. A flood always does at first - the burst and the pace
release 240 events in its first minute against a budget of 119 - and the part of that
overflow whose wait is shorter than the longest wait (``min(30 s, job timeout / 4)``) sleeps
in its worker slot: pacing keeps the other connections' events ahead of the flood's, the
limiter's wait decides whether they also get a slot at once (``docs/fair-scheduling.md``,
``bench/connections.py``). ``ready_jobs`` counts due jobs only: events waiting for their pace
are not a backlog to scale workers on.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass

from arq.constants import job_key_prefix, result_key_prefix

from calhooks.service.core.settings import Settings
from calhooks.service.events import DEDUPE_PREFIX, Event, job_bytes, wake_key
from calhooks.service.intake.redispipe import Arg, RedisPipe, Script

#: Prefix of a connection's virtual clock (its theoretical arrival time, epoch ms).
PACE_PREFIX = "calhooks:pace:"

ENQUEUE = Script(
    """
-- KEYS: dedupe key, arq job key, arq result key, queue, wake list[, pace key]
-- ARGV: dedupe ttl (s), job bytes, job ttl (ms), now (ms), job id[, interval (ms), burst]
if not redis.call('SET', KEYS[1], ARGV[4], 'NX', 'EX', ARGV[1]) then
  return 0
end
if redis.call('EXISTS', KEYS[2], KEYS[3]) > 0 then
  return 0
end
local now = tonumber(ARGV[4])
local score = now
if KEYS[6] then
  local interval = tonumber(ARGV[6])
  local tat = math.max(tonumber(redis.call('GET', KEYS[6]) or '0'), now) + interval
  redis.call('SET', KEYS[6], string.format('%d', tat), 'PX', string.format('%d', tat - now))
  score = math.max(now, tat - tonumber(ARGV[7]) * interval)
end
redis.call('PSETEX', KEYS[2], string.format('%d', tonumber(ARGV[3]) + score - now), ARGV[2])
redis.call('ZADD', KEYS[4], string.format('%d', score), ARGV[5])
redis.call('LPUSH', KEYS[5], '1')
redis.call('LTRIM', KEYS[5], 0, 63)
return 1
"""
)


class Enqueued(enum.Enum):
    QUEUED = "queued"
    DUPLICATE = "duplicate"


@dataclass(frozen=True)
class Pacing:
    """A connection's pace: ``rate`` events a minute after a burst of ``burst`` at once."""

    rate: int
    burst: int

    @property
    def interval_ms(self) -> int:
        """Milliseconds between two events past the burst (at least 1)."""
        return max(1, round(60_000 / self.rate))

    @classmethod
    def from_settings(cls, settings: Settings) -> Pacing | None:
        """``CALHOOKS_CONNECTION_RATE``/``_BURST``; ``None`` when the rate is 0 (no pacing)."""
        if settings.connection_rate == 0:
            return None
        return cls(settings.connection_rate, settings.connection_burst)


class EventQueue:
    """Enqueues events through a ``RedisPipe`` (one ``EVALSHA`` per event).

    With ``pacing``, a connection's events are due at its pace (see the module docstring).
    """

    def __init__(
        self,
        pipe: RedisPipe,
        *,
        queue_name: str,
        dedupe_window: int,
        pacing: Pacing | None = None,
    ) -> None:
        self.pipe = pipe
        self.queue_name = queue_name
        self.dedupe_window = dedupe_window
        self.pacing = pacing
        self._wake = wake_key(queue_name)

    async def enqueue(self, event: Event, *, deadline: float | None) -> Enqueued:
        """Queue ``event`` unless already seen; raises ``RedisUnavailable``/``RedisDeadline``."""
        now_ms = int(time.time() * 1000)
        keys: tuple[Arg, ...] = (
            DEDUPE_PREFIX + event.id,
            job_key_prefix + event.id,
            result_key_prefix + event.id,
            self.queue_name,
            self._wake,
        )
        args: tuple[Arg, ...] = (
            self.dedupe_window,
            job_bytes(event, now_ms),
            self.dedupe_window * 1000,
            now_ms,
            event.id,
        )
        if self.pacing is not None and event.connection is not None:
            keys = (*keys, PACE_PREFIX + event.connection)
            args = (*args, self.pacing.interval_ms, self.pacing.burst)
        added = await self.pipe.evalsha(ENQUEUE, keys, args, deadline=deadline)
        return Enqueued.QUEUED if added == 1 else Enqueued.DUPLICATE

    async def ready_jobs(self, *, deadline: float) -> int:
        """Jobs due now (score <= now), not deferred or paced ones: the backlog workers scale on."""
        now_ms = int(time.time() * 1000)
        count = await self.pipe.execute(
            "ZCOUNT", self.queue_name, "-inf", now_ms, deadline=deadline
        )
        return int(count)
