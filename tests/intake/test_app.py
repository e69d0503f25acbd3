"""The web app: probes, metrics, mounted apps, and no 500 whatever goes wrong."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import redis.asyncio as aioredis
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from calhooks.service.intake.secrets import WebhookSecret
from tests.intake.conftest import PATH, booking, command


def test_livez_touches_nothing(serve: Any, tmp_path: Path) -> None:
    """/livez answers 200 even when Redis is unreachable."""
    from calhooks.service.core.embedded_redis import free_port

    served = serve(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    response = served.get("/livez")
    assert (response.status_code, response.json()) == (200, {"status": "live"})


def test_readyz_reports_redis_and_secrets(serve: Any) -> None:
    """/readyz is 200 with Redis answering and secrets loaded, and says what it checked."""
    served = serve()
    body = served.get("/readyz").json()
    assert body["status"] == "ready"
    assert body["redis"] == "ok"
    assert body["accepts_to"] == "redis"
    assert body["deliveries_to"] == "redis"
    assert body["redis_maxmemory_policy"] == "noeviction"
    assert body["secrets"] == {
        "valid": 1,
        "sources": [{"name": "env", "state": "ok", "secrets": 1}],
    }
    assert body["spool"] == {"state": "ok", "bytes": 0, "limit": served.intake.spool.max_bytes}
    assert (body["reasons"], body["warnings"]) == ([], [])
    assert served.metric("calhooks_intake_ready") == 1
    assert served.metric("calhooks_intake_redis_noeviction") == 1


def test_readyz_stays_ready_without_redis_while_the_spool_takes_deliveries(serve: Any) -> None:
    """Redis unreachable: still 200 (deliveries go to the spool); Redis' state in body, gauge."""
    from calhooks.service.core.embedded_redis import free_port

    served = serve(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    response = served.get("/readyz")
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["redis"], body["accepts_to"]) == ("unreachable", "spool")
    assert body["warnings"] == ["redis unreachable: deliveries are spooled to disk"]
    assert served.metric("calhooks_intake_redis_up") == 0


def test_readyz_unready_until_the_secrets_file_exists(serve: Any, tmp_path: Path) -> None:
    """No valid secret at all keeps the pod out of the Service, and the body says so."""
    path = tmp_path / "secrets.json"
    served = serve(webhook_secrets=None, webhook_secrets_file=path)
    response = served.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["secrets"]["sources"] == [{"name": "file", "state": "unavailable", "secrets": 0}]
    assert body["reasons"] == ["no valid webhook secret: every delivery would get 401"]
    assert str(path) not in response.text  # paths and error text stay in the log
    assert served.metric("calhooks_intake_ready") == 0
    path.write_text("{}")  # loads, but holds no secret: still unready
    deadline = time.monotonic() + 10
    while (answer := served.get("/readyz")).json()["secrets"]["sources"][0]["state"] != "ok":
        assert time.monotonic() < deadline, "the file was never loaded"
        time.sleep(0.05)
    assert answer.status_code == 503
    path.write_text('{"secrets": ["whsec-test-from-file"]}')
    deadline = time.monotonic() + 10
    while served.get("/readyz").status_code != 200:
        assert time.monotonic() < deadline, "never ready after the file appeared"
        time.sleep(0.05)


def test_unsigned_deliveries_allowed_need_no_secret_to_be_ready(serve: Any) -> None:
    """With CALHOOKS_ALLOW_UNSIGNED a pod without secrets can still accept deliveries."""
    assert serve(webhook_secrets=None, allow_unsigned=True).get("/readyz").status_code == 200


def test_probes_answer_on_the_probe_port_only(serve: Any) -> None:
    """With CALHOOKS_PROBE_PORT, /livez, /readyz and /metrics are served there and nowhere
    else, and that port serves nothing else (no deliveries, no MCP)."""
    from calhooks.service.core.embedded_redis import free_port

    served = serve(probe_port=free_port())
    for path in ("/livez", "/readyz", "/metrics"):
        assert served.get(path).status_code == 200, path
        assert httpx.get(served.url + path).status_code == 404, path
    assert served.post(booking("public")).status_code == 202
    probe_port_delivery = httpx.post(
        served.probe_url + PATH, content=booking("probe"), headers={"x-cal-signature-256": "0" * 64}
    )
    assert probe_port_delivery.status_code == 404
    assert httpx.get(served.probe_url + "/cal-organizations").status_code == 404


async def test_metrics(serve: Any, redis_client: aioredis.Redis) -> None:
    """Outcome counters, latency histograms and the ready-jobs gauge (due jobs only)."""
    served = serve()
    served.post(booking("m1"))
    served.post(booking("m1"))
    served.post(booking("m2"), sig="0" * 64)
    await command(redis_client, "ZADD", "arq:queue", (time.time() + 3600) * 1000, "deferred")
    text = served.get("/metrics").text
    assert "calhooks_queue_ready_jobs 1.0" in text
    assert "calhooks_intake_webhook_secrets 1.0" in text
    assert "calhooks_intake_redis_up 1.0" in text
    for name in ("request_seconds_count", "enqueue_seconds_count"):
        assert f"calhooks_intake_{name} " in text
    for outcome in ("accepted", "duplicate", "bad_signature", "bad_body", "too_large"):
        assert f'calhooks_intake_deliveries_total{{outcome="{outcome}"}}' in text


async def boom(_: Request) -> Response:
    raise RuntimeError("a bug in a mounted route")


async def hello(_: Request) -> Response:
    return PlainTextResponse("hello")


def test_mounted_routes_and_lifespans(serve: Any) -> None:
    """Extra routes are served and extra lifespans run for the app's lifetime."""
    events: list[str] = []

    @contextlib.asynccontextmanager
    async def extra() -> AsyncIterator[None]:
        events.append("start")
        yield
        events.append("stop")

    served = serve(
        app_options={"routes": [Route("/cal-organizations", hello)], "lifespans": [extra]}
    )
    assert httpx.get(served.url + "/cal-organizations").text == "hello"
    assert events == ["start"]


def test_an_exception_in_any_route_is_a_503_not_a_500(serve: Any) -> None:
    """A route that raises is answered 503 with Retry-After (and logged), never 500."""
    served = serve(app_options={"routes": [Route("/boom", boom)]})
    response = httpx.get(served.url + "/boom")
    assert response.status_code == 503
    assert response.headers["retry-after"].isdigit()
    assert "Traceback" not in response.text


class ExplodingSource:
    """A secret source with a bug: once armed, it raises when asked for its secrets."""

    name = "exploding"
    loaded = True
    error: str | None = None
    armed = False

    def secrets(self) -> Sequence[WebhookSecret]:
        if self.armed:
            raise RuntimeError("bug in a secret source")
        return ()

    async def refresh(self) -> bool:
        return self.armed


def test_an_unexpected_error_in_the_intake_is_a_503(serve: Any) -> None:
    """The hot path catches its own bugs: 503 + Retry-After, counted as error, no 500."""
    source = ExplodingSource()
    served = serve(app_options={"secret_sources": [source]})
    source.armed = True
    served.intake.secrets._keys_until = -1.0  # recompute now, as a change would
    errors = 'calhooks_intake_deliveries_total{outcome="error"}'
    errors_before = served.metric(errors)
    response = served.post(booking("bug"))
    assert response.status_code == 503
    assert response.headers["retry-after"].isdigit()
    assert response.json()["error"] == "unavailable"
    assert served.metric(errors) == errors_before + 1
