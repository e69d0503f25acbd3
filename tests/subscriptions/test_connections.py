"""Webhooks per connection against the sandbox's three organizations and the real intake.

Acme (org 1), Globex (org 2) and Acme Labs (org 3) are each a connection with its own key;
the environment's organization is Acme too (``CALHOOKS_API_KEY``), so Acme has two webhooks of
this deployment, which must stay apart.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from calhooks.service.app import create_app
from calhooks.service.calcom.client import CalcomClient, Credentials
from calhooks.service.connections.store import ConnectionInfo, ConnectionStore
from calhooks.service.core.embedded_redis import EmbeddedRedis
from calhooks.service.core.settings import Settings
from calhooks.service.events import event_id
from calhooks.service.sandbox import SANDBOX_ORG_ID
from calhooks.service.sandbox.seed import (
    MANAGED_API_KEY,
    MANAGED_ORG_ID,
    SANDBOX_API_KEY,
    SECOND_API_KEY,
    SECOND_ORG_ID,
)
from calhooks.service.subscriptions.remote import CREATE_TOOL
from calhooks.service.subscriptions.rotate import rotate_secret
from calhooks.service.subscriptions.startup import auto_apply_all
from calhooks.service.subscriptions.targets import connection_targets
from tests.intake.test_endpoint import queued
from tests.sandbox.server import RunningSandbox
from tests.servers import serve_app
from tests.subscriptions.conftest import make_settings, write_rules
from tests.subscriptions.test_rotate import REFRESH, intake_settings, signed_with

#: (name, key, org id, the sandbox credential id that key is logged as)
ORGS = (
    ("acme", SANDBOX_API_KEY, SANDBOX_ORG_ID, "key-acme-admin"),
    ("globex", SECOND_API_KEY, SECOND_ORG_ID, "key-globex-admin"),
    ("acme-labs", MANAGED_API_KEY, MANAGED_ORG_ID, "key-acme-labs"),
)
#: How the sandbox emits an event in each organization.
EMIT: dict[str, dict[str, Any]] = {
    "acme": {"trigger": "BOOKING_CREATED", "user": "alice"},
    "globex": {"trigger": "BOOKING_CREATED", "user": "dave"},
    "acme-labs": {"trigger": "FORM_SUBMITTED", "orgId": MANAGED_ORG_ID},
}


@dataclass
class Deployment:
    url: str
    settings: Settings
    connections: dict[str, ConnectionInfo]


@pytest.fixture
async def deployment(
    sandbox: RunningSandbox,
    redis_server: EmbeddedRedis,
    redis_client: aioredis.Redis,  # flushed before the intake starts
    tmp_path: Path,
) -> AsyncIterator[Deployment]:
    """Three connections stored, and the intake served; settings whose public URL reaches it."""
    settings = intake_settings(
        sandbox,
        redis_server,
        tmp_path,
        rules_file=write_rules(tmp_path / "rules.yaml", "BOOKING_CREATED", "FORM_SUBMITTED"),
    )
    store = ConnectionStore.from_settings(settings, redis_client)
    connections = {
        name: await store.add(name, Credentials(api_key=key), org_id=org_id, base_url=sandbox.url)
        for name, key, org_id, _ in ORGS
    }
    with serve_app(create_app(settings, redis_url=redis_server.url)) as url:
        yield Deployment(url, settings.model_copy(update={"public_url": url}), connections)


def connection_url(deployment: Deployment, name: str) -> str:
    pcid = deployment.connections[name].pcid
    return f"{deployment.url}/webhooks/cal/{pcid}?calhooks=test.{pcid}"


async def emit(sandbox: RunningSandbox, name: str) -> list[dict[str, Any]]:
    """Have the sandbox deliver one event in ``name``'s organization; its deliveries."""
    response = await sandbox.admin("POST", "/events", json={**EMIT[name], "wait": True})
    assert response.status_code == 200, response.text
    deliveries: list[dict[str, Any]] = response.json()["deliveries"]
    return deliveries


async def test_auto_apply_makes_each_webhook_in_its_org_with_its_key_and_deliveries_carry_it(
    sandbox: RunningSandbox, deployment: Deployment, redis_client: aioredis.Redis
) -> None:
    """Start-up apply: the environment's webhook and one per connection, each created in its
    organization by its own key; each organization's delivery is queued with its connection."""
    results = await auto_apply_all(deployment.settings, redis_client)
    assert len(results) == 4
    assert all(r is not None and r.changed for r in results)
    hooks = {w.subscriber_url: w for w in sandbox.store.webhooks.values()}
    assert set(hooks) == {
        f"{deployment.url}/webhooks/cal?calhooks=test",
        *(connection_url(deployment, name) for name, *_ in ORGS),
    }
    creates = {
        r.body["subscriberUrl"]: (r.credential, r.path)
        for r in sandbox.requests(CREATE_TOOL)
        if r.status == 201
    }
    for name, _, org_id, credential in ORGS:
        assert creates[connection_url(deployment, name)] == (
            credential,
            f"/v2/organizations/{org_id}/webhooks",
        ), name
    assert creates[f"{deployment.url}/webhooks/cal?calhooks=test"][0] == "key-acme-admin"
    secrets = {w.secret for w in sandbox.store.webhooks.values()}
    assert len(secrets) == 4  # every organization signs with secrets of its own

    statuses = {name: [d["status"] for d in await emit(sandbox, name)] for name, *_ in ORGS}
    assert statuses == {"acme": [202, 202], "globex": [202], "acme-labs": [202]}
    by_connection: dict[str | None, list[dict[str, Any]]] = {}
    for event in await queued(redis_client):
        by_connection.setdefault(event["connection"], []).append(event)
    pcids: dict[str | None, str | None] = {
        info.pcid: name for name, info in deployment.connections.items()
    }
    assert {pcids.get(key, key) for key in by_connection} == {
        None,
        "acme",
        "globex",
        "acme-labs",
    }
    assert all(len(events) == 1 for events in by_connection.values())

    again = await auto_apply_all(deployment.settings, redis_client)
    assert not any(r is not None and r.changed for r in again)  # in sync, Acme's two kept apart
    assert len(sandbox.store.webhooks) == 4


async def test_a_delivery_signed_for_one_org_is_refused_at_anothers_url(
    sandbox: RunningSandbox, deployment: Deployment, redis_client: aioredis.Redis
) -> None:
    """Acme's genuine delivery replayed to Globex's URL is 401, and nothing is queued."""
    await auto_apply_all(deployment.settings, redis_client)
    [acme_delivery] = [
        d for d in await emit(sandbox, "acme") if "/cal/" in d["url"]
    ]  # the connection's, not the environment's
    before = await queued(redis_client)
    globex = deployment.connections["globex"].pcid
    async with httpx.AsyncClient(timeout=10) as http:
        answer = await http.post(
            f"{deployment.url}/webhooks/cal/{globex}",
            content=acme_delivery["raw"].encode(),
            headers={"x-cal-signature-256": acme_delivery["signature"]},
        )
    assert answer.status_code == 401
    assert answer.json()["error"] == "bad_signature"
    assert await queued(redis_client) == before
    acme = deployment.connections["acme"].pcid
    assert event_id(acme_delivery["raw"].encode(), acme) in {e["id"] for e in before}


async def test_rotating_one_connection_rejects_no_delivery_and_leaves_the_others(
    sandbox: RunningSandbox, deployment: Deployment, redis_client: aioredis.Redis
) -> None:
    """Globex's secret rotated twice while Globex's events flow: every delivery accepted,
    the rotation waited for the intake replica, Acme's webhook keeps its secret."""
    await auto_apply_all(deployment.settings, redis_client)
    settings = deployment.settings
    [acme_target] = await connection_targets(settings, redis_client, ["acme"], everything=False)
    [globex] = await connection_targets(settings, redis_client, ["globex"], everything=False)
    acme_hook = next(
        w for w in sandbox.store.webhooks.values() if w.subscriber_url.endswith(
            f"calhooks=test.{acme_target.pcid}"
        )
    )  # fmt: skip
    acme_secret = acme_hook.secret
    store = globex.store(settings, redis_client)
    desired_for = globex.desired(settings, ["BOOKING_CREATED", "FORM_SUBMITTED"])
    first = await store.current()
    assert first is not None
    done = asyncio.Event()

    async def flow() -> list[dict[str, Any]]:
        seen: list[dict[str, Any]] = []
        while not done.is_set() and len(seen) < 500:
            seen += await emit(sandbox, "globex")
            await asyncio.sleep(0.01)
        return seen

    emitter = asyncio.create_task(flow())
    async with CalcomClient.from_settings(settings) as base:
        cal = globex.client(base)
        rotations = []
        for _ in range(2):
            await asyncio.sleep(0.2)
            rotations.append(
                await rotate_secret(
                    cal,
                    store,
                    desired_for,
                    grace=60,
                    refresh_interval=REFRESH,
                    org_id=globex.org_id,
                )
            )
        await asyncio.sleep(0.2)
        done.set()
        deliveries = await emitter
    assert len(deliveries) > 5
    assert {d["status"] for d in deliveries} == {202}, [d["response"] for d in deliveries][:3]
    assert all(len(r.replicas) == 1 for r in rotations)
    secrets = [first, *(r.new for r in rotations)]
    assert sum(any(signed_with(d, s.value) for s in secrets) for d in deliveries) == len(deliveries)
    assert any(signed_with(d, rotations[-1].new.value) for d in deliveries)
    assert sandbox.store.webhooks[acme_hook.id].secret == acme_secret
    updates = sandbox.requests("cal_organizations_webhooks_controller_update_org_webhook")
    assert {r.credential for r in updates} == {"key-globex-admin"}


async def test_without_environment_credentials_only_the_connections_are_applied(
    sandbox: RunningSandbox, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    """No CALHOOKS_API_KEY: start-up apply does the connections and leaves the environment's
    organization alone (it has no credentials to act with); a connection without an org id is
    reported, never raised."""
    settings = make_settings(
        sandbox.url,
        api_key=None,
        org_id=None,
        rules_file=write_rules(tmp_path / "rules.yaml", "BOOKING_CREATED"),
    )
    store = ConnectionStore.from_settings(settings, redis_client)
    globex = await store.add(
        "globex", Credentials(api_key=SECOND_API_KEY), org_id=SECOND_ORG_ID, base_url=sandbox.url
    )
    await store.add("no-org", Credentials(api_key=SECOND_API_KEY), base_url=sandbox.url)
    results = await auto_apply_all(settings, redis_client)
    assert len(results) == 2
    assert sum(r is not None for r in results) == 1
    [hook] = sandbox.store.webhooks.values()
    assert hook.subscriber_url == (
        f"https://hooks.example.com/webhooks/cal/{globex.pcid}?calhooks=test.{globex.pcid}"
    )
