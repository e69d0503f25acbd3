"""The worker's probe server: liveness from its loop, readiness from Redis, metrics on scrape."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from calhooks.workers.health import Liveness, Metrics, ProbeServer, Readiness, Reply
from calhooks.workers.metrics import CALCOM_CALLS, render


class State:
    def __init__(self) -> None:
        self.last_turn = 0.0
        self.taking_jobs = True
        self.redis_up = True
        self.refreshed = 0

    async def ping(self) -> bool:
        if not self.redis_up:
            raise ConnectionError("redis down")
        return True

    async def refresh(self) -> None:
        self.refreshed += 1


@pytest.fixture
def state() -> State:
    return State()


@pytest.fixture
async def base_url(state: State) -> AsyncIterator[str]:
    server = ProbeServer(
        {
            "/livez": Liveness(lambda: state.last_turn, stale_after=5),
            "/readyz": Readiness(state.ping, lambda: state.taking_jobs),
            "/metrics": Metrics(state.refresh, render),
        },
        host="127.0.0.1",
        port=0,
    )
    await server.start()
    yield f"http://127.0.0.1:{server.port}"
    await server.stop()


async def test_liveness_follows_the_worker_loop(base_url: str, state: State) -> None:
    """Alive while the loop turned recently; 503 once it has not turned for too long."""
    loop = asyncio.get_running_loop()
    async with httpx.AsyncClient(base_url=base_url) as http:
        state.last_turn = loop.time()
        assert (await http.get("/livez")).status_code == 200
        state.last_turn = loop.time() - 60
        answer = await http.get("/livez")
        assert answer.status_code == 503
        assert "stalled" in answer.text


async def test_readiness_needs_redis_and_a_worker_taking_jobs(base_url: str, state: State) -> None:
    """Not ready while Redis is down or the worker drains; ready otherwise."""
    async with httpx.AsyncClient(base_url=base_url) as http:
        assert (await http.get("/readyz")).status_code == 200
        state.redis_up = False
        assert (await http.get("/readyz")).text == "redis: ConnectionError\n"
        state.redis_up, state.taking_jobs = True, False
        assert (await http.get("/readyz")).status_code == 503


async def test_metrics_are_refreshed_and_rendered_for_prometheus(
    base_url: str, state: State
) -> None:
    """A scrape refreshes the gauges and returns the text exposition format."""
    CALCOM_CALLS.labels(connection="env", tool="cal_x", status="201").inc()
    async with httpx.AsyncClient(base_url=base_url) as http:
        answer = await http.get("/metrics")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert 'calhooks_calcom_calls_total{connection="env",status="201",tool="cal_x"}' in answer.text
    assert state.refreshed == 1


async def test_unknown_paths_and_methods_are_refused(base_url: str) -> None:
    """Only GET/HEAD on the three paths; anything else is 404 or 405, never a dropped socket."""
    async with httpx.AsyncClient(base_url=base_url) as http:
        assert (await http.get("/nope")).status_code == 404
        assert (await http.post("/livez")).status_code == 405
        head = await http.head("/readyz")
        assert (head.status_code, head.content) == (200, b"")


async def test_a_failing_handler_answers_503() -> None:
    """A probe handler that raises still produces an answer."""

    async def broken() -> Reply:
        raise RuntimeError("boom")

    server = ProbeServer({"/readyz": broken}, host="127.0.0.1", port=0)
    await server.start()
    try:
        async with httpx.AsyncClient() as http:
            answer = await http.get(f"http://127.0.0.1:{server.port}/readyz")
        assert answer.status_code == 503
    finally:
        await server.stop()
