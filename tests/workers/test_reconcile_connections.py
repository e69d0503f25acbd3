"""Reconciliation of every organization a deployment serves: the environment's and each
connection (the sandbox's Acme, Globex and Acme Labs over real HTTP, the suite's real Redis).

Each organization has its own snapshot and records (a connection's keyed by its PCID, the
environment's exactly as before), its events carry its connection (and run its rules with
its credentials), its missed bookings are
checked against its own booking records, its key's budget is split between the
organizations using that key, and a connection that cannot be used is skipped while the
others go on."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
import redis.asyncio as aioredis

from calhooks.service.calcom.client import CalcomClient, Credentials
from calhooks.service.connections.store import RECORDS_KEY, ConnectionInfo, ConnectionStore
from calhooks.service.core.secretbox import SecretBox, generate_key
from calhooks.service.core.settings import Settings
from calhooks.service.events import Event, reapply_key
from calhooks.service.sandbox.seed import (
    MANAGED_API_KEY,
    MANAGED_ORG_ID,
    SANDBOX_API_KEY,
    SANDBOX_ORG_ID,
    SECOND_API_KEY,
    SECOND_ORG_ID,
)
from calhooks.workers import keys
from calhooks.workers.clients import Organizations
from calhooks.workers.deadletter import DeadLetterQueue
from calhooks.workers.eventlog import EventLog
from calhooks.workers.jobs import Processor
from calhooks.workers.ledger import Ledger
from calhooks.workers.ordering import BookingOrder
from calhooks.workers.ratelimit import SharedRateLimit
from calhooks.workers.reconcile import periodic, records, triggers
from calhooks.workers.reconcile.reconciler import Reconciler, RunReport
from calhooks.workers.retries import RetryPolicy
from calhooks.workers.rules import parse_rules
from tests.sandbox.server import RunningSandbox
from tests.waiting import eventually
from tests.workers.test_reconcile import queued

QUEUE = "arq:queue"
CREATE_USER = "cal_organizations_users_controller_create_organization_user"
LIST_USERS = "cal_organizations_users_controller_get_organizations_users"
GLOBEX_KEY_ID = "key-globex-admin"


@dataclass
class Deployment:
    sandbox: RunningSandbox
    redis: aioredis.Redis
    store: ConnectionStore
    organizations: Organizations
    settings: Settings
    acme: ConnectionInfo
    globex: ConnectionInfo
    labs: ConnectionInfo

    async def targets(self) -> list[periodic.Target]:
        return await periodic.targets(self.organizations, SANDBOX_ORG_ID)

    async def target(self, org: records.Org) -> periodic.Target:
        [found] = [t for t in await self.targets() if t.org == org]
        return found

    async def run(self, org: records.Org, calls: int | None = None) -> RunReport:
        target = await self.target(org)
        reconciler = periodic.reconciler_for(self.settings, self.redis, target, calls)
        return await periodic.run_locked(reconciler, holder="test")

    async def snapshot(self, org: records.Org, kind: str) -> dict[bytes, bytes]:
        found: dict[bytes, bytes] = await self.redis.hgetall(records.snapshot_key(org, kind))  # type: ignore[misc]
        return found


@pytest.fixture
async def deployment(
    sandbox: RunningSandbox, redis_client: aioredis.Redis
) -> AsyncIterator[Deployment]:
    store = ConnectionStore(redis_client, SecretBox(generate_key()))

    async def add(name: str, key: str, org_id: int | None, tenant: str = "default") -> Any:
        return await store.add(
            name, Credentials(api_key=key), tenant=tenant, org_id=org_id, base_url=sandbox.url
        )

    acme = await add("acme", SANDBOX_API_KEY, SANDBOX_ORG_ID)
    globex = await add("globex", SECOND_API_KEY, SECOND_ORG_ID)
    labs = await add("acme-labs", MANAGED_API_KEY, MANAGED_ORG_ID, tenant="agency")
    settings = Settings(
        org_id=SANDBOX_ORG_ID, queue_name=QUEUE, reconcile_grace=0, webhook_deployment="test"
    )
    async with sandbox.client() as client:  # the environment's organization: Acme
        organizations = Organizations(
            client,
            limiter=lambda bucket: SharedRateLimit(redis_client, bucket, per_minute=10_000),
            store=store,
            cache_seconds=0,
        )
        yield Deployment(sandbox, redis_client, store, organizations, settings, acme, globex, labs)


async def test_each_organization_has_its_own_snapshot_and_a_connection_s_events_name_it(
    deployment: Deployment,
) -> None:
    d = deployment
    targets = await d.targets()
    assert [t.org for t in targets] == [
        SANDBOX_ORG_ID,
        *sorted((d.acme.pcid, d.globex.pcid, d.labs.pcid)),
    ]
    assert all(t.problem is None for t in targets)
    # The first pass of each organization is a baseline: nothing is queued.
    for target in targets:
        first = await d.run(target.org)
        assert first.events == []
        assert "users" in first.baselined
    assert await queued(d.redis) == []
    # The environment's organization keeps its keys exactly; connections have their own,
    # even the connection to the environment's own org id (Acme): nothing collides.
    assert await d.redis.exists(f"calhooks:reconcile:{SANDBOX_ORG_ID}:snap:users")
    assert await d.redis.hget(f"calhooks:reconcile:{SANDBOX_ORG_ID}:state", "users:baseline")  # type: ignore[misc]
    for info in (d.acme, d.globex, d.labs):
        state = f"calhooks:conn:{info.pcid}:reconcile:state"
        assert await d.redis.hget(state, "users:baseline") == b"1"  # type: ignore[misc]
    for info in (d.acme, d.globex):  # (Acme Labs has no users)
        assert await d.redis.exists(f"calhooks:conn:{info.pcid}:reconcile:snap:users")
    acme_users = await d.snapshot(d.acme.pcid, "users")
    env_users = await d.snapshot(SANDBOX_ORG_ID, "users")
    assert acme_users == env_users  # the same org listed twice, kept twice
    assert await d.snapshot(d.globex.pcid, "users") != acme_users

    # A user made directly in Globex's org, behind calhooks' back.
    async with d.sandbox.client() as cal:
        globex = cal.with_credentials(Credentials(api_key=SECOND_API_KEY), org_id=SECOND_ORG_ID)
        made = await globex.call(CREATE_USER, email="newcomer@globex.example")

    before = len(d.sandbox.requests(LIST_USERS))
    reports = {target.org: await d.run(target.org) for target in targets}
    assert [e.trigger for e in reports[d.globex.pcid].events] == [
        triggers.MEMBERSHIP_CREATED,
        triggers.USER_CREATED,
    ]
    for org in (SANDBOX_ORG_ID, d.acme.pcid, d.labs.pcid):
        assert reports[org].events == [], org
    events = await queued(d.redis)
    assert {e.connection for e in events} == {d.globex.pcid}
    assert {e.source for e in events} == {"reconcile"}
    [user] = [e for e in events if e.trigger == triggers.USER_CREATED]
    assert user.payload["after"]["id"] == made["id"]
    # Globex's pass listed with Globex's key; Acme's snapshot did not move.
    calls = d.sandbox.requests(LIST_USERS)[before:]
    globex_calls = {r.credential for r in calls if f"/organizations/{SECOND_ORG_ID}/" in r.path}
    assert globex_calls == {GLOBEX_KEY_ID}
    assert len(calls) == 4  # one listing per organization
    assert await d.snapshot(d.acme.pcid, "users") == acme_users
    assert await d.snapshot(SANDBOX_ORG_ID, "users") == env_users
    # Each organization's history names it; the history across organizations holds them all.
    status = await records.read_status(d.redis, d.globex.pcid)
    assert [p.organization for p in status.passes] == [f"globex ({d.globex.pcid})"] * 2
    assert {p.connection for p in status.passes} == {d.globex.pcid}
    assert [e.id for e in status.events] == [e.id for e in reversed(reports[d.globex.pcid].events)]
    every = await records.read_all_passes(d.redis, 50)
    assert len(every) == 8
    assert f"environment (org {SANDBOX_ORG_ID})" in {p.organization for p in every}


async def test_the_same_change_seen_by_two_organizations_gives_two_events(
    deployment: Deployment,
) -> None:
    """The environment's organization and the connection ``acme`` are the same Cal.com org:
    a change there is an event of each, with different ids (no de-duplication between
    them) and each its own connection."""
    d = deployment
    for org in (SANDBOX_ORG_ID, d.acme.pcid):
        await d.run(org)
    async with d.sandbox.client() as cal:
        await cal.call(CREATE_USER, email="both@acme.example")
    env = await d.run(SANDBOX_ORG_ID)
    conn = await d.run(d.acme.pcid)
    assert [e.trigger for e in env.events] == [e.trigger for e in conn.events]
    assert {e.connection for e in env.events} == {None}
    assert {e.connection for e in conn.events} == {d.acme.pcid}
    assert not {e.id for e in env.events} & {e.id for e in conn.events}
    assert env.queued == conn.queued == len(env.events)


async def test_a_connection_s_missed_bookings_are_checked_against_its_own_deliveries(
    deployment: Deployment,
) -> None:
    d = deployment
    await d.run(d.globex.pcid)

    async def book() -> str:
        response = await d.sandbox.admin(
            "POST",
            "/bookings",
            json={"wait": True, "orgId": SECOND_ORG_ID, "change": "create", "user": "dave"},
        )
        assert response.status_code == 200, response.text
        uid: str = response.json()["booking"]["uid"]
        return uid

    delivered, lost = await book(), await book()
    # The workers processed ``delivered``'s creation for Globex (ordering.py's record);
    # an environment-org record of ``lost``'s uid is another organization's booking.
    await d.redis.hset(keys.booking(delivered, d.globex.pcid), "created", "e1")  # type: ignore[misc]
    await d.redis.hset(keys.booking(lost), "created", "e2")  # type: ignore[misc]
    report = await d.run(d.globex.pcid)
    assert [(e.trigger, e.payload["uid"], e.connection) for e in report.events] == [
        ("BOOKING_CREATED", lost, d.globex.pcid)
    ]


async def test_the_budget_of_a_key_is_split_between_the_organizations_using_it(
    deployment: Deployment,
) -> None:
    d = deployment
    targets = await d.targets()
    env, acme = await d.target(SANDBOX_ORG_ID), await d.target(d.acme.pcid)
    assert env.bucket == acme.bucket  # the environment's key is Acme's connection's key
    budgets = periodic.share_budgets(targets, 60)
    assert budgets == {SANDBOX_ORG_ID: 30, d.acme.pcid: 30, d.globex.pcid: 60, d.labs.pcid: 60}
    assert periodic.share_budgets(targets, None) == dict.fromkeys(budgets)
    assert periodic.share_budgets(targets, 1) == dict.fromkeys(budgets, 1)  # at least one call
    # A pass spends no more than its share: 3 calls spread Acme's listing over passes.
    report = await d.run(d.acme.pcid, calls=3)
    assert report.calls <= 3
    assert report.pending is not None


async def test_a_connection_that_cannot_be_used_is_skipped_and_the_others_go_on(
    deployment: Deployment, caplog: pytest.LogCaptureFixture
) -> None:
    d = deployment
    orphan = await d.store.add("orphan", Credentials(api_key=SECOND_API_KEY), org_id=None)
    wrong = await d.store.add(
        "wrong-key", Credentials(api_key="cal_test_not_a_key"), org_id=SECOND_ORG_ID,
        base_url=d.sandbox.url,
    )  # fmt: skip
    # A record altered in Redis (its org id no longer the sealed one) is refused, not used.
    altered = await d.store.add(
        "altered", Credentials(api_key=SECOND_API_KEY), org_id=SECOND_ORG_ID,
        base_url=d.sandbox.url,
    )  # fmt: skip
    raw = json.loads(await d.redis.hget(RECORDS_KEY, altered.pcid))  # type: ignore[misc]
    await d.redis.hset(RECORDS_KEY, altered.pcid, json.dumps({**raw, "org_id": 1}))  # type: ignore[misc]
    removed = await d.store.add(
        "removed", Credentials(api_key=SECOND_API_KEY), org_id=SECOND_ORG_ID,
        base_url=d.sandbox.url,
    )  # fmt: skip
    await d.store.remove(removed.pcid)

    found = {t.org: t for t in await d.targets()}
    assert removed.pcid not in found
    assert "no org id" in (found[orphan.pcid].problem or "")
    assert "altered" in (found[altered.pcid].problem or "")
    assert found[wrong.pcid].problem is None  # usable until Cal.com refuses its key

    async def find() -> list[periodic.Target]:
        return await d.targets()

    def make(target: periodic.Target, calls: int | None) -> Reconciler:
        return periodic.reconciler_for(d.settings, d.redis, target, calls)

    worker = asyncio.create_task(
        periodic.every_period(
            d.redis, find, make, period=3600, per_key=None, check_every=0.01, concurrency=2
        )
    )
    try:
        usable: list[records.Org] = [SANDBOX_ORG_ID, d.acme.pcid, d.globex.pcid, d.labs.pcid]

        async def all_passed() -> bool:
            for org in usable:
                if (await records.read_status(d.redis, org)).total_passes < 1:
                    return False
            return bool((await records.read_status(d.redis, wrong.pcid)).passes)

        await eventually(all_passed, what="a pass of every usable organization")
    finally:
        worker.cancel()
        await asyncio.gather(worker, return_exceptions=True)
    # The wrong key's pass failed (Cal.com refused it) and is in its history; the unusable
    # connections were claimed and skipped (their period is taken) and never listed.
    [failed] = (await records.read_status(d.redis, wrong.pcid)).passes
    assert failed.outcome == "failed"
    assert failed.error is not None
    for skipped in (orphan, altered):
        status = await records.read_status(d.redis, skipped.pcid)
        assert status.passes == []
        assert status.snapshot == {}
        assert status.due_in is not None
    assert await d.redis.keys(f"calhooks:conn:{removed.pcid}:*") == []


async def test_the_walk_runs_no_more_passes_at_once_than_its_limit(
    deployment: Deployment,
) -> None:
    """Four organizations, two passes at once: the other two start when a pass ends."""
    d = deployment
    running: set[records.Org] = set()
    most = 0
    release = asyncio.Event()

    class Slow(Reconciler):
        async def run(self, *, dry_run: bool = False, holder: str | None = None) -> RunReport:
            nonlocal most
            running.add(self.org)
            most = max(most, len(running))
            try:
                await release.wait()
                return await super().run(dry_run=dry_run, holder=holder)
            finally:
                running.discard(self.org)

    async def find() -> list[periodic.Target]:
        return await d.targets()

    def make(target: periodic.Target, calls: int | None) -> Reconciler:
        assert target.client is not None
        assert target.org_id is not None
        client: CalcomClient = target.client
        return Slow(
            d.redis, client, org_id=target.org_id, queue_name=QUEUE, dedupe_window=60,
            connection=target.connection, name=target.name,
        )  # fmt: skip

    worker = asyncio.create_task(
        periodic.every_period(
            d.redis, find, make, period=3600, per_key=None, check_every=3600, concurrency=2
        )
    )
    try:
        await eventually(lambda: len(running) == 2, what="two passes running")
        for _ in range(20):  # no third pass starts
            await asyncio.sleep(0.01)
        assert len(running) == 2
        # The walk goes on as soon as passes end, not at its next check (an hour away).
        release.set()

        async def all_passed() -> bool:
            for target in await d.targets():
                if (await records.read_status(d.redis, target.org)).total_passes < 1:
                    return False
            return True

        await eventually(all_passed, what="every organization's pass")
    finally:
        worker.cancel()
        await asyncio.gather(worker, return_exceptions=True)
    assert most == 2


async def test_a_change_of_a_connection_s_own_webhook_asks_for_a_reapply(
    deployment: Deployment,
) -> None:
    """A connection's webhook carries ``<deployment>.<pcid>`` (subscriptions.ownership): its
    change asks the web process to re-apply the plans (every organization's); the
    environment's mark seen in a connection's org is not that connection's webhook."""
    d = deployment
    request = reapply_key("test")
    await d.run(d.globex.pcid)

    async def create(mark: str) -> list[Event]:
        async with d.sandbox.client() as cal:
            globex = cal.with_credentials(Credentials(api_key=SECOND_API_KEY), org_id=SECOND_ORG_ID)
            await globex.call(
                "cal_organizations_webhooks_controller_create_organization_webhook",
                active=True,
                subscriberUrl=f"https://hooks.example.com/webhooks/cal/x?calhooks={mark}",
                triggers=["BOOKING_CREATED"],
            )
        return (await d.run(d.globex.pcid)).events

    [other] = await create("test")
    assert other.trigger == triggers.WEBHOOK_CHANGED
    assert other.connection == d.globex.pcid
    assert await d.redis.get(request) is None
    [own] = await create(f"test.{d.globex.pcid}")
    assert await d.redis.get(request) == own.id.encode()


RULES = """
rules:
  - name: globex-newcomers
    on: calhooks.USER_CREATED
    connections: [globex]
    steps:
      - tool: cal_organizations_users_controller_get_organizations_users
        with: {emails: ["${{ payload.after.email }}"]}
  - name: acme-newcomers
    on: calhooks.USER_CREATED
    connections: [acme]
    steps:
      - log: "never for globex"
"""


async def test_a_connection_s_recovered_event_runs_its_rules_with_its_credentials(
    deployment: Deployment,
) -> None:
    d = deployment
    await d.run(d.globex.pcid)
    async with d.sandbox.client() as cal:
        globex = cal.with_credentials(Credentials(api_key=SECOND_API_KEY), org_id=SECOND_ORG_ID)
        await globex.call(CREATE_USER, email="recovered@globex.example")
    await d.run(d.globex.pcid)
    [event] = [e for e in await queued(d.redis) if e.trigger == triggers.USER_CREATED]
    rules = parse_rules(RULES, env={"org_id": SANDBOX_ORG_ID})
    processor = Processor(
        rules=lambda: rules,
        client=d.organizations.environment.client,
        ledger=Ledger(d.redis, ttl=600),
        dead_letters=DeadLetterQueue(d.redis),
        eventlog=EventLog(d.redis, ttl=600),
        order=BookingOrder(d.redis, wait=0.0, lock_wait=0.05),
        policy=RetryPolicy(3, 10.0, 100.0),
        job_timeout=30,
        worker_name="test-worker",
        organizations=d.organizations,
    )
    before = len(d.sandbox.requests(LIST_USERS))
    assert await processor.process(event) == {"rules": {"globex-newcomers": "done"}}
    [call] = d.sandbox.requests(LIST_USERS)[before:]
    assert call.credential == GLOBEX_KEY_ID
    assert call.path == f"/v2/organizations/{SECOND_ORG_ID}/users"
    assert dict(call.query)["emails"] == "recovered@globex.example"


async def test_the_walk_stops_when_cancelled_even_if_an_await_swallowed_it(
    redis_client: aioredis.Redis,
) -> None:
    """A worker's shutdown cancels the loop; something inside that eats the CancelledError
    (as ``asyncio.wait_for`` may in Python 3.11) must not keep it running."""
    entered = asyncio.Event()

    async def find() -> list[periodic.Target]:
        entered.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:  # swallowed, as a buggy await would
            return []
        return []

    def make(target: periodic.Target, calls: int | None) -> Reconciler:
        raise AssertionError("no organization to reconcile")

    worker = asyncio.create_task(
        periodic.every_period(redis_client, find, make, period=3600, per_key=None, check_every=0.01)
    )
    await entered.wait()
    worker.cancel()
    await eventually(worker.done, what="the loop to stop")
    assert worker.cancelled()
