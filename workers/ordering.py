"""Events about one booking are processed one at a time, in the order they arrived.

Cal.com sends each trigger as its own request, without retries by default, and nothing
stops a BOOKING_CANCELLED from reaching the intake before (or being picked up alongside) the
BOOKING_CREATED of the same booking. The intake queues events as they arrive; the workers
then keep three rules per booking uid (``payload.uid``, or ``bookingUid`` for no-show
updates):

1. **One at a time** - a lock per uid (``calhooks:booking:<uid>:lock``, re-entrant for the
   same event after a crash) so two events of one booking never run concurrently, whichever
   workers picked them. Under ``calhooks worker`` the lock is a lease
   (``calhooks.workers.leases``): it lives ``CALHOOKS_WORKER_LEASE`` seconds and the holder's
   lease keeper renews it, so a dead holder's lock lapses within one lease; without a lease
   keeper (arq's own CLI) it lives the job timeout.
2. **Arrival order** - each event registers in a per-uid sorted set scored by the time the
   intake received it; an event yields while an earlier-received event of the same booking
   is still registered (being processed or retried), for at most ``CALHOOKS_WORKER_ORDERING_
   WAIT`` seconds after it arrived - a failing event cannot hold its booking's later events
   forever.
3. **End state** - a cancellation or rejection waits (the same bounded time) until its
   booking's creation (BOOKING_CREATED, _REQUESTED or _RESCHEDULED, which creates the new
   uid) has been processed, so "create the OOO entry" runs before "delete it". And once a
   booking's cancellation has been processed, a creation event arriving (or retried) later
   is skipped: the booking no longer exists, so reacting to its creation would leave the
   wrong state.

Waiting happens in-process for up to ``lock_wait`` seconds (a few ms normally), then the job
is deferred (``Defer``: re-queued without counting an attempt) so it gives its slot back.

Limit: two events of one booking picked up within the same millisecond may register in
either order; rule 3 still makes a create/cancel pair end right.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from calhooks.workers import keys
from calhooks.workers.leases import LeaseKeeper
from calhooks.workers.retries import Defer

CREATION = frozenset({"BOOKING_CREATED", "BOOKING_REQUESTED", "BOOKING_RESCHEDULED"})
TERMINAL = frozenset({"BOOKING_CANCELLED", "BOOKING_REJECTED"})

# KEYS lock, pending, booking. ARGV event id, received_at, lease ms, ignore-before, ttl s.
# Returns {'ok'|'busy'|'earlier', flat booking hash}.
_ENTER = """
redis.call('ZADD', KEYS[2], 'NX', ARGV[2], ARGV[1])
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[5]))
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return {'busy', {}} end
local mine = tonumber(ARGV[2])
local earlier = redis.call('ZRANGEBYSCORE', KEYS[2], ARGV[4], ARGV[2], 'WITHSCORES')
for i = 1, #earlier, 2 do
  local member, score = earlier[i], tonumber(earlier[i + 1])
  if member ~= ARGV[1] and (score < mine or member < ARGV[1]) then
    return {'earlier', {}}
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', tonumber(ARGV[3]))
return {'ok', redis.call('HGETALL', KEYS[3])}
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# KEYS booking, pending, lock. ARGV event id, received_at, ttl s, then field, value, ...
# Records the event in the booking, unregisters it, then releases the lock (in that order).
_FINISH = """
redis.call('HSET', KEYS[1], unpack(ARGV, 4))
local seen = tonumber(redis.call('HGET', KEYS[1], 'last')) or 0
if tonumber(ARGV[2]) > seen then redis.call('HSET', KEYS[1], 'last', ARGV[2]) end
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
redis.call('ZREM', KEYS[2], ARGV[1])
if redis.call('GET', KEYS[3]) == ARGV[1] then redis.call('DEL', KEYS[3]) end
"""


def booking_uid(payload: Mapping[str, Any]) -> str | None:
    """The booking an event is about, if it is about one."""
    for name in ("uid", "bookingUid"):
        value = payload.get(name)
        if isinstance(value, str) and value:
            return value
    return None


@dataclass(slots=True)
class Turn:
    """An event's turn with its booking: skip it, or run it (``late`` if it lost the race)."""

    uid: str | None
    skip_reason: str | None = None
    late: bool = False
    #: The lock's release is taken care of (``finish``, in the attempt's last write).
    released: bool = False


class BookingOrder:
    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        wait: float = 30.0,
        lease: float = 310.0,
        ttl: int = 7 * 24 * 3600,
        lock_wait: float = 2.0,
        defer: float = 0.5,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        leases: LeaseKeeper | None = None,
    ) -> None:
        self.redis = redis
        self.wait = wait
        self.leases = leases
        self.lease = leases.lease if leases is not None else lease
        self.ttl = ttl
        self.lock_wait = lock_wait
        self.defer = defer
        self._sleep = sleep
        self._enter = redis.register_script(_ENTER)
        self._release = redis.register_script(_RELEASE)

    async def _acquire(self, uid: str, event_id: str, received_at: float) -> dict[str, str]:
        deadline = time.monotonic() + self.lock_wait
        pause = 0.002
        while True:
            status, flat = await self._enter(
                keys=[keys.booking_lock(uid), keys.booking_pending(uid), keys.booking(uid)],
                args=[
                    event_id,
                    repr(received_at),
                    int(self.lease * 1000),
                    repr(time.time() - self.wait),
                    self.ttl,
                ],
            )
            if status == b"ok":
                if self.leases is not None:
                    self.leases.hold(keys.booking_lock(uid), event_id)
                return {k.decode(): v.decode() for k, v in zip(flat[::2], flat[1::2], strict=True)}
            if time.monotonic() >= deadline:
                reason = (
                    "another event of this booking is running"
                    if status == b"busy"
                    else "an earlier event of this booking is pending"
                )
                raise Defer(self.defer, reason)
            await self._sleep(pause)
            pause = min(pause * 2, 0.05)

    async def _leave(self, uid: str, event_id: str) -> None:
        if self.leases is not None:
            self.leases.drop(keys.booking_lock(uid))
        await asyncio.shield(self._release(keys=[keys.booking_lock(uid)], args=[event_id]))

    @asynccontextmanager
    async def turn(
        self, event_id: str, trigger: str, payload: Mapping[str, Any], received_at: float
    ) -> AsyncIterator[Turn]:
        """Hold the booking's turn for the duration (no-op for events about no booking).

        Raises ``Defer`` when the event has to wait longer than ``lock_wait``.
        """
        uid = booking_uid(payload)
        if uid is None:
            yield Turn(None)
            return
        state = await self._acquire(uid, event_id, received_at)
        turn = Turn(uid, None, float(state.get("last", 0)) > received_at)
        try:
            if trigger in CREATION and "ended" in state:
                turn.skip_reason = f"booking {uid} was already {state['ended'].lower()}"
            elif trigger in TERMINAL and "created" not in state:
                waited = time.time() - received_at
                if waited < self.wait:
                    # Waiting for a later event: do not make that event wait for this one.
                    await self.redis.zrem(keys.booking_pending(uid), event_id)
                    reason = f"waiting for the booking's creation, {self.wait:g} s at most"
                    raise Defer(min(1.0, self.wait - waited), reason)
            yield turn
        finally:
            if not turn.released:
                await self._leave(uid, event_id)

    def finish(
        self, pipe: Any, turn: Turn, event_id: str, trigger: str, received_at: float
    ) -> None:
        """The event is done with (processed, dead-lettered or skipped): add to ``pipe`` its
        record in the booking, its unregistering, and the lock's release, in that order."""
        if turn.uid is None:
            return
        if self.leases is not None:
            self.leases.drop(keys.booking_lock(turn.uid))
        fields = {"last_event": event_id}
        if trigger in CREATION:
            fields["created"] = event_id
        if trigger in TERMINAL:
            fields["ended"] = trigger.removeprefix("BOOKING_")
        pipe.eval(
            _FINISH,
            3,
            keys.booking(turn.uid),
            keys.booking_pending(turn.uid),
            keys.booking_lock(turn.uid),
            event_id,
            repr(received_at),
            self.ttl,
            *(item for pair in fields.items() for item in pair),
        )
        turn.released = True
