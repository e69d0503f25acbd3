"""Events about one booking - and the bookings rescheduled from it - are processed one at a
time, in the order they arrived.

Cal.com sends each trigger as its own request, without retries by default, and nothing
stops a BOOKING_CANCELLED from reaching the intake before (or being picked up alongside) the
BOOKING_CREATED of the same booking. A reschedule makes a **new** booking (new uid) whose
payload names the one it replaced (``rescheduleUid``); the replaced booking ends cancelled
without a BOOKING_CANCELLED of its own. The intake queues events as they arrive; the workers
then keep these rules per **chain** - a booking (``payload.uid``, or ``bookingUid`` for
no-show updates) together with every booking rescheduled from it, directly or not:

0. **Chains** - an event carrying ``rescheduleUid`` (BOOKING_RESCHEDULED, or a
   BOOKING_REQUESTED sent for a reschedule: Cal.com issue 21169) links its uid to the
   replaced one (``replaces`` in ``calhooks:booking:<uid>``) when it first enters; an event's
   chain is found by following those links to the first booking (the chain's *root*). The
   lock and the arrival queue below are the root's, so "cancel the new uid" and "the
   original's late creation" queue behind the reschedule like events of one booking.
1. **One at a time** - a lock per chain (``calhooks:booking:<root>:lock``, re-entrant for the
   same event after a crash) so two events of one chain never run concurrently, whichever
   workers picked them. Under ``calhooks worker`` the lock is a lease
   (``calhooks.workers.leases``): it lives ``CALHOOKS_WORKER_LEASE`` seconds and the holder's
   lease keeper renews it, so a dead holder's lock lapses within one lease; without a lease
   keeper (arq's own CLI) it lives the job timeout.
2. **Arrival order** - each event registers in its chain's sorted set scored by the time the
   intake received it; an event yields while an earlier-received event of the chain is still
   registered (being processed or retried), for at most ``CALHOOKS_WORKER_ORDERING_WAIT``
   seconds after it arrived - a failing event cannot hold its chain's later events forever.
3. **End state** - a cancellation or rejection waits (the same bounded time) until its
   booking's creation (BOOKING_CREATED, _REQUESTED or _RESCHEDULED, which creates the new
   uid) has been processed, so "create the OOO entry" runs before "delete it"; likewise a
   reschedule waits for the creation of the booking it replaces, so "move the entry" finds
   the entry. Once a booking's cancellation, rejection or reschedule has been processed, a
   creation or cancellation of that uid arriving (or retried) later is skipped: the booking
   no longer exists (or lives on under its new uid), so reacting would leave the wrong state.

Waiting happens in-process for up to ``lock_wait`` seconds (a few ms normally), then the job
is deferred (``Defer``: re-queued without counting an attempt) so it gives its slot back.
``Turn`` tells the caller which booking an event is about, the chain's root and the uid it
replaced; the processor writes that into the event's delivery log (``events show``).

Chains are per organization: the bookings of a connection's events (``Event.connection``)
live under ``calhooks:conn:<pcid>:booking:<uid>`` (``keys.booking_prefix``), so two
organizations' bookings with the same uid never share a chain, a lock or a record.

Limits: two events of one chain picked up within the same millisecond may register in
either order; rule 3 still makes create/cancel and create/reschedule pairs end right. A
chain is only known from links the workers have seen: when the delivery of a reschedule was
lost, the next reschedule starts a new chain (reconciliation recovers the lost event). The
enter script reaches keys it computes from the links, so it needs a single Redis (not a
cluster), as the rest of calhooks does.
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
#: Longest chain of reschedules followed to its root.
MAX_CHAIN = 64

# ARGV event id, received_at, lease ms, ignore-before, ttl s, uid, replaced uid or '',
# booking key prefix, max chain. Links uid to the uid it replaced, finds the chain's root,
# registers the event in the root's queue (leaving the queues of the chain's other uids,
# where it may have registered before the chain was known) and takes the root's lock.
# Returns {'ok'|'busy'|'earlier', root, flat booking hash, flat replaced booking hash}.
_ENTER = """
local prefix, uid, replaced = ARGV[8], ARGV[6], ARGV[7]
local ttl = tonumber(ARGV[5])
if replaced ~= '' and replaced ~= uid then
  redis.call('HSETNX', prefix .. uid, 'replaces', replaced)
  redis.call('EXPIRE', prefix .. uid, ttl)
end
local root = uid
for _ = 1, tonumber(ARGV[9]) do
  local parent = redis.call('HGET', prefix .. root, 'replaces')
  if not parent or parent == uid then break end
  redis.call('ZREM', prefix .. root .. ':pending', ARGV[1])
  root = parent
end
local lock, pending = prefix .. root .. ':lock', prefix .. root .. ':pending'
redis.call('ZADD', pending, 'NX', ARGV[2], ARGV[1])
redis.call('EXPIRE', pending, ttl)
local holder = redis.call('GET', lock)
if holder and holder ~= ARGV[1] then return {'busy', root, {}, {}} end
local mine = tonumber(ARGV[2])
local earlier = redis.call('ZRANGEBYSCORE', pending, ARGV[4], ARGV[2], 'WITHSCORES')
for i = 1, #earlier, 2 do
  local member, score = earlier[i], tonumber(earlier[i + 1])
  if member ~= ARGV[1] and (score < mine or member < ARGV[1]) then
    return {'earlier', root, {}, {}}
  end
end
redis.call('SET', lock, ARGV[1], 'PX', tonumber(ARGV[3]))
local before = {}
if replaced ~= '' then before = redis.call('HGETALL', prefix .. replaced) end
local state = redis.call('HGETALL', prefix .. uid)
if root ~= uid then
  local last = redis.call('HGET', prefix .. root, 'last')
  if last then table.insert(state, 'chain_last'); table.insert(state, last) end
end
return {'ok', root, state, before}
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# KEYS booking, pending, lock, root booking, replaced booking (or the booking again).
# ARGV event id, received_at, ttl s, replaced uid or '', then field, value, ...
# Records the event in the booking (and a reschedule in the booking it replaced), the
# chain's latest arrival in the root, unregisters the event, then releases the lock.
_FINISH = """
redis.call('HSET', KEYS[1], unpack(ARGV, 5))
for _, key in ipairs({KEYS[1], KEYS[4]}) do
  local seen = tonumber(redis.call('HGET', key, 'last')) or 0
  if tonumber(ARGV[2]) > seen then redis.call('HSET', key, 'last', ARGV[2]) end
  redis.call('EXPIRE', key, tonumber(ARGV[3]))
end
if ARGV[4] ~= '' then
  redis.call('HSET', KEYS[5], 'ended', 'RESCHEDULED', 'rescheduled_to', ARGV[4])
  redis.call('EXPIRE', KEYS[5], tonumber(ARGV[3]))
end
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


def replaced_uid(trigger: str, payload: Mapping[str, Any]) -> str | None:
    """The booking a creation event replaced (``rescheduleUid``), if it is a reschedule.

    BOOKING_RESCHEDULED carries it, and so does a BOOKING_REQUESTED sent for a reschedule
    (a confirmation-required event type, or Cal.com issue 21169).
    """
    if trigger not in CREATION:
        return None
    value = payload.get("rescheduleUid")
    return value if isinstance(value, str) and value else None


def _decode(flat: list[bytes]) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in zip(flat[::2], flat[1::2], strict=True)}


@dataclass(slots=True)
class Turn:
    """An event's turn with its booking: skip it, or run it (``late`` if it lost the race)."""

    uid: str | None
    skip_reason: str | None = None
    late: bool = False
    #: The lock's release is taken care of (``finish``, in the attempt's last write).
    released: bool = False
    #: The first booking of the event's chain (``uid`` itself unless it was rescheduled).
    chain: str | None = None
    #: The booking this event's booking replaced (a reschedule's ``rescheduleUid``).
    replaces: str | None = None
    #: Skipped because its booking was itself rescheduled since: the booking it replaced
    #: is gone all the same, and is recorded so.
    superseded: bool = False
    #: The connection (PCID) whose booking it is (``None``: the environment organization's).
    connection: str | None = None

    def describe(self) -> dict[str, str]:
        """The booking and chain, for the event's delivery log."""
        found = {"uid": self.uid, "chain": self.chain, "replaces": self.replaces}
        return {k: v for k, v in found.items() if v is not None}


@dataclass(frozen=True, slots=True)
class _Entered:
    root: str
    state: dict[str, str]
    replaced: dict[str, str]


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

    async def _acquire(
        self,
        uid: str,
        replaces: str | None,
        event_id: str,
        received_at: float,
        connection: str | None = None,
    ) -> _Entered:
        deadline = time.monotonic() + self.lock_wait
        pause = 0.002
        while True:
            status, root, flat, before = await self._enter(
                keys=[],
                args=[
                    event_id,
                    repr(received_at),
                    int(self.lease * 1000),
                    repr(time.time() - self.wait),
                    self.ttl,
                    uid,
                    replaces or "",
                    keys.booking_prefix(connection),
                    MAX_CHAIN,
                ],
            )
            if status == b"ok":
                entered = _Entered(root.decode(), _decode(flat), _decode(before))
                if self.leases is not None:
                    self.leases.hold(keys.booking_lock(entered.root, connection), event_id)
                return entered
            if time.monotonic() >= deadline:
                reason = (
                    "another event of this booking is running"
                    if status == b"busy"
                    else "an earlier event of this booking is pending"
                )
                raise Defer(self.defer, reason)
            await self._sleep(pause)
            pause = min(pause * 2, 0.05)

    async def _leave(self, root: str, event_id: str, connection: str | None) -> None:
        lock = keys.booking_lock(root, connection)
        if self.leases is not None:
            self.leases.drop(lock)
        await asyncio.shield(self._release(keys=[lock], args=[event_id]))

    async def _stand_aside(self, turn: Turn, event_id: str, received_at: float, why: str) -> None:
        """Wait (bounded) for another event: leave the queue so it does not wait for this one."""
        waited = time.time() - received_at
        if waited < self.wait:
            assert turn.chain is not None
            await self.redis.zrem(keys.booking_pending(turn.chain, turn.connection), event_id)
            raise Defer(min(1.0, self.wait - waited), f"{why}, {self.wait:g} s at most")

    @asynccontextmanager
    async def turn(
        self,
        event_id: str,
        trigger: str,
        payload: Mapping[str, Any],
        received_at: float,
        connection: str | None = None,
    ) -> AsyncIterator[Turn]:
        """Hold the booking's chain's turn for the duration (no-op for events about no
        booking); ``connection``: the PCID of the organization the booking is in (``None``:
        the environment's). Raises ``Defer`` when the event has to wait longer than
        ``lock_wait``."""
        uid = booking_uid(payload)
        if uid is None:
            yield Turn(None)
            return
        replaces = replaced_uid(trigger, payload)
        entered = await self._acquire(uid, replaces, event_id, received_at, connection)
        state = entered.state
        last = max(float(state.get("last", 0)), float(state.get("chain_last", 0)))
        turn = Turn(
            uid,
            None,
            last > received_at,
            chain=entered.root,
            replaces=replaces,
            connection=connection,
        )
        try:
            ended = state.get("ended")
            if ended is not None and (trigger in CREATION or trigger in TERMINAL):
                if ended == "RESCHEDULED":
                    turn.skip_reason = (
                        f"booking {uid} was already rescheduled to {state.get('rescheduled_to')}"
                    )
                    turn.superseded = True
                elif trigger in CREATION:
                    turn.skip_reason = f"booking {uid} was already {ended.lower()}"
            elif trigger in TERMINAL and "created" not in state:
                await self._stand_aside(
                    turn, event_id, received_at, "waiting for the booking's creation"
                )
            elif replaces is not None and not (
                "created" in entered.replaced or "ended" in entered.replaced
            ):
                await self._stand_aside(
                    turn,
                    event_id,
                    received_at,
                    f"waiting for the creation of the booking it replaces ({replaces})",
                )
            yield turn
        finally:
            if not turn.released:
                await self._leave(entered.root, event_id, connection)

    def finish(
        self, pipe: Any, turn: Turn, event_id: str, trigger: str, received_at: float
    ) -> None:
        """The event is done with (processed, dead-lettered or skipped): add to ``pipe`` its
        record in the booking (and a reschedule's in the booking it replaced), its
        unregistering, and the lock's release, in that order."""
        if turn.uid is None:
            return
        root = turn.chain or turn.uid
        scope = turn.connection
        if self.leases is not None:
            self.leases.drop(keys.booking_lock(root, scope))
        fields = {"last_event": event_id}
        if trigger in CREATION:
            fields["created"] = event_id
        if trigger in TERMINAL:
            fields["ended"] = trigger.removeprefix("BOOKING_")
        moved = turn.replaces is not None and (turn.skip_reason is None or turn.superseded)
        pipe.eval(
            _FINISH,
            5,
            keys.booking(turn.uid, scope),
            keys.booking_pending(root, scope),
            keys.booking_lock(root, scope),
            keys.booking(root, scope),
            keys.booking(turn.replaces, scope)
            if moved and turn.replaces
            else keys.booking(turn.uid, scope),
            event_id,
            repr(received_at),
            self.ttl,
            turn.uid if moved else "",
            *(item for pair in fields.items() for item in pair),
        )
        turn.released = True
