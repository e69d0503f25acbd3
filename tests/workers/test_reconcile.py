"""Reconciliation against the sandbox over real HTTP and the suite's real Redis: changes made
behind calhooks' back become ``calhooks.*`` events, missed bookings come back as Cal.com's
triggers, the first pass is a baseline, a second pass (or a restart) re-emits nothing, the
call budget spreads a listing over passes."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
import redis.asyncio as aioredis

from calhooks.service.events import DEDUPE_PREFIX, Event, reapply_key
from calhooks.service.sandbox.seed import DEPARTMENT_ATTRIBUTE_ID, option_id
from calhooks.workers import keys
from calhooks.workers.metrics import render
from calhooks.workers.reconcile import periodic, triggers
from calhooks.workers.reconcile.reconciler import Reconciler, RunReport
from tests.sandbox.server import RunningSandbox

QUEUE = "arq:queue"
ALICE = 101
BOB = 102
MEMBERSHIPS = "cal_organizations_memberships_controller_get_all_memberships"


def reconciler(sandbox: RunningSandbox, redis: aioredis.Redis, **options: Any) -> Reconciler:
    return Reconciler(
        redis,
        sandbox.client(),
        org_id=1,
        queue_name=QUEUE,
        dedupe_window=3600,
        **options,
    )


async def queued(redis: aioredis.Redis) -> list[Event]:
    """The events on the queue, oldest first."""
    events = []
    for job_id in await redis.zrange(QUEUE, 0, -1):
        raw = await redis.get(f"arq:job:{job_id.decode()}")
        assert raw is not None
        events.append(Event.from_dict(json.loads(raw)["a"][0]))
    return events


async def booking(sandbox: RunningSandbox, path: str, **body: Any) -> dict[str, Any]:
    response = await sandbox.admin("POST", path, json={"wait": True, "orgId": 1, **body})
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


async def test_first_pass_is_a_baseline_and_a_second_emits_nothing(
    sandbox: RunningSandbox, redis_client: aioredis.Redis
) -> None:
    first = await reconciler(sandbox, redis_client).run()
    assert first.baselined == [
        "memberships",
        "assignments",
        "users",
        "ooo",
        "webhooks",
        "attributes",
        "bookings",
    ]
    assert first.events == []
    assert await queued(redis_client) == []
    assert first.seen["users"] > 0
    second = await reconciler(sandbox, redis_client).run()  # a restart: a new reconciler
    assert second.baselined == []
    assert second.events == []
    assert await queued(redis_client) == []


async def test_changes_behind_calhooks_back_become_events(
    sandbox: RunningSandbox, redis_client: aioredis.Redis
) -> None:
    await reconciler(sandbox, redis_client).run()
    async with sandbox.client() as client:
        members = await client.call(MEMBERSHIPS, take=250)
        member = next(m for m in members if m["userId"] == BOB)
        new_role = "ADMIN"
        await client.call(
            "cal_organizations_memberships_controller_update_membership",
            membershipId=member["id"],
            role=new_role,
        )
        user = await client.call(
            "cal_organizations_users_controller_create_organization_user",
            email="newcomer@acme.example",
        )
        ooo = await client.call(
            "cal_organizations_users_ooocontroller_create_organization_user_ooo",
            userId=ALICE,
            start="2031-01-05T00:00:00.000Z",
            end="2031-01-06T23:59:59.999Z",
        )
    report = await reconciler(sandbox, redis_client).run()
    events = await queued(redis_client)
    assert len(events) == report.queued == len(report.events)
    by_trigger = {event.trigger: event for event in events}
    role = by_trigger[triggers.MEMBERSHIP_ROLE_CHANGED].payload
    assert role["before"]["role"] == member["role"]
    assert role["after"]["role"] == new_role
    assert role["source"] == "reconcile"
    assert role["observedAt"]
    created = by_trigger[triggers.USER_CREATED].payload
    assert created["before"] is None
    assert created["after"]["id"] == user["id"]
    assert by_trigger[triggers.OOO_CREATED].payload["after"]["id"] == ooo["id"]
    assert triggers.MEMBERSHIP_CREATED in by_trigger  # the new user's membership
    # Every event is on the queue exactly as the intake queues one (dedupe key included).
    for event in events:
        assert await redis_client.exists(DEDUPE_PREFIX + event.id)
    again = await reconciler(sandbox, redis_client).run()
    assert again.events == []

    async with sandbox.client() as client:
        await client.call(
            "cal_organizations_users_controller_delete_organization_user", userId=user["id"]
        )
    report = await reconciler(sandbox, redis_client).run()
    triggered = {event.trigger for event in report.events}
    assert triggers.USER_DELETED in triggered
    deleted = next(e for e in report.events if e.trigger == triggers.USER_DELETED)
    assert deleted.payload["after"] is None
    assert deleted.payload["before"]["id"] == user["id"]


async def test_a_crashed_pass_emitting_again_queues_nothing_twice(
    sandbox: RunningSandbox, redis_client: aioredis.Redis
) -> None:
    await reconciler(sandbox, redis_client).run()
    async with sandbox.client() as client:
        await client.call(
            "cal_organizations_users_controller_create_organization_user",
            email="twice@acme.example",
        )
    dry = await reconciler(sandbox, redis_client).run(dry_run=True)
    assert dry.events
    assert await queued(redis_client) == []
    report = await reconciler(sandbox, redis_client).run()
    assert {e.id for e in report.events} == {e.id for e in dry.events}
    emitter = reconciler(sandbox, redis_client).emitter
    assert [await emitter.emit(event) for event in report.events] == [False] * len(report.events)
    assert len(await queued(redis_client)) == len(report.events)


async def test_missed_booking_changes_come_back_as_calcom_triggers(
    sandbox: RunningSandbox, redis_client: aioredis.Redis
) -> None:
    await reconciler(sandbox, redis_client).run()
    made = await booking(sandbox, "/bookings", change="create", user="alice", eventType="time-off")
    uid = made["booking"]["uid"]
    report = await reconciler(sandbox, redis_client).run()
    [event] = report.events
    assert event.trigger == "BOOKING_CREATED"
    payload = event.payload
    assert payload["uid"] == uid
    assert payload["type"] == "time-off"
    assert payload["status"] == "ACCEPTED"
    assert payload["source"] == "reconcile"
    assert payload["organizer"]["email"] == made["body"]["payload"]["organizer"]["email"]
    assert payload["startTime"] == made["body"]["payload"]["startTime"]
    assert payload["endTime"] == made["body"]["payload"]["endTime"]
    assert payload["attendees"][0]["email"] == made["body"]["payload"]["attendees"][0]["email"]

    moved = await booking(sandbox, f"/bookings/{uid}/reschedule")
    report = await reconciler(sandbox, redis_client).run()
    [event] = report.events
    assert event.trigger == "BOOKING_RESCHEDULED"
    assert event.payload["uid"] == moved["booking"]["uid"]
    assert event.payload["rescheduleUid"] == uid

    await booking(sandbox, f"/bookings/{moved['booking']['uid']}/cancel", reason="plans changed")
    report = await reconciler(sandbox, redis_client).run()
    assert [(e.trigger, e.payload["uid"]) for e in report.events] == [
        ("BOOKING_CANCELLED", moved["booking"]["uid"])
    ]


async def test_a_booking_the_workers_processed_is_not_recovered(
    sandbox: RunningSandbox, redis_client: aioredis.Redis
) -> None:
    await reconciler(sandbox, redis_client).run()
    made = await booking(sandbox, "/bookings", change="create", user="alice", eventType="time-off")
    record = keys.booking(made["booking"]["uid"])  # as the workers write it (ordering.py)
    await redis_client.hset(record, mapping={"created": "e1", "last_event": "e1"})  # type: ignore[misc]
    assert (await reconciler(sandbox, redis_client).run()).events == []
    await booking(sandbox, f"/bookings/{made['booking']['uid']}/cancel")
    await redis_client.hset(record, "ended", "CANCELLED")  # type: ignore[misc]
    assert (await reconciler(sandbox, redis_client).run()).events == []


async def test_a_booking_made_and_cancelled_between_passes_emits_nothing(
    sandbox: RunningSandbox, redis_client: aioredis.Redis
) -> None:
    await reconciler(sandbox, redis_client).run()
    made = await booking(sandbox, "/bookings", change="create", user="alice", eventType="time-off")
    await booking(sandbox, f"/bookings/{made['booking']['uid']}/cancel")
    assert (await reconciler(sandbox, redis_client).run()).events == []


async def test_the_budget_spreads_a_listing_over_passes(
    sandbox: RunningSandbox, redis_client: aioredis.Redis
) -> None:
    async with sandbox.client() as client:
        for n in range(3):
            await client.call(
                "cal_organizations_users_controller_create_organization_user",
                email=f"bulk{n}@acme.example",
            )
    passes = []
    while True:
        sent = len(sandbox.requests())
        report = await reconciler(sandbox, redis_client, budget=2).run()
        assert report.calls <= 2
        assert len(sandbox.requests()) - sent == report.calls  # the sandbox's request log
        passes.append(report)
        if "bookings" in report.complete:
            break
        assert len(passes) < 10
    assert len(passes) >= 2
    assert passes[0].pending is not None
    assert sum(len(p.baselined) for p in passes) == 7
    # Once baselined, a change found over several passes is emitted once.
    async with sandbox.client() as client:
        await client.call(
            "cal_organizations_users_controller_create_organization_user",
            email="later@acme.example",
        )
    emitted = []
    for _ in range(6):
        emitted += (await reconciler(sandbox, redis_client, budget=2).run()).events
    assert [e.trigger for e in emitted].count(triggers.USER_CREATED) == 1


class Recording(Reconciler):
    """A reconciler noting when each of its passes starts and ends, in one shared list."""

    def __init__(self, log: list[tuple[str, int]], *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.log = log

    async def run(self, *, dry_run: bool = False, holder: str | None = None) -> RunReport:
        self.log.append(("start", id(self)))
        try:
            return await super().run(dry_run=dry_run, holder=holder)
        finally:
            self.log.append(("end", id(self)))


async def test_two_passes_never_run_at_once(
    sandbox: RunningSandbox, redis_client: aioredis.Redis
) -> None:
    outcomes = await asyncio.gather(
        periodic.run_locked(reconciler(sandbox, redis_client)),
        periodic.run_locked(reconciler(sandbox, redis_client)),
        return_exceptions=True,
    )
    assert sorted(type(o).__name__ for o in outcomes) == ["Busy", "RunReport"]
    # The lock is released after the pass: the next one runs.
    await periodic.run_locked(reconciler(sandbox, redis_client))


async def test_workers_take_turns_one_pass_per_period(
    sandbox: RunningSandbox, redis_client: aioredis.Redis
) -> None:
    log: list[tuple[str, int]] = []

    async def find() -> list[periodic.Target]:
        return [periodic.Target(1, None, 1)]

    def make(target: periodic.Target, calls: int | None) -> Reconciler:
        return Recording(
            log, redis_client, sandbox.client(), org_id=1, queue_name=QUEUE, dedupe_window=60
        )

    workers = [
        asyncio.create_task(
            periodic.every_period(
                redis_client, find, make, period=0.2, per_key=None, check_every=0.01
            )
        )
        for _ in range(3)
    ]
    try:
        deadline = time.monotonic() + 60
        while sum(1 for kind, _ in log if kind == "end") < 5:
            assert time.monotonic() < deadline, "timed out waiting for 5 passes"
            await asyncio.sleep(0.02)
    finally:
        for worker in workers:
            worker.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
    # Passes strictly alternate start, end, start, end...: never two at once.
    kinds = [kind for kind, _ in log]
    assert kinds[: len(kinds) // 2 * 2] == ["start", "end"] * (len(kinds) // 2)
    assert int(await redis_client.hget("calhooks:reconcile:1:state", "passes") or 0) >= 5  # type: ignore[misc]
    scraped = render().decode()
    assert 'calhooks_reconcile_passes_total{outcome="done"}' in scraped
    assert 'calhooks_reconcile_entities{kind="users"} 3.0' in scraped
    assert "calhooks_reconcile_calls_total" in scraped


def test_the_budget_is_a_share_of_the_rate_limit() -> None:
    assert periodic.budget(120, 0.1, 300) == 60
    assert periodic.budget(120, 0.1, 30) == 6
    assert periodic.budget(1, 0.01, 300) == 1
    assert periodic.budget(0, 0.1, 300) is None  # no rate limit: no bound


async def test_a_webhook_change_is_emitted_without_its_secret(
    sandbox: RunningSandbox, redis_client: aioredis.Redis
) -> None:
    await reconciler(sandbox, redis_client).run()
    async with sandbox.client() as client:
        hook = await client.call(
            "cal_organizations_webhooks_controller_create_organization_webhook",
            active=True,
            subscriberUrl="https://hooks.example.com/webhooks/cal",
            triggers=["BOOKING_CREATED"],
            secret="whsec_never_stored",
        )
        await reconciler(sandbox, redis_client).run()
        await client.call(
            "cal_organizations_webhooks_controller_update_org_webhook",
            webhookId=hook["id"],
            secret="whsec_rotated_never_stored",
        )
    report = await reconciler(sandbox, redis_client).run()
    [event] = report.events
    assert event.trigger == triggers.WEBHOOK_CHANGED
    assert event.payload["change"] == "updated"
    before, after = event.payload["before"], event.payload["after"]
    assert before["secretFingerprint"] != after["secretFingerprint"]
    created = [e for e in await queued(redis_client) if e.payload.get("change") == "created"]
    assert len(created) == 1
    stored = b""
    for key in await redis_client.keys("*"):
        kind = await redis_client.type(key)
        if kind == b"hash":
            stored += b"".join((await redis_client.hgetall(key)).values())  # type: ignore[misc]
        elif kind == b"string":
            stored += await redis_client.get(key) or b""
    assert b"never_stored" not in stored
    assert b"secretFingerprint" in stored


async def test_a_pass_failing_while_queueing_loses_no_event(
    sandbox: RunningSandbox, redis_client: aioredis.Redis
) -> None:
    await reconciler(sandbox, redis_client).run()
    async with sandbox.client() as client:
        await client.call(
            "cal_organizations_users_controller_create_organization_user",
            email="unlucky@acme.example",
        )
    failing = reconciler(sandbox, redis_client)

    async def redis_gone(event: Event) -> bool:
        raise ConnectionError("Redis went away")

    failing.emitter.emit = redis_gone  # type: ignore[method-assign]
    with pytest.raises(ConnectionError):
        await failing.run()
    report = await reconciler(sandbox, redis_client).run()
    assert sorted(e.trigger for e in report.events) == [
        triggers.MEMBERSHIP_CREATED,
        triggers.USER_CREATED,
    ]
    assert report.queued == 2


async def test_attribute_option_assignments_become_events(
    sandbox: RunningSandbox, redis_client: aioredis.Redis
) -> None:
    first = await reconciler(sandbox, redis_client).run()
    assert first.seen["assignments"] == 3  # alice, bob and carol each have a department
    assert first.seen["attributes"] == 1
    snapshot = await redis_client.hgetall("calhooks:reconcile:1:snap:attributes")  # type: ignore[misc]
    department = json.loads(snapshot[DEPARTMENT_ATTRIBUTE_ID.encode()])
    assert {o["slug"] for o in department["options"]} == {"engineering", "sales", "support"}
    async with sandbox.client() as client:
        await client.call(
            "cal_organizations_attributes_options_controller_unassign_organization_attribute_option_from_user",
            userId=BOB,
            attributeOptionId=option_id("sales"),
        )
        await client.call(
            "cal_organizations_attributes_options_controller_assign_organization_attribute_option_to_user",
            userId=BOB,
            attributeId=DEPARTMENT_ATTRIBUTE_ID,
            attributeOptionId=option_id("support"),
        )
    report = await reconciler(sandbox, redis_client).run()
    events = {e.trigger: e for e in report.events}
    assert set(events) == {
        triggers.ATTRIBUTE_OPTION_ASSIGNED,
        triggers.ATTRIBUTE_OPTION_UNASSIGNED,
    }
    assigned = events[triggers.ATTRIBUTE_OPTION_ASSIGNED].payload
    assert assigned["attribute"] == {
        "id": DEPARTMENT_ATTRIBUTE_ID,
        "name": "Department",
        "type": "singleSelect",
    }
    assert assigned["option"] == {"id": option_id("support"), "value": "Support"}
    assert assigned["user"]["id"] == BOB
    assert assigned["user"]["username"] == "bob"
    assert assigned["before"] is None
    assert assigned["after"]["option"]["id"] == option_id("support")
    assert assigned["source"] == "reconcile"
    assert assigned["observedAt"]
    unassigned = events[triggers.ATTRIBUTE_OPTION_UNASSIGNED].payload
    assert unassigned["option"] == {"id": option_id("sales"), "value": "Sales"}
    assert unassigned["user"]["id"] == BOB
    assert unassigned["after"] is None
    assert len(await queued(redis_client)) == 2
    assert (await reconciler(sandbox, redis_client).run()).events == []


async def test_attribute_options_fit_a_small_budget(
    sandbox: RunningSandbox, redis_client: aioredis.Redis
) -> None:
    async with sandbox.client() as client:
        for n in range(3):
            await client.call(
                "cal_organizations_attributes_controller_create_organization_attribute",
                name=f"Skill {n}",
                slug=f"skill-{n}",
                type="MULTI_SELECT",
                options=[{"value": "Python", "slug": "python"}],
            )
    attributes_kind = [
        kind for kind in reconciler(sandbox, redis_client).kinds if kind.name == "attributes"
    ]
    passes = 0
    while True:
        sent = len(sandbox.requests())
        report = await reconciler(sandbox, redis_client, budget=3, kinds=attributes_kind).run()
        assert report.calls <= 3
        assert len(sandbox.requests()) - sent == report.calls
        passes += 1
        if "attributes" in report.complete:
            break
        assert passes < 10
    assert passes >= 2  # 4 attributes and their options: 8 calls or more at 3 a pass
    snapshot = await redis_client.hgetall("calhooks:reconcile:1:snap:attributes")  # type: ignore[misc]
    assert len(snapshot) == 4
    assert all("options" in json.loads(v) for v in snapshot.values())


async def test_a_change_of_the_own_webhook_asks_for_a_reapply(
    sandbox: RunningSandbox, redis_client: aioredis.Redis
) -> None:
    request = reapply_key("test")
    await reconciler(sandbox, redis_client, deployment="test").run()
    async with sandbox.client() as client:
        await client.call(
            "cal_organizations_webhooks_controller_create_organization_webhook",
            active=True,
            subscriberUrl="https://hooks.example.com/webhooks/cal?calhooks=staging",
            triggers=["BOOKING_CREATED"],
        )
    report = await reconciler(sandbox, redis_client, deployment="test").run()
    assert [e.trigger for e in report.events] == [triggers.WEBHOOK_CHANGED]
    assert await redis_client.get(request) is None  # another deployment's webhook
    async with sandbox.client() as client:
        own = await client.call(
            "cal_organizations_webhooks_controller_create_organization_webhook",
            active=True,
            subscriberUrl="https://hooks.example.com/webhooks/cal?calhooks=test",
            triggers=["BOOKING_CREATED"],
        )
    [created] = (await reconciler(sandbox, redis_client, deployment="test").run()).events
    assert await redis_client.get(request) == created.id.encode()
    await redis_client.delete(request)
    async with sandbox.client() as client:
        await client.call(
            "cal_organizations_webhooks_controller_update_org_webhook",
            webhookId=own["id"],
            active=False,
        )
    [edited] = (await reconciler(sandbox, redis_client, deployment="test").run(dry_run=True)).events
    assert await redis_client.get(request) is None  # a dry run asks for nothing
    [edited] = (await reconciler(sandbox, redis_client, deployment="test").run()).events
    assert edited.payload["change"] == "updated"
    assert await redis_client.get(request) == edited.id.encode()
