"""Redis outages: deliveries spooled and answered 202, replayed when Redis returns, none lost."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from structlog.testing import capture_logs

from calhooks.service.core.embedded_redis import EmbeddedRedis
from calhooks.service.events import event_id
from tests.intake.conftest import booking, command, compact
from tests.waiting import eventually


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    """A redis-server of this test alone, which it may kill and restart on the same port."""
    with EmbeddedRedis(directory=tmp_path / "redis") as server:
        yield server


async def queued_ids(url: str) -> list[str]:
    client = aioredis.Redis.from_url(url)
    try:
        return sorted(i.decode() for i in await command(client, "ZRANGE", "arq:queue", 0, -1))
    finally:
        await client.aclose()


async def test_killed_redis_deliveries_are_spooled_then_replayed_once(
    serve: Any, own_redis: EmbeddedRedis
) -> None:
    """Redis killed mid-test: 202s from the spool; after a restart every event queued once."""
    served = serve(redis_url=own_redis.url)
    before = booking("before")
    assert served.post(before).status_code == 202
    own_redis.stop()
    during = [booking(f"during-{n}") for n in range(20)]
    answers = [served.post(body) for body in during]
    assert [a.status_code for a in answers] == [202] * 20
    assert [a.json()["id"] for a in answers] == [event_id(b) for b in during]
    # The same deliveries again, and one already queued before the outage: spooled too.
    assert served.post(during[0]).status_code == 202
    assert served.post(before).status_code == 202
    assert served.intake.spool.size > 0
    ready = served.get("/readyz")
    assert ready.status_code == 200  # the spool takes deliveries: the pod stays in service
    assert (ready.json()["deliveries_to"], ready.json()["redis"]) == ("spool", "unreachable")

    own_redis.start()
    expected = sorted(event_id(b) for b in [before, *during])

    async def replayed() -> bool:
        return await queued_ids(own_redis.url) == expected and served.intake.spool.size == 0

    await eventually(replayed, what="the spool to be replayed")
    assert list((served.intake.spool.directory).glob("*.spool")) == []
    after = booking("after")
    assert served.post(after).status_code == 202
    assert served.post(during[1]).json() == {"id": event_id(during[1]), "duplicate": True}
    assert len(await queued_ids(own_redis.url)) == 22
    metrics = served.get("/metrics").text
    assert 'calhooks_intake_spool_replayed_total{result="duplicate"}' in metrics
    assert "calhooks_intake_redis_up 1.0" in metrics


async def stalled(url: str) -> bool:
    """Whether Redis leaves a PING unanswered for 50 ms (it is busy in DEBUG SLEEP)."""
    async with aioredis.Redis.from_url(url, socket_timeout=0.05) as probe:
        try:
            await probe.ping()
        except (TimeoutError, aioredis.TimeoutError):
            return True
    return False


async def test_slow_redis_past_the_deadline_spools_without_double_queueing(
    serve: Any, own_redis: EmbeddedRedis
) -> None:
    """Redis too slow to answer in time: the delivery is spooled; it ends up queued once."""
    served = serve(redis_url=own_redis.url, redis_deadline=0.2)
    assert served.post(booking("warm")).status_code == 202
    spooled = 'calhooks_intake_deliveries_total{outcome="spooled"}'
    spooled_before = served.metric(spooled)
    blocker = aioredis.Redis.from_url(own_redis.url)
    stall = asyncio.create_task(command(blocker, "DEBUG", "SLEEP", "3.0"))
    await eventually(lambda: stalled(own_redis.url), what="Redis to stall")
    slow = booking("slow")
    response = await asyncio.to_thread(served.post, slow)
    assert response.status_code == 202
    assert not stall.done()  # answered while Redis was still stalled...
    await stall
    assert await asyncio.to_thread(served.metric, spooled) == spooled_before + 1  # ...from disk
    await blocker.aclose()
    expected = sorted([event_id(booking("warm")), event_id(slow)])

    async def settled() -> bool:
        return await queued_ids(own_redis.url) == expected and served.intake.spool.size == 0

    await eventually(settled, what="the slow delivery to be queued")


def test_no_redis_and_a_full_spool_gets_503(serve: Any, own_redis: EmbeddedRedis) -> None:
    """With Redis down, deliveries fill the spool; past its limit they get 503 + Retry-After."""
    served = serve(redis_url=own_redis.url, spool_max_bytes=1024 * 1024)
    own_redis.stop()
    statuses = []
    for n in range(14):
        body = compact(
            {"triggerEvent": "BOOKING_CREATED", "payload": {"n": n, "pad": "p" * 100_000}}
        )
        response = served.post(body)
        statuses.append(response.status_code)
        if response.status_code == 503:
            assert response.headers["retry-after"].isdigit()
            assert response.json()["error"] == "unavailable"
            break
    assert statuses[:10] == [202] * 10
    assert statuses[-1] == 503


def test_no_redis_and_no_spool_gets_503(
    serve: Any, own_redis: EmbeddedRedis, tmp_path: Path
) -> None:
    """With Redis down and a spool directory that cannot exist: 503, never a lost 202."""
    blocker = tmp_path / "file-not-dir"
    blocker.write_text("")
    served = serve(redis_url=own_redis.url, spool_dir=blocker / "spool")
    own_redis.stop()
    response = served.post(booking("nowhere"))
    assert response.status_code == 503
    assert "retry-after" in response.headers


def rendered_readiness_probe() -> dict[str, Any]:
    """The web container's readiness probe as deploy/kubernetes renders it (production)."""
    from tests.deploy.kustomize import container, find, render

    web = container(find(render("overlays/production"), "Deployment", "calhooks-web"), "web")
    probe: dict[str, Any] = web["readinessProbe"]
    return probe


class Kubelet:
    """Readiness as the kubelet judges it: an HTTP GET answered 200-399 within
    ``timeoutSeconds`` succeeds; ``failureThreshold`` failures in a row make the pod unready."""

    def __init__(self, probe: dict[str, Any], base_url: str) -> None:
        self.url = base_url + probe["httpGet"]["path"]
        self.timeout = float(probe["timeoutSeconds"])
        self.threshold = int(probe["failureThreshold"])

    def succeeds(self) -> bool:
        try:
            return 200 <= httpx.get(self.url, timeout=self.timeout).status_code < 400
        except httpx.TransportError:  # including the probe's timeout
            return False


def test_readiness_with_the_rendered_probe_through_a_redis_outage(
    serve: Any, own_redis: EmbeddedRedis, tmp_path: Path
) -> None:
    """Redis killed: more consecutive probes than the threshold all pass while deliveries are
    spooled; they are queued once Redis is back. Spool unwritable, then full: the probe fails
    (before any delivery is refused, for the full spool)."""
    from calhooks.service.core.embedded_redis import free_port

    probe = rendered_readiness_probe()
    served = serve(redis_url=own_redis.url, probe_port=free_port())
    kubelet = Kubelet(probe, served.probe_url)
    assert kubelet.succeeds()
    own_redis.stop()
    bodies = [booking(f"outage-{n}") for n in range(kubelet.threshold + 2)]
    for body in bodies:
        assert served.post(body).status_code == 202
        assert kubelet.succeeds(), served.get("/readyz").text
    own_redis.start()
    expected = sorted(event_id(b) for b in bodies)

    async def replayed() -> bool:
        return await queued_ids(own_redis.url) == expected and served.intake.spool.size == 0

    asyncio.run(eventually(replayed, what="the spooled deliveries to be queued"))
    assert kubelet.succeeds()

    # Redis away again and the spool directory gone (a file in its way): nothing can store.
    own_redis.stop()
    spool_dir = served.intake.spool.directory
    spool_dir.rename(tmp_path / "spool-moved")
    spool_dir.write_text("not a directory")
    assert [kubelet.succeeds() for _ in range(kubelet.threshold)] == [False] * kubelet.threshold
    body = served.get("/readyz").json()
    assert body["spool"]["state"] == "unwritable"
    assert body["reasons"] == ["redis unreachable and spool unwritable"]
    assert str(spool_dir) not in json.dumps(body)


def test_a_filling_spool_makes_the_pod_unready_before_it_refuses(
    serve: Any, own_redis: EmbeddedRedis
) -> None:
    """Without Redis, readiness fails once the spool lacks room for one more largest body,
    while deliveries that still fit are accepted."""
    from calhooks.service.core.embedded_redis import free_port

    kubelet = Kubelet(rendered_readiness_probe(), "")
    served = serve(
        redis_url=own_redis.url,
        probe_port=free_port(),
        spool_max_bytes=2 * 1024 * 1024,
        max_body_bytes=256 * 1024,
    )
    kubelet.url = served.probe_url + "/readyz"
    own_redis.stop()
    statuses = []
    for n in range(40):
        if not kubelet.succeeds():
            break
        body = compact(
            {"triggerEvent": "BOOKING_CREATED", "payload": {"n": n, "pad": "p" * 100_000}}
        )
        statuses.append(served.post(body).status_code)
    else:
        raise AssertionError("readiness never failed as the spool filled")
    assert statuses
    assert set(statuses) == {202}
    answer = served.get("/readyz")
    assert answer.status_code == 503
    assert answer.json()["spool"]["state"] == "full"
    assert served.metric("calhooks_intake_spool_writable") == 0


async def test_an_evicting_redis_is_said_loudly_but_deliveries_go_on(
    serve: Any, own_redis: EmbeddedRedis
) -> None:
    """maxmemory-policy other than noeviction: an error log at start, a warning in /readyz,
    the gauge at 0 - and the pod stays ready (its deliveries are still stored)."""
    client = aioredis.Redis.from_url(own_redis.url)
    await command(client, "CONFIG", "SET", "maxmemory-policy", "allkeys-lru")
    await client.aclose()
    with capture_logs() as logs:
        served = await asyncio.to_thread(serve, redis_url=own_redis.url)
    assert any(
        entry["event"] == "redis.eviction_unsafe" and entry["policy"] == "allkeys-lru"
        for entry in logs
    ), logs
    ready = await asyncio.to_thread(served.get, "/readyz")
    assert ready.status_code == 200
    body = ready.json()
    assert body["redis_maxmemory_policy"] == "allkeys-lru"
    assert any("allkeys-lru, not noeviction" in warning for warning in body["warnings"])
    assert await asyncio.to_thread(served.metric, "calhooks_intake_redis_noeviction") == 0
    assert (await asyncio.to_thread(served.post, booking("evictable"))).status_code == 202
