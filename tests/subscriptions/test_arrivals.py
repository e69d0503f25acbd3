"""A connection stored while the web app runs gets its webhook from one replica (``arrivals``).

The sandbox's Acme is the environment's organization; Globex (org 2, its own key) is stored as
a connection once the replicas run. The sandbox's request log says which key made each call,
so "one replica applied" reads as "Globex's key listed the webhooks once and created once".
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from calhooks.service.app import create_app
from calhooks.service.calcom.client import CalcomClient, Credentials
from calhooks.service.connections.store import ConnectionStore
from calhooks.service.core.embedded_redis import EmbeddedRedis, free_port
from calhooks.service.core.settings import Settings
from calhooks.service.sandbox.seed import SECOND_API_KEY, SECOND_ORG_ID
from calhooks.service.subscriptions.apply import ApplyResult, apply_webhooks
from calhooks.service.subscriptions.arrivals import CLAIM_TTL, Arrivals
from calhooks.service.subscriptions.remote import CREATE_TOOL, LIST_TOOL
from calhooks.service.subscriptions.startup import auto_apply
from calhooks.service.subscriptions.targets import Target, TargetGoneError
from tests.sandbox.server import RunningSandbox
from tests.servers import serve_app
from tests.subscriptions.conftest import make_settings, write_rules
from tests.subscriptions.test_startup import replica_settings
from tests.waiting import eventually


def calls(sandbox: RunningSandbox, credential: str) -> list[str | None]:
    """The webhook tools ``credential`` called, in order."""
    return [r.tool for r in sandbox.requests() if r.credential == credential]


async def test_a_connection_added_at_run_time_gets_its_webhook_from_one_replica(
    sandbox: RunningSandbox,
    redis_server: EmbeddedRedis,
    redis_client: aioredis.Redis,
    tmp_path: Path,
) -> None:
    """Two replicas with auto-apply run; Globex is stored; within a refresh one replica makes
    Globex's webhook in org 2 with Globex's key, the other leaves it; Globex's events arrive."""
    ports = [free_port("127.0.0.1") for _ in range(2)]
    public = f"http://127.0.0.1:{ports[0]}"
    with ExitStack() as stack:
        for index, port in enumerate(ports):
            settings = replica_settings(
                sandbox,
                redis_server,
                tmp_path / str(index),
                public_url=public,
                webhooks_auto_apply=True,
            )
            stack.enter_context(
                serve_app(create_app(settings, redis_url=redis_server.url), port=port)
            )
        # Each replica lists Acme's webhooks once its start-up apply runs, after noting the
        # connections stored then (none).
        await eventually(
            lambda: calls(sandbox, "key-acme-admin").count(LIST_TOOL) >= 2,
            what="both replicas' start-up apply",
        )
        store = ConnectionStore.from_settings(settings, redis_client)
        globex = await store.add(
            "globex",
            Credentials(api_key=SECOND_API_KEY),
            org_id=SECOND_ORG_ID,
            base_url=sandbox.url,
        )
        url = f"{public}/webhooks/cal/{globex.pcid}?calhooks=test.{globex.pcid}"
        hook = await eventually(
            lambda: next(
                (w for w in sandbox.store.webhooks.values() if w.subscriber_url == url), None
            ),
            what="Globex's webhook",
        )
        assert hook.active
        assert hook.triggers == ["BOOKING_CREATED"]
        own = Target(await store.get(globex.pcid, tenant=None)).store(settings, redis_client)
        await eventually(lambda: redis_client.exists(own.last_apply_key), what="the apply record")

        async def claim_given_back() -> bool:
            return not await redis_client.exists(own.claim_key)

        await eventually(claim_given_back, what="the claim given back")
        [create] = [r for r in sandbox.requests(CREATE_TOOL) if r.body["subscriberUrl"] == url]
        assert (create.credential, create.path) == (
            "key-globex-admin",
            f"/v2/organizations/{SECOND_ORG_ID}/webhooks",
        )
        emitted = await sandbox.admin(
            "POST", "/events", json={"trigger": "BOOKING_CREATED", "user": "dave", "wait": True}
        )
        assert [d["status"] for d in emitted.json()["deliveries"]] == [202]
        # Later passes of both replicas found the apply record: nothing more was asked.
        assert calls(sandbox, "key-globex-admin") == [LIST_TOOL, CREATE_TOOL]
    assert sum(w.subscriber_url == url for w in sandbox.store.webhooks.values()) == 1


def arrivals_settings(sandbox: RunningSandbox, tmp_path: Path) -> Settings:
    return make_settings(
        sandbox.url,
        rules_file=write_rules(tmp_path / "rules.yaml", "BOOKING_CREATED"),
        webhook_secrets_refresh=0.2,
    )


def replica(settings: Settings, redis: aioredis.Redis, name: str) -> Arrivals:
    async def apply(
        settings: Settings, redis: aioredis.Redis, target: Target
    ) -> ApplyResult | None:
        return await auto_apply(settings, redis, target=target, retry_delays=())

    return Arrivals(settings, redis, replica=name, apply=apply, concurrency=4)


async def test_one_replica_claims_a_new_connection_and_a_failed_apply_waits_for_the_claim(
    sandbox: RunningSandbox, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    """Two replicas' passes: the first claims and applies, the second finds the apply record;
    a connection that cannot be applied (no org id) is claimed once and not tried again until
    its claim expires; connections known at start-up are left to the start-up apply."""
    settings = arrivals_settings(sandbox, tmp_path)
    store = ConnectionStore.from_settings(settings, redis_client)
    old = await store.add("old", Credentials(api_key=SECOND_API_KEY), org_id=SECOND_ORG_ID)
    first, second = replica(settings, redis_client, "r1"), replica(settings, redis_client, "r2")
    await first.seed()
    await second.seed()
    globex = await store.add(
        "globex", Credentials(api_key=SECOND_API_KEY), org_id=SECOND_ORG_ID, base_url=sandbox.url
    )
    no_org = await store.add("no-org", Credentials(api_key=SECOND_API_KEY), base_url=sandbox.url)
    assert sorted(await first.check()) == sorted([globex.pcid, no_org.pcid])
    assert await second.check() == []  # both claimed by the first
    await eventually(lambda: not first.in_flight, what="the first replica's applies")
    assert [w.subscriber_url.endswith(f"calhooks=test.{globex.pcid}") for w in
            sandbox.store.webhooks.values()] == [True]  # fmt: skip
    assert await second.check() == []
    assert globex.pcid in second.known  # its apply record seen: never looked at again
    assert no_org.pcid not in second.known | first.known
    claim = first.store(no_org.pcid).claim_key
    assert await redis_client.get(claim) == b"r1"
    assert 0 < await redis_client.pttl(claim) <= CLAIM_TTL * 1000
    assert not await redis_client.exists(first.store(globex.pcid).claim_key)
    assert await first.check() == []  # the failed one waits for its claim to expire
    await redis_client.delete(claim)  # as if it expired
    assert await second.check() == [no_org.pcid]
    await eventually(lambda: not second.in_flight, what="the second replica's apply")
    assert old.pcid not in first.in_flight
    assert len(sandbox.store.webhooks) == 1


async def test_an_apply_that_waited_for_a_removal_makes_no_webhook(
    sandbox: RunningSandbox, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    """The connection is removed while an apply waits for the lock: the apply stops before
    generating a secret or calling Cal.com, and auto-apply does not retry it."""
    settings = arrivals_settings(sandbox, tmp_path)
    store = ConnectionStore.from_settings(settings, redis_client)
    info = await store.add(
        "globex", Credentials(api_key=SECOND_API_KEY), org_id=SECOND_ORG_ID, base_url=sandbox.url
    )
    connection = await store.get(info.pcid, tenant=None)
    assert connection is not None
    target = Target(connection)
    own = target.store(settings, redis_client)
    await store.remove(info.pcid)
    async with CalcomClient.from_settings(settings) as cal:
        with pytest.raises(TargetGoneError, match="was removed"):
            await apply_webhooks(
                target.client(cal),
                own,
                target.desired(settings, ["BOOKING_CREATED"]),
                refresh_interval=0.2,
                org_id=target.org_id,
                guard=target.guard(own),
            )
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    assert await auto_apply(settings, redis_client, target=target, sleep=sleep) is None
    assert waits == []
    assert sandbox.store.webhooks == {}
    assert sandbox.requests() == []
    assert await own.current() is None
