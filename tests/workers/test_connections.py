"""Events of several Cal.com organizations in one worker: each event's calls with its own
connection's key and org id, its rules and env, its booking chains, its key's rate budget
and its metrics label (the sandbox's Acme, Globex and Acme Labs over HTTP, a real Redis)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
import redis.asyncio as aioredis
from arq import Retry

from calhooks.service.calcom.client import CalcomClient, Credentials
from calhooks.service.connections.store import ConnectionInfo, ConnectionStore
from calhooks.service.core.secretbox import SecretBox, generate_key
from calhooks.service.sandbox.seed import (
    MANAGED_API_KEY,
    MANAGED_ORG_ID,
    SANDBOX_API_KEY,
    SANDBOX_ORG_ID,
    SECOND_API_KEY,
    SECOND_ORG_ID,
)
from calhooks.workers import metrics
from calhooks.workers.clients import CACHE_SECONDS, Organizations
from calhooks.workers.deadletter import DeadLetterQueue, entry_id
from calhooks.workers.eventlog import EventLog
from calhooks.workers.jobs import Processor
from calhooks.workers.ledger import Ledger
from calhooks.workers.ordering import BookingOrder
from calhooks.workers.ratelimit import SharedRateLimit
from calhooks.workers.retries import Defer, RetryPolicy
from calhooks.workers.rules import RuleSet, parse_rules
from tests.sandbox.server import RunningSandbox
from tests.workers.test_jobs import FakeEvent

LIST_USERS = "cal_organizations_users_controller_get_organizations_users"
LIST_ATTRIBUTES = "cal_organizations_attributes_controller_get_organization_attributes"
#: The sandbox's credential ids (``RequestRecord.credential``) of the three seeded keys.
ACME_KEY_ID, GLOBEX_KEY_ID, LABS_KEY_ID = "key-acme-admin", "key-globex-admin", "key-acme-labs"

RULES = f"""
env: {{domain: default.example}}
connections:
  globex:
    env: {{domain: globex.example}}
rules:
  - name: everyone
    on: BOOKING_CREATED
    steps:
      - tool: {LIST_USERS}
        with: {{emails: ["probe@${{{{ env.domain }}}}"]}}
  - name: globex-only
    on: BOOKING_CREATED
    connections: [globex]
    steps:
      - tool: {LIST_ATTRIBUTES}
  - name: agency-only
    on: BOOKING_CREATED
    tenants: [agency]
    steps:
      - tool: {LIST_ATTRIBUTES}
"""


@dataclass
class Orgs:
    sandbox: RunningSandbox
    redis: aioredis.Redis
    store: ConnectionStore
    client: CalcomClient
    rules: RuleSet
    acme: ConnectionInfo
    globex: ConnectionInfo
    labs: ConnectionInfo
    labels: metrics.ConnectionLabels
    per_minute: int = 120

    def organizations(self) -> Organizations:
        return Organizations(
            self.client,
            limiter=lambda bucket: SharedRateLimit(
                self.redis, bucket, per_minute=self.per_minute, max_wait=0.5
            ),
            store=self.store,
            labels=self.labels,
        )

    def processor(self, organizations: Organizations | None = None) -> Processor:
        return Processor(
            rules=lambda: self.rules,
            client=self.client,
            ledger=Ledger(self.redis, ttl=600),
            dead_letters=DeadLetterQueue(self.redis),
            eventlog=EventLog(self.redis, ttl=600),
            order=BookingOrder(self.redis, wait=0.0, lock_wait=0.05),
            policy=RetryPolicy(3, 10.0, 100.0),
            job_timeout=30,
            worker_name="test-worker",
            organizations=organizations or self.organizations(),
        )

    def calls(self, tool: str) -> list[tuple[str | None, str, dict[str, str]]]:
        """(credential, path, query) of every call of ``tool`` the sandbox answered."""
        return [
            (record.credential, record.path, dict(record.query))
            for record in self.sandbox.requests(tool)
        ]


@pytest.fixture
async def orgs(sandbox: RunningSandbox, redis_client: aioredis.Redis) -> AsyncIterator[Orgs]:
    store = ConnectionStore(redis_client, SecretBox(generate_key()))

    async def add(name: str, key: str, org_id: int, tenant: str = "default") -> ConnectionInfo:
        credentials = Credentials(api_key=key)
        return await store.add(
            name, credentials, tenant=tenant, org_id=org_id, base_url=sandbox.url
        )

    acme = await add("acme", SANDBOX_API_KEY, SANDBOX_ORG_ID)
    globex = await add("globex", SECOND_API_KEY, SECOND_ORG_ID)
    labs = await add("acme-labs", MANAGED_API_KEY, MANAGED_ORG_ID, tenant="agency")
    async with sandbox.client() as client:  # the environment's organization: Acme
        yield Orgs(
            sandbox,
            redis_client,
            store,
            client,
            parse_rules(RULES, env={"org_id": SANDBOX_ORG_ID}),
            acme,
            globex,
            labs,
            metrics.ConnectionLabels(),
        )


def created(uid: str, connection: str | None, trigger: str = "BOOKING_CREATED") -> FakeEvent:
    return FakeEvent(
        f"ev-{connection}-{uid}-{trigger}",
        trigger,
        {"uid": uid, "startTime": "2031-05-01T09:00:00Z", "endTime": "2031-05-02T17:00:00Z"},
        connection=connection,
    )


async def test_each_connections_events_call_with_its_key_org_id_rules_and_env(
    orgs: Orgs,
) -> None:
    """Acme, Globex and Acme Labs (tenant agency) each make their calls with their own key in
    their own org; Globex alone runs its rule and sees its env; the environment org as before."""
    processor = orgs.processor()
    results = {
        name: await processor.process(created("bk-1", connection))
        for name, connection in (
            ("env", None),
            ("acme", orgs.acme.pcid),
            ("globex", orgs.globex.pcid),
            ("labs", orgs.labs.pcid),
        )
    }
    assert results == {
        "env": {"rules": {"everyone": "done"}},
        "acme": {"rules": {"everyone": "done"}},
        "globex": {"rules": {"everyone": "done", "globex-only": "done"}},
        "labs": {"rules": {"everyone": "done", "agency-only": "done"}},
    }
    acme_call = (ACME_KEY_ID, f"/v2/organizations/{SANDBOX_ORG_ID}/users", "probe@default.example")
    assert sorted((c, p, q.get("emails")) for c, p, q in orgs.calls(LIST_USERS)) == [
        acme_call,  # the environment's organization: Acme's key too
        acme_call,
        (LABS_KEY_ID, f"/v2/organizations/{MANAGED_ORG_ID}/users", "probe@default.example"),
        (GLOBEX_KEY_ID, f"/v2/organizations/{SECOND_ORG_ID}/users", "probe@globex.example"),
    ]
    assert [(c, p) for c, p, _ in orgs.calls(LIST_ATTRIBUTES)] == [
        (GLOBEX_KEY_ID, f"/v2/organizations/{SECOND_ORG_ID}/attributes"),
        (LABS_KEY_ID, f"/v2/organizations/{MANAGED_ORG_ID}/attributes"),
    ]
    attempt = (await EventLog(orgs.redis, ttl=600).read(created("bk-1", orgs.globex.pcid).id))[0]
    assert (attempt["connection"], attempt["connection_name"], attempt["connection_tenant"]) == (
        orgs.globex.pcid,
        "globex",
        "default",
    )
    matched = next(
        record
        for record in await EventLog(orgs.redis, ttl=600).read(created("bk-1", orgs.acme.pcid).id)
        if record["kind"] == "matched"
    )
    assert matched["not_matched"] == {
        "globex-only": "runs for connection globex",
        "agency-only": "runs for tenant agency",
    }


async def test_a_removed_connection_or_one_without_org_id_dead_letters_its_rules(
    orgs: Orgs,
) -> None:
    """No call is made with anything else's credentials: the matched rules go to the
    dead-letter queue saying why, with the connection, and are not retried."""
    await orgs.store.remove(orgs.globex.pcid)
    no_org = await orgs.store.add(
        "no-org", Credentials(api_key=SECOND_API_KEY), base_url=orgs.sandbox.url
    )
    processor = orgs.processor()
    gone_event = created("bk-2", orgs.globex.pcid)
    assert await processor.process(gone_event) == {"rules": {"everyone": "dead"}}
    no_org_event = created("bk-3", no_org.pcid)
    assert await processor.process(no_org_event) == {"rules": {"everyone": "dead"}}
    assert orgs.calls(LIST_USERS) == []
    queue = DeadLetterQueue(orgs.redis)
    gone = await queue.get(entry_id(gone_event.id, "everyone"))
    assert gone is not None
    assert gone.error["type"] == "ConnectionUnavailable"
    assert "no longer exists" in gone.error["message"]
    assert (gone.connection, gone.connection_name) == (orgs.globex.pcid, None)
    missing_org = await queue.get(entry_id(no_org_event.id, "everyone"))
    assert missing_org is not None
    assert "has no org id" in missing_org.error["message"]
    assert (missing_org.connection, missing_org.connection_name) == (no_org.pcid, "no-org")
    # Run again (arq's at-least-once): the dead rule stays dead, nothing is called.
    assert await processor.process(gone_event) == {"rules": {"everyone": "dead"}}
    assert orgs.calls(LIST_USERS) == []


async def test_the_same_booking_uid_in_two_organizations_is_two_chains(orgs: Orgs) -> None:
    """Acme's cancelled bk-9 does not make Globex's creation of its own bk-9 stale."""
    order = BookingOrder(orgs.redis, wait=0.0, lock_wait=0.05)
    acme, globex = orgs.acme.pcid, orgs.globex.pcid
    now = time.time()
    for number, (trigger, connection) in enumerate(
        [("BOOKING_CREATED", acme), ("BOOKING_CANCELLED", acme)]
    ):
        event = created("bk-9", connection, trigger)
        async with order.turn(event.id, trigger, event.payload, now + number, connection) as turn:
            assert turn.skip_reason is None
            async with orgs.redis.pipeline(transaction=False) as pipe:
                order.finish(pipe, turn, event.id, trigger, now + number)
                await pipe.execute()
    late = created("bk-9", acme)
    async with order.turn(late.id, late.trigger, late.payload, now + 5, acme) as turn:
        assert turn.skip_reason == "booking bk-9 was already cancelled"
    other = created("bk-9", globex)
    async with order.turn(other.id, other.trigger, other.payload, now + 5, globex) as turn:
        assert turn.skip_reason is None
    environment = created("bk-9", None)
    async with order.turn(environment.id, "BOOKING_CREATED", environment.payload, now + 5) as turn:
        assert turn.skip_reason is None


async def test_each_key_has_its_own_rate_budget_and_a_shared_key_shares_one(orgs: Orgs) -> None:
    """Acme's key out of budget defers Acme's calls (the connection's and the environment
    organization's: the same key) and leaves Globex's untouched."""
    orgs.per_minute = 3  # 3 a minute: the limiter lets 2 go per window
    organizations = orgs.organizations()
    acme = await organizations.scope(orgs.acme.pcid)
    globex = await organizations.scope(orgs.globex.pcid)
    environment = await organizations.scope(None)
    assert acme.bucket is not None
    assert globex.bucket is not None
    assert acme.bucket == environment.bucket != globex.bucket
    assert organizations.limiter(acme.bucket) is organizations.limiter(environment.bucket)
    acme_limit, globex_limit = (
        organizations.limiter(acme.bucket),
        organizations.limiter(globex.bucket),
    )
    assert await acme_limit.acquire() == 0.0
    assert await acme_limit.acquire() == 0.0
    with pytest.raises(Defer):
        await acme_limit.acquire()
    # An event of Acme's is deferred (re-queued, not failed); Globex's two calls go at once.
    processor = orgs.processor(organizations)
    with pytest.raises(Retry):
        await processor.process(created("bk-4", orgs.acme.pcid))
    assert await processor.process(created("bk-4", orgs.globex.pcid)) == {
        "rules": {"everyone": "done", "globex-only": "done"}
    }
    assert [c for c, _, _ in orgs.calls(LIST_USERS)] == [GLOBEX_KEY_ID]
    with pytest.raises(Defer):
        await globex_limit.acquire()


def test_metrics_labels_are_bounded_past_the_configured_number_of_connections() -> None:
    """21 connections with the limit 20: the 21st is counted under ``other``; the environment
    organization is ``env``; a connection keeps its label."""
    labels = metrics.ConnectionLabels(20)
    given = [labels.label(f"pcid-{n}", f"org-{n}") for n in range(21)]
    assert given[:20] == [f"org-{n}" for n in range(20)]
    assert given[20] == metrics.OTHER_LABEL
    assert labels.label("pcid-3", "org-3") == "org-3"
    assert labels.label("pcid-x", "agency-org", "agency") == metrics.OTHER_LABEL
    small = metrics.ConnectionLabels(3)
    assert small.label("p1", "acme", "agency") == "agency/acme"
    assert small.label("p2", "env") == "env (p2)"  # never the environment org's series
    assert metrics.ENV_LABEL == "env"


async def test_worker_metrics_carry_the_connection_label_up_to_the_limit(orgs: Orgs) -> None:
    """With room for one connection's label, Acme's events count as ``acme``, Globex's as
    ``other``, the environment organization's as ``env``."""
    orgs.labels = metrics.ConnectionLabels(1)
    processor = orgs.processor()

    def counts() -> dict[str, tuple[float, float]]:
        text = metrics.render().decode()
        return {
            label: (
                _sample(
                    text, "calhooks_worker_events_total", connection=label, outcome="processed"
                ),
                _sample(
                    text,
                    "calhooks_calcom_calls_total",
                    connection=label,
                    status="200",
                    tool=LIST_USERS,
                ),
            )
            for label in ("env", "acme", "globex", "other")
        }

    before = counts()
    for connection in (None, orgs.acme.pcid, orgs.globex.pcid):
        await processor.process(created("bk-5", connection))
    after = counts()
    added = {
        label: (after[label][0] - before[label][0], after[label][1] - before[label][1])
        for label in after
    }
    assert added == {
        "env": (1.0, 1.0),
        "acme": (1.0, 1.0),
        "globex": (0.0, 0.0),
        "other": (1.0, 1.0),
    }


def _sample(text: str, name: str, **labels: str) -> float:
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        sample, _, value = line.rpartition(" ")
        metric, _, label_text = sample.partition("{")
        if metric == name and ",".join(sorted(label_text.rstrip("}").split(","))) == wanted:
            return float(value)
    return 0.0


async def test_a_connection_is_kept_briefly_then_read_again(orgs: Orgs) -> None:
    """A worker reads a connection once per CACHE_SECONDS: a removal shows after that."""
    now = [0.0]
    organizations = Organizations(
        orgs.client,
        limiter=lambda bucket: SharedRateLimit(orgs.redis, bucket),
        store=orgs.store,
        labels=orgs.labels,
        clock=lambda: now[0],
    )
    first = await organizations.scope(orgs.globex.pcid)
    assert first.problem is None
    await orgs.store.remove(orgs.globex.pcid)
    assert await organizations.scope(orgs.globex.pcid) is first
    now[0] = CACHE_SECONDS + 1
    gone = await organizations.scope(orgs.globex.pcid)
    assert gone.problem is not None
    assert "no longer exists" in gone.problem


async def test_a_worker_without_the_encryption_key_says_so(orgs: Orgs) -> None:
    organizations = Organizations(
        orgs.client,
        limiter=lambda bucket: SharedRateLimit(orgs.redis, bucket),
        store=None,
        store_problem="CALHOOKS_ENCRYPTION_KEY is not set",
    )
    scope = await organizations.scope(orgs.acme.pcid)
    assert scope.problem == (
        f"connection {orgs.acme.pcid} cannot be read: CALHOOKS_ENCRYPTION_KEY is not set"
    )
    assert (await organizations.scope(None)).problem is None
