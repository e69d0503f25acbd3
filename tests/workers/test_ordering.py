"""Per-booking ordering: one event at a time, arrival order, and cancel-before-create ends right."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis.asyncio as aioredis

from calhooks.workers.ordering import BookingOrder, Turn, booking_uid
from calhooks.workers.redistyped import hget
from calhooks.workers.retries import Defer

BOOKING = {"uid": "bk-1", "title": "Time off"}


async def finish(
    booking: BookingOrder, turn: Turn, event_id: str, trigger: str, received_at: float
) -> None:
    """Record the event in its booking and release the turn, as an attempt's last write does."""
    async with booking.redis.pipeline(transaction=False) as pipe:
        booking.finish(pipe, turn, event_id, trigger, received_at)
        await pipe.execute()


def order(redis: aioredis.Redis, **options: float) -> BookingOrder:
    settings = {"wait": 30.0, "lock_wait": 0.05, "lease": 60.0} | options
    return BookingOrder(redis, **settings)  # type: ignore[arg-type]


async def test_events_of_one_booking_never_run_together(redis_client: aioredis.Redis) -> None:
    """While one event holds its booking's turn, another event of that booking defers."""
    first, second = order(redis_client), order(redis_client)
    now = time.time()
    async with first.turn("e1", "BOOKING_CREATED", BOOKING, now) as turn:
        with pytest.raises(Defer, match="another event of this booking is running"):
            async with second.turn("e2", "BOOKING_RESCHEDULED", BOOKING, now + 1):
                pass
        await finish(first, turn, "e1", "BOOKING_CREATED", now)
    async with second.turn("e2", "BOOKING_RESCHEDULED", BOOKING, now + 1) as turn:
        assert turn.uid == "bk-1"
        assert turn.skip_reason is None


async def test_a_later_event_waits_for_an_earlier_one_still_pending(
    redis_client: aioredis.Redis,
) -> None:
    """An event that arrived earlier and is still being retried goes first."""
    booking = order(redis_client)
    now = time.time()
    with pytest.raises(Defer):  # e1 registers, then fails and waits for its retry
        async with booking.turn("e1", "BOOKING_CREATED", BOOKING, now):
            raise Defer(60, "Cal.com answered 503")
    with pytest.raises(Defer, match="an earlier event of this booking is pending"):
        async with booking.turn("e2", "BOOKING_NO_SHOW_UPDATED", BOOKING, now + 1):
            pass


async def test_a_long_pending_event_stops_blocking_after_the_wait(
    redis_client: aioredis.Redis,
) -> None:
    """An earlier event pending for longer than the ordering wait no longer holds the booking."""
    booking = order(redis_client, wait=5.0)
    old = time.time() - 10
    with pytest.raises(Defer):
        async with booking.turn("e1", "BOOKING_CREATED", BOOKING, old):
            raise Defer(1, "failing for hours")
    async with booking.turn("e2", "BOOKING_NO_SHOW_UPDATED", BOOKING, old + 1) as turn:
        assert turn.skip_reason is None


async def test_a_cancellation_waits_for_its_creation(redis_client: aioredis.Redis) -> None:
    """A BOOKING_CANCELLED that overtook its BOOKING_CREATED defers until the create is done."""
    booking = order(redis_client)
    created_at = time.time()
    cancelled_at = created_at - 0.5  # the cancel reached the intake first
    with pytest.raises(Defer, match="waiting for the booking's creation"):
        async with booking.turn("cancel", "BOOKING_CANCELLED", BOOKING, cancelled_at):
            pass
    async with booking.turn("create", "BOOKING_CREATED", BOOKING, created_at) as turn:
        # The cancel is registered earlier, but it is waiting for this very create.
        await finish(booking, turn, "create", "BOOKING_CREATED", created_at)
    async with booking.turn("cancel", "BOOKING_CANCELLED", BOOKING, cancelled_at) as turn:
        assert turn.skip_reason is None
        assert turn.late
        await finish(booking, turn, "cancel", "BOOKING_CANCELLED", cancelled_at)


async def test_a_creation_after_its_cancellation_is_skipped(redis_client: aioredis.Redis) -> None:
    """Once a cancellation was processed, a late BOOKING_CREATED of that booking is skipped."""
    booking = order(redis_client, wait=0.0)
    now = time.time()
    async with booking.turn("cancel", "BOOKING_CANCELLED", BOOKING, now) as turn:
        await finish(booking, turn, "cancel", "BOOKING_CANCELLED", now)
    async with booking.turn("create", "BOOKING_CREATED", BOOKING, now + 1) as turn:
        assert turn.skip_reason == "booking bk-1 was already cancelled"


async def test_a_crashed_event_takes_its_own_lock_back(redis_client: aioredis.Redis) -> None:
    """The lock is re-entrant for the event that held it when its worker died."""
    booking = order(redis_client)
    now = time.time()
    await redis_client.set("calhooks:booking:bk-1:lock", "e1", px=60_000)
    async with booking.turn("e1", "BOOKING_CREATED", BOOKING, now) as turn:
        assert turn.uid == "bk-1"
    assert await redis_client.get("calhooks:booking:bk-1:lock") is None


async def test_events_about_no_booking_are_not_ordered(redis_client: aioredis.Redis) -> None:
    """FORM_SUBMITTED and the like run at once and touch nothing in Redis."""
    booking = order(redis_client)
    async with booking.turn("f1", "FORM_SUBMITTED", {"formId": "x"}, time.time()) as turn:
        assert turn.uid is None
    assert await redis_client.dbsize() == 0


async def test_concurrent_events_of_one_booking_run_in_arrival_order(
    redis_client: aioredis.Redis,
) -> None:
    """Five events of one booking started together all run, one at a time, oldest first."""
    booking = order(redis_client, lock_wait=5.0)
    base = time.time()
    ran: list[str] = []
    running = 0

    async def process(event_id: str, received_at: float) -> None:
        nonlocal running
        async with booking.turn(event_id, "BOOKING_NO_SHOW_UPDATED", BOOKING, received_at) as t:
            running += 1
            assert running == 1
            ran.append(event_id)
            await asyncio.sleep(0.01)
            running -= 1
            await finish(booking, t, event_id, "BOOKING_NO_SHOW_UPDATED", received_at)

    ids = [f"e{i}" for i in range(5)]
    # Register all first (as workers picking them up would), then race them in reverse.
    for i, event_id in enumerate(ids):
        await redis_client.zadd("calhooks:booking:bk-1:pending", {event_id: base + i})
    await asyncio.gather(*(process(e, base + i) for i, e in reversed(list(enumerate(ids)))))
    assert ran == ids


def test_the_booking_is_read_from_uid_or_booking_uid() -> None:
    """Booking events carry ``uid``; no-show updates carry ``bookingUid``."""
    assert booking_uid({"uid": "a"}) == "a"
    assert booking_uid({"bookingUid": "b", "attendees": []}) == "b"
    assert booking_uid({"oooEntry": {"uuid": "c"}}) is None


def moved(uid: str, replaced: str) -> dict[str, str]:
    """A reschedule's payload: the new uid and the one it replaced."""
    return {"uid": uid, "rescheduleUid": replaced}


async def test_a_reschedule_joins_the_chain_of_the_booking_it_replaced(
    redis_client: aioredis.Redis,
) -> None:
    """A, then B rescheduled from A, then C from B: all three share A's lock and queue."""
    booking = order(redis_client)
    now = time.time()
    async with booking.turn("a", "BOOKING_CREATED", {"uid": "A"}, now) as turn:
        assert (turn.chain, turn.replaces) == ("A", None)
        await finish(booking, turn, "a", "BOOKING_CREATED", now)
    async with booking.turn("b", "BOOKING_RESCHEDULED", moved("B", "A"), now + 1) as turn:
        assert turn.describe() == {"uid": "B", "chain": "A", "replaces": "A"}
        # While B's reschedule runs, an event of A and one of a later uid of the chain wait.
        with pytest.raises(Defer, match="another event of this booking is running"):
            async with booking.turn("c", "BOOKING_RESCHEDULED", moved("C", "B"), now + 2):
                pass
        await finish(booking, turn, "b", "BOOKING_RESCHEDULED", now + 1)
    async with booking.turn("c", "BOOKING_RESCHEDULED", moved("C", "B"), now + 2) as turn:
        assert (turn.uid, turn.chain, turn.replaces) == ("C", "A", "B")
        await finish(booking, turn, "c", "BOOKING_RESCHEDULED", now + 2)
    async with booking.turn("x", "BOOKING_CANCELLED", {"uid": "C"}, now + 3) as turn:
        assert turn.describe() == {"uid": "C", "chain": "A"}
        assert turn.skip_reason is None


async def test_a_cancellation_of_the_new_uid_waits_for_the_reschedule(
    redis_client: aioredis.Redis,
) -> None:
    """The new uid's cancellation overtook the reschedule that made it: it waits, then runs
    in the chain after it."""
    booking = order(redis_client)
    now = time.time()
    async with booking.turn("a", "BOOKING_CREATED", {"uid": "A"}, now) as turn:
        await finish(booking, turn, "a", "BOOKING_CREATED", now)
    with pytest.raises(Defer, match="waiting for the booking's creation"):
        async with booking.turn("cancel", "BOOKING_CANCELLED", {"uid": "B"}, now + 1):
            pass
    async with booking.turn("move", "BOOKING_RESCHEDULED", moved("B", "A"), now + 2) as turn:
        await finish(booking, turn, "move", "BOOKING_RESCHEDULED", now + 2)
    async with booking.turn("cancel", "BOOKING_CANCELLED", {"uid": "B"}, now + 1) as turn:
        assert (turn.chain, turn.skip_reason, turn.late) == ("A", None, True)


async def test_a_reschedule_waits_for_the_creation_it_replaces(
    redis_client: aioredis.Redis,
) -> None:
    """The reschedule reached the intake before the original's creation: it waits for it."""
    booking = order(redis_client)
    now = time.time()
    with pytest.raises(Defer, match=r"creation of the booking it replaces \(A\)"):
        async with booking.turn("move", "BOOKING_RESCHEDULED", moved("B", "A"), now):
            pass
    async with booking.turn("a", "BOOKING_CREATED", {"uid": "A"}, now + 1) as turn:
        assert turn.skip_reason is None
        await finish(booking, turn, "a", "BOOKING_CREATED", now + 1)
    async with booking.turn("move", "BOOKING_RESCHEDULED", moved("B", "A"), now) as turn:
        assert turn.skip_reason is None


async def test_a_late_event_of_the_original_after_the_reschedule_is_skipped(
    redis_client: aioredis.Redis,
) -> None:
    """Past the wait, the reschedule ran first; the original's creation (or cancellation)
    arriving after it is recognised as replaced and skipped."""
    booking = order(redis_client, wait=0.0)
    now = time.time()
    async with booking.turn("move", "BOOKING_REQUESTED", moved("B", "A"), now) as turn:
        assert turn.skip_reason is None  # a reschedule sent as a request (calcom 21169)
        await finish(booking, turn, "move", "BOOKING_REQUESTED", now)
    for event_id, trigger in (("a", "BOOKING_CREATED"), ("a-off", "BOOKING_CANCELLED")):
        async with booking.turn(event_id, trigger, {"uid": "A"}, now + 1) as turn:
            assert turn.skip_reason == "booking A was already rescheduled to B"
            assert turn.chain == "A"
            await finish(booking, turn, event_id, trigger, now + 1)
    async with booking.turn("b", "BOOKING_CREATED", {"uid": "B"}, now + 2) as turn:
        assert turn.skip_reason is None  # the new uid's acceptance still runs


async def test_a_request_without_reschedule_fields_starts_its_own_chain(
    redis_client: aioredis.Redis,
) -> None:
    booking = order(redis_client)
    async with booking.turn("r", "BOOKING_REQUESTED", {"uid": "R"}, time.time()) as turn:
        assert turn.describe() == {"uid": "R", "chain": "R"}


async def test_a_skipped_reschedule_does_not_end_the_original(
    redis_client: aioredis.Redis,
) -> None:
    """A reschedule skipped because its own uid was already cancelled leaves the original."""
    booking = order(redis_client, wait=0.0)
    now = time.time()
    async with booking.turn("cancel", "BOOKING_CANCELLED", {"uid": "B"}, now) as turn:
        await finish(booking, turn, "cancel", "BOOKING_CANCELLED", now)
    async with booking.turn("move", "BOOKING_RESCHEDULED", moved("B", "A"), now + 1) as turn:
        assert turn.skip_reason == "booking B was already cancelled"
        await finish(booking, turn, "move", "BOOKING_RESCHEDULED", now + 1)
    assert await hget(redis_client, "calhooks:booking:A", "ended") is None


async def test_a_reschedule_overtaken_by_the_next_one_still_ends_the_original(
    redis_client: aioredis.Redis,
) -> None:
    """A -> B -> C where C's reschedule ran first (past the wait): B's late reschedule is
    skipped, and A is recorded as rescheduled, so A's late creation is skipped too."""
    booking = order(redis_client, wait=0.0)
    now = time.time()
    async with booking.turn("c", "BOOKING_RESCHEDULED", moved("C", "B"), now) as turn:
        await finish(booking, turn, "c", "BOOKING_RESCHEDULED", now)
    async with booking.turn("b", "BOOKING_RESCHEDULED", moved("B", "A"), now + 1) as turn:
        assert turn.skip_reason == "booking B was already rescheduled to C"
        await finish(booking, turn, "b", "BOOKING_RESCHEDULED", now + 1)
    async with booking.turn("a", "BOOKING_CREATED", {"uid": "A"}, now + 2) as turn:
        assert turn.skip_reason == "booking A was already rescheduled to B"
