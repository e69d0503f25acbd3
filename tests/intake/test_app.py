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
from tests.intake.conftest import booking, command


def test_livez_touches_nothing(serve: Any, tmp_path: Path) -> None:
    """/livez answers 200 even when Redis is unreachable."""
    from calhooks.service.core.embedded_redis import free_port

    served = serve(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    response = served.get("/livez")
    assert (response.status_code, response.json()) == (200, {"status": "live"})


def test_readyz_reports_redis_and_secrets(serve: Any) -> None:
    """/readyz is 200 with Redis answering and secrets loaded, and says what it checked."""
    body = serve().get("/readyz").json()
    assert body["status"] == "ready"
    assert body["redis"] == "ok"
    assert body["deliveries_to"] == "redis"
    assert body["secrets"]["ready"] is True
    assert body["secrets"]["valid"] == 1
    assert body["spool"]["bytes"] == 0


def test_readyz_unready_without_redis(serve: Any) -> None:
    """Redis unreachable: 503, with the reason in the body."""
    from calhooks.service.core.embedded_redis import free_port

    response = httpx.get(serve(redis_url=f"redis://127.0.0.1:{free_port()}/0").url + "/readyz")
    assert response.status_code == 503
    assert response.json()["redis"] == "unreachable"


def test_readyz_unready_until_the_secrets_file_exists(serve: Any, tmp_path: Path) -> None:
    """A configured secrets file that is missing keeps the pod out of the Service."""
    path = tmp_path / "secrets.json"
    served = serve(webhook_secrets=None, webhook_secrets_file=path)
    response = served.get("/readyz")
    assert response.status_code == 503
    assert response.json()["secrets"]["sources"][0]["loaded"] is False
    path.write_text("{}")
    deadline = time.monotonic() + 10
    while served.get("/readyz").status_code != 200:
        assert time.monotonic() < deadline, "never ready after the file appeared"
        time.sleep(0.05)


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
