"""The intake's URL per connection: its own secrets only, its connection on every event."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from calhooks.service.calcom.client import Credentials
from calhooks.service.connections.store import ConnectionStore
from calhooks.service.core.embedded_redis import EmbeddedRedis
from calhooks.service.core.secretbox import SecretBox, generate_key
from calhooks.service.events import event_id
from calhooks.service.intake.connection_secrets import ConnectionSecrets
from calhooks.service.intake.secrets import EnvSecrets
from calhooks.service.subscriptions.secret_store import WebhookSecretStore
from tests.intake.conftest import PATH, SECRET, booking, signature
from tests.intake.test_endpoint import queued
from tests.waiting import eventually

KEY = generate_key()
DEPLOYMENT = "default"  # make_settings keeps CALHOOKS_WEBHOOK_DEPLOYMENT's default


async def add_connection(redis: aioredis.Redis, name: str, org_id: int) -> tuple[str, str]:
    """A stored connection and a current webhook secret in its own store: (PCID, secret)."""
    box = SecretBox(KEY)
    info = await ConnectionStore(redis, box).add(
        name, Credentials(api_key=f"cal_test_{name}"), org_id=org_id
    )
    store = WebhookSecretStore(redis, box, deployment=f"{DEPLOYMENT}.{info.pcid}")
    secret = await store.add(make_current=True)
    return info.pcid, secret.value


async def post(url: str, body: bytes, secret: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as http:
        return await http.post(
            url, content=body, headers={"x-cal-signature-256": signature(body, secret)}
        )


async def test_each_connection_verifies_with_its_own_secrets_only(
    serve: Any, redis_client: aioredis.Redis
) -> None:
    """Acme's delivery is queued with Acme's connection; signed for Acme and posted to
    Globex's URL, or to the environment's, it is 401 and nothing is queued."""
    acme, acme_secret = await add_connection(redis_client, "acme", 1)
    globex, globex_secret = await add_connection(redis_client, "globex", 2)
    served = serve(encryption_key=KEY)
    body = booking("shared-uid")

    crossed = await post(f"{served.url}{PATH}/{globex}", body, acme_secret)
    assert crossed.status_code == 401
    assert crossed.json()["error"] == "bad_signature"
    to_env = await post(served.url + PATH, body, acme_secret)
    assert to_env.status_code == 401
    env_to_acme = await post(f"{served.url}{PATH}/{acme}", body, SECRET)
    assert env_to_acme.status_code == 401
    assert await queued(redis_client) == []

    for pcid, secret in ((acme, acme_secret), (globex, globex_secret)):
        answer = await post(f"{served.url}{PATH}/{pcid}", body, secret)
        assert answer.status_code == 202, answer.text
        assert answer.json()["id"] == event_id(body, pcid)
    assert (await post(served.url + PATH, body, SECRET)).status_code == 202
    events = {event["connection"]: event for event in await queued(redis_client)}
    assert set(events) == {acme, globex, None}  # the same bytes: three events, three ids
    assert events[acme]["id"] == event_id(body, acme)
    assert events[None]["id"] == event_id(body)
    assert {event["source"] for event in events.values()} == {"webhook"}


async def test_an_unknown_pcid_is_refused_in_one_line_without_reading(
    serve: Any, redis_client: aioredis.Redis
) -> None:
    """A URL under the webhook path naming no connection: 401 unknown_connection, not queued."""
    served = serve(encryption_key=KEY)
    body = booking()
    for tail in ("no-such-connection", "a/b", "x" * 300, ""):
        answer = await post(f"{served.url}{PATH}/{tail}", body, SECRET)
        assert answer.status_code == 401, tail
        assert answer.json() == {
            "error": "unknown_connection",
            "message": "no connection has this URL (unknown PCID)",
        }
        assert "\n" not in answer.text
    assert await queued(redis_client) == []
    assert served.metric('calhooks_intake_deliveries_total{outcome="unknown_connection"}') >= 4


async def test_without_an_encryption_key_there_are_no_connection_urls(
    serve: Any, redis_client: aioredis.Redis
) -> None:
    """Zero configuration: the environment's URL works as before, any PCID URL is 401."""
    pcid, secret = await add_connection(redis_client, "acme", 1)
    served = serve()
    body = booking()
    assert (await post(f"{served.url}{PATH}/{pcid}", body, secret)).status_code == 401
    assert (await post(served.url + PATH, body, SECRET)).status_code == 202
    ready = served.get("/readyz").json()
    assert "connections" not in ready


async def test_a_connection_added_at_run_time_verifies_its_first_delivery(
    serve: Any, redis_client: aioredis.Redis
) -> None:
    """Added after the intake started (no refresh since): the unknown PCID reloads the
    connections and that connection's secrets before the delivery is answered."""
    served = serve(encryption_key=KEY, webhook_secrets_refresh=3600)
    pcid, secret = await add_connection(redis_client, "late", 4)
    answer = await post(f"{served.url}{PATH}/{pcid}", booking("late-1"), secret)
    assert answer.status_code == 202, answer.text
    [event] = await queued(redis_client)
    assert event["connection"] == pcid


async def test_a_rotated_secret_of_a_connection_is_found_at_once(
    serve: Any, redis_client: aioredis.Redis
) -> None:
    """A secret added to a connection's store after its last refresh: the mismatch reloads
    that connection's secrets first, so the delivery is accepted."""
    pcid, _ = await add_connection(redis_client, "acme", 1)
    served = serve(encryption_key=KEY, webhook_secrets_refresh=3600)
    store = WebhookSecretStore(redis_client, SecretBox(KEY), deployment=f"{DEPLOYMENT}.{pcid}")
    newer = await store.add(make_current=False)
    answer = await post(f"{served.url}{PATH}/{pcid}", booking("rotated"), newer.value)
    assert answer.status_code == 202, answer.text


async def test_a_removed_connection_stops_being_accepted(
    serve: Any, redis_client: aioredis.Redis
) -> None:
    """A connection removed from the store is dropped at the next refresh: 401."""
    pcid, secret = await add_connection(redis_client, "gone", 5)
    served = serve(encryption_key=KEY)
    assert (await post(f"{served.url}{PATH}/{pcid}", booking("1"), secret)).status_code == 202
    await ConnectionStore(redis_client, SecretBox(KEY)).remove(pcid)

    async def refused() -> bool:
        answer = await post(f"{served.url}{PATH}/{pcid}", booking("2"), secret)
        return answer.status_code == 401

    await eventually(refused, what="the removed connection refused")


async def test_readiness_counts_connections_and_a_secretless_one_is_no_reason(
    serve: Any, redis_client: aioredis.Redis
) -> None:
    """A connection without a secret yet leaves the pod ready; with connections only (no
    environment secret), one connection's secret is enough."""
    box = SecretBox(KEY)
    await ConnectionStore(redis_client, box).add(
        "bare", Credentials(api_key="cal_test_bare"), org_id=9
    )
    served = serve(encryption_key=KEY)
    ready = served.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["connections"] == {"known": 1, "with_secret": 0, "listing": "ok"}
    assert served.metric("calhooks_intake_connections") == 1
    assert served.metric("calhooks_intake_connections_with_secret") == 0

    only_connections = serve(encryption_key=KEY, webhook_secrets=None)
    assert only_connections.get("/readyz").status_code == 503
    await add_connection(redis_client, "acme", 1)

    def ready_now() -> bool:
        status: int = only_connections.get("/readyz").status_code
        return status == 200

    await eventually(ready_now, what="ready on a connection's secret")


@pytest.fixture
def own_redis(tmp_path: Path) -> Any:
    with EmbeddedRedis(directory=tmp_path / "redis") as server:
        yield server


async def test_a_redis_outage_keeps_connections_and_spools_with_the_connection(
    serve: Any, own_redis: EmbeddedRedis
) -> None:
    """Redis away: a known connection's deliveries are still verified, spooled, and replayed
    with their connection (same ids) once Redis is back."""
    client = aioredis.Redis.from_url(own_redis.url)
    try:
        pcid, secret = await add_connection(client, "acme", 1)
    finally:
        await client.aclose()
    served = serve(redis_url=own_redis.url, encryption_key=KEY)
    own_redis.stop()
    bodies = [booking(f"outage-{n}") for n in range(3)]
    for body in bodies:
        answer = await post(f"{served.url}{PATH}/{pcid}", body, secret)
        assert answer.status_code == 202, answer.text
    assert served.intake.spool.size > 0
    assert served.intake.connections.get(pcid) is not None
    own_redis.start()
    client = aioredis.Redis.from_url(own_redis.url)
    try:

        async def replayed() -> bool:
            return len(await queued(client)) == 3 and served.intake.spool.size == 0

        await eventually(replayed, what="the spool replayed")
        events = await queued(client)
        assert {e["connection"] for e in events} == {pcid}
        assert {e["id"] for e in events} == {event_id(body, pcid) for body in bodies}
    finally:
        await client.aclose()


async def test_unknown_pcids_share_one_listing_per_interval() -> None:
    """A flood of unknown PCIDs costs one listing per interval, never one per request; and
    what they name allocates nothing."""
    listings = 0

    async def listing() -> list[str]:
        nonlocal listings
        listings += 1
        await asyncio.sleep(0.01)
        return ["known"]

    secrets = ConnectionSecrets(
        listing, lambda pcid: [EnvSecrets.from_text("s")], min_refresh_interval=0.2
    )
    await secrets.refresh()
    assert listings == 1
    assert secrets.get("known") is not None
    found = await asyncio.gather(*(secrets.lookup(f"bogus-{n}") for n in range(50)))
    assert found == [None] * 50
    assert listings == 1 + 1  # the first of the flood waited for a new listing; the rest joined
    assert secrets.count == 1


async def test_a_failed_listing_keeps_the_known_connections() -> None:
    """The connection store unreadable: the providers known stay, with the reason kept."""
    answers: list[Any] = [["a", "b"], OSError("redis away")]

    async def listing() -> list[str]:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return list(answer)

    secrets = ConnectionSecrets(listing, lambda pcid: [EnvSecrets.from_text(pcid)])
    await secrets.refresh()
    await secrets.refresh()
    assert secrets.get("a") is not None
    assert secrets.get("b") is not None
    assert secrets.status() == {"known": 2, "with_secret": 2, "listing": "unavailable"}
