"""The workers' shared read cache against the sandbox's request log: a cached read is not
repeated, calhooks' own writes and the events that change an entity drop it, and identical
reads in flight at once are made once across workers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from calhooks.service.calcom.errors import CalcomError
from calhooks.service.calcom.tools import get_tool
from calhooks.service.core.embedded_redis import EmbeddedRedis
from calhooks.workers.eventlog import CallLog, EventLog
from calhooks.workers.gates import GateChain
from calhooks.workers.jobs import EventLike
from calhooks.workers.readcache import (
    ReadCache,
    read_entities,
    trigger_entities,
    write_entities,
)
from calhooks.workers.retries import RetryPolicy
from calhooks.workers.rules import StepCall
from tests.sandbox.server import RunningSandbox
from tests.workers.test_jobs import (
    BOB_EMAIL,
    CREATE_OOO,
    LIST_OOO,
    LIST_USERS,
    FakeEvent,
    Harness,
    PyRule,
    PyRules,
    Step,
    booking,
    create_ooo,
    find_user,
)

UPDATE_USER = "cal_organizations_users_controller_update_organization_user"
ASSIGN_OPTION = (
    "cal_organizations_attributes_options_controller_assign_organization_attribute_option_to_user"
)
LIST_MEMBERSHIPS = "cal_organizations_memberships_controller_get_all_memberships"
TEN_MINUTES = 600.0


def cached_find_user(rule: str) -> tuple[str, Step]:
    def build(event: EventLike, _: dict[str, Any]) -> StepCall:
        return StepCall(rule, "user", None, LIST_USERS, {"emails": [BOB_EMAIL]}, cache=TEN_MINUTES)

    return ("user", build)


def update_user(rule: str) -> tuple[str, Step]:
    def build(event: EventLike, outputs: dict[str, Any]) -> StepCall:
        return StepCall(
            rule, "bio", None, UPDATE_USER, {"userId": outputs["user"][0]["id"], "bio": "x"}
        )

    return ("bio", build)


def cached_list_ooo(rule: str) -> tuple[str, Step]:
    def build(event: EventLike, outputs: dict[str, Any]) -> StepCall:
        params = {"userId": outputs["user"][0]["id"]}
        return StepCall(rule, "entries", None, LIST_OOO, params, cache=TEN_MINUTES)

    return ("entries", build)


TIME_OFF = PyRule(
    "time-off", "BOOKING_CREATED", [cached_find_user("time-off"), create_ooo("time-off")]
)


@pytest.fixture
async def harness(sandbox: RunningSandbox, redis_client: aioredis.Redis) -> AsyncIterator[Harness]:
    async with sandbox.client(gate=GateChain(CallLog())) as client:
        rules = PyRules(PyRule("plain", "BOOKING_CREATED", [find_user("plain")]))
        yield Harness(sandbox, redis_client, client, rules, RetryPolicy(3, 10.0, 100.0))


@pytest.fixture
async def cached(harness: Harness) -> Harness:
    harness.rules = PyRules(TIME_OFF)
    return harness


async def run(harness: Harness, *events: FakeEvent) -> None:
    for event in events:
        made = harness.processor()
        made.cache = ReadCache(harness.redis)
        await made.process(event)


async def test_a_cached_read_is_not_repeated(cached: Harness) -> None:
    """Three bookings by one organizer: one lookup, three entries; the log says which hit."""
    await run(cached, booking("bk-1"), booking("bk-2"), booking("bk-3"))
    assert (cached.calls(LIST_USERS), cached.calls(CREATE_OOO)) == (1, 3)
    assert all(cached.ooo_entries(f"booking bk-{n}") == 1 for n in (1, 2, 3))
    records = await EventLog(cached.redis, ttl=600).read(booking("bk-2").id)
    [lookup] = [r for r in records if r["kind"] == "step" and r["tool"] == LIST_USERS]
    assert lookup["cache"] == "hit"


async def test_a_read_without_cache_is_made_every_time(harness: Harness) -> None:
    """The cache is opt-in: the same lookup without ``cache`` goes to Cal.com each time."""
    await run(harness, booking("bk-1"), booking("bk-2"))
    assert harness.calls(LIST_USERS) == 2


async def test_a_write_to_users_drops_the_cached_users_reads(cached: Harness) -> None:
    """calhooks updating a user makes the next lookup of that organization's users go out."""
    writer = PyRule("bio", "BOOKING_RESCHEDULED", [cached_find_user("bio"), update_user("bio")])
    cached.rules = PyRules(TIME_OFF, writer)
    await run(cached, booking("bk-1"), booking("bk-1", "BOOKING_RESCHEDULED"))
    assert (cached.calls(LIST_USERS), cached.calls(UPDATE_USER)) == (1, 1)
    await run(cached, booking("bk-2"))
    assert cached.calls(LIST_USERS) == 2
    await run(cached, booking("bk-3"))
    assert cached.calls(LIST_USERS) == 2


async def test_an_event_naming_the_entity_drops_its_cached_reads(cached: Harness) -> None:
    """An OOO_CREATED delivery (an entry made in Cal.com) drops cached out-of-office reads."""
    lister = PyRule("list", "BOOKING_CREATED", [cached_find_user("list"), cached_list_ooo("list")])
    cached.rules = PyRules(lister)
    await run(cached, booking("bk-1"), booking("bk-2"))
    assert cached.calls(LIST_OOO) == 1
    await run(cached, FakeEvent("ev-ooo", "OOO_CREATED", {"oooEntry": {"id": 1}}))
    await run(cached, booking("bk-3"))
    assert (cached.calls(LIST_OOO), cached.calls(LIST_USERS)) == (2, 1)


@pytest.fixture
async def second_redis(redis_server: EmbeddedRedis) -> AsyncIterator[aioredis.Redis]:
    """Another worker's connection to the same Redis."""
    client = aioredis.Redis.from_url(redis_server.url)
    yield client
    await client.aclose()


async def test_identical_reads_in_flight_are_made_once_across_workers(
    harness: Harness, second_redis: aioredis.Redis
) -> None:
    """Two workers reading the same thing while Cal.com is slow: one call, both answers."""
    harness.sandbox.sandbox.faults.add(tool=LIST_USERS, latency=0.5)
    tool = get_tool(LIST_USERS)
    params = harness.client.with_defaults(tool, {"emails": [BOB_EMAIL]})
    workers = [ReadCache(harness.redis), ReadCache(second_redis)]

    async def read(cache: ReadCache) -> tuple[Any, str]:
        return await cache.read(
            tool, params, TEN_MINUTES, lambda: harness.client.call(tool, **params)
        )

    (first, how_first), (second, how_second) = await asyncio.gather(*(read(c) for c in workers))
    assert harness.calls(LIST_USERS) == 1
    assert first == second
    assert [user["email"] for user in first] == [BOB_EMAIL]
    assert sorted([how_first, how_second]) == ["miss", "shared"]


async def test_a_waiter_leads_when_the_leader_fails(
    harness: Harness, second_redis: aioredis.Redis
) -> None:
    """The leader's error is its own: the waiter then reads Cal.com itself and caches it."""
    harness.client.retries = 0
    harness.sandbox.sandbox.faults.add(tool=LIST_USERS, latency=0.3, status=503, times=1)
    tool = get_tool(LIST_USERS)
    params = harness.client.with_defaults(tool, {"emails": [BOB_EMAIL]})

    async def read(cache: ReadCache) -> tuple[Any, str]:
        return await cache.read(
            tool, params, TEN_MINUTES, lambda: harness.client.call(tool, **params)
        )

    first = asyncio.create_task(read(ReadCache(harness.redis)))
    await asyncio.sleep(0.05)  # usually the first leads; either order ends the same way
    outcomes = await asyncio.gather(first, read(ReadCache(second_redis)), return_exceptions=True)
    errors = [o for o in outcomes if isinstance(o, BaseException)]
    answers = [o for o in outcomes if not isinstance(o, BaseException)]
    assert len(errors) == 1
    assert all(isinstance(e, CalcomError) and e.status == 503 for e in errors)
    assert answers
    assert all(how in ("miss", "shared") for _, how in answers)
    assert harness.calls(LIST_USERS) == 2


def test_entities_come_from_the_registry_paths() -> None:
    """Users and memberships are one entity; an OOO write leaves the users lookups alone."""
    assert read_entities(get_tool(LIST_USERS)) == ("options", "users")
    assert read_entities(get_tool(LIST_MEMBERSHIPS)) == ("users",)
    assert read_entities(get_tool(LIST_OOO)) == ("ooo", "users")
    assert write_entities(get_tool(CREATE_OOO)) == ("ooo",)
    assert write_entities(get_tool(UPDATE_USER)) == ("users",)
    assert write_entities(get_tool(ASSIGN_OPTION)) == ("options", "users")
    assert trigger_entities("OOO_CREATED") == ("ooo",)
    assert trigger_entities("BOOKING_CREATED") == ()
    assert trigger_entities("MEMBERSHIP_DELETED") == ("users",)
    # Reconciliation's events invalidate like Cal.com's triggers and calhooks' own writes.
    assert trigger_entities("calhooks.MEMBERSHIP_ROLE_CHANGED") == ("users",)
    assert trigger_entities("calhooks.USER_UPDATED") == ("users",)
    assert trigger_entities("calhooks.OOO_DELETED") == ("ooo",)
    assert trigger_entities("calhooks.ATTRIBUTE_OPTION_ASSIGNED") == (
        "attributes",
        "options",
        "users",
    )
