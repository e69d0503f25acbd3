"""The workers' httpx transport over aiohttp: same answers, same errors, as httpx's own."""

from __future__ import annotations

import gzip
import json
from collections.abc import AsyncIterator

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from calhooks.service.calcom import CalcomClient, CalcomError, CalcomTransportError, Credentials
from calhooks.service.core.embedded_redis import free_port
from calhooks.service.sandbox import SANDBOX_API_KEY
from calhooks.workers.transport import AiohttpTransport, http_client
from tests.sandbox.server import RunningSandbox
from tests.servers import serve_app

USERS = "cal_organizations_users_controller_get_organizations_users"
CREATE_OOO = "cal_organizations_users_ooocontroller_create_organization_user_ooo"


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    client = http_client(timeout=httpx.Timeout(5.0, connect=2.0), max_connections=10)
    yield client
    await client.aclose()


def calcom(url: str, http: httpx.AsyncClient, **options: object) -> CalcomClient:
    return CalcomClient(
        base_url=url,
        credentials=Credentials(api_key=SANDBOX_API_KEY),
        org_id=1,
        http=http,
        **options,  # type: ignore[arg-type]
    )


async def test_calls_and_errors_come_back_as_with_httpx(
    sandbox: RunningSandbox, http: httpx.AsyncClient
) -> None:
    """Data, Cal.com's error body and the rate-limit headers all arrive intact."""
    cal = calcom(sandbox.url, http)
    users = await cal.request(USERS, {"emails": ["bob@acme.example"]})
    assert [user["username"] for user in users.data] == ["bob"]
    assert "x-ratelimit-remaining-default" in users.headers
    with pytest.raises(CalcomError) as rejected:
        await cal.call(
            CREATE_OOO, userId=102, start="2031-01-02T00:00:00Z", end="2031-01-01T00:00:00Z"
        )
    assert rejected.value.status == 400
    assert rejected.value.code == "BadRequestException"
    seen = sandbox.requests(USERS)[-1]
    assert seen.query == [("emails", "bob@acme.example")]
    assert seen.credential is not None


async def test_nothing_listening_is_a_connect_error(http: httpx.AsyncClient) -> None:
    """A refused connection maps to httpx.ConnectError: the client knows nothing was sent."""
    cal = calcom(f"http://127.0.0.1:{free_port()}", http, retries=0)
    with pytest.raises(CalcomTransportError, match="ConnectError"):
        await cal.call(USERS)


async def test_a_slow_answer_is_a_read_timeout(sandbox: RunningSandbox) -> None:
    """Past the read timeout the call fails with httpx.ReadTimeout (it may have been sent)."""
    sandbox.sandbox.faults.add(tool=USERS, latency=1.0)
    client = http_client(timeout=httpx.Timeout(0.2), max_connections=2)
    try:
        with pytest.raises(CalcomTransportError, match="ReadTimeout"):
            await calcom(sandbox.url, client, retries=0).call(USERS)
    finally:
        await client.aclose()


async def test_a_dropped_connection_does_not_repeat_a_create(
    sandbox: RunningSandbox, http: httpx.AsyncClient
) -> None:
    """A connection closed without an answer is 'maybe sent': a POST is not retried."""
    sandbox.sandbox.faults.add(tool=CREATE_OOO, drop=True)
    cal = calcom(sandbox.url, http, retries=3)
    with pytest.raises(CalcomTransportError):
        await cal.call(
            CREATE_OOO, userId=102, start="2031-01-01T00:00:00Z", end="2031-01-02T00:00:00Z"
        )
    assert len(sandbox.requests(CREATE_OOO)) == 1


async def test_compressed_answers_are_decoded_once(http: httpx.AsyncClient) -> None:
    """A gzip body reaches the caller decoded, as httpx would decode it."""
    body = json.dumps({"status": "success", "data": [{"id": 1}]}).encode()

    async def gzipped(request: Request) -> Response:
        return Response(
            gzip.compress(body),
            headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
        )

    app = Starlette(routes=[Route("/v2/organizations/1/users", gzipped)])
    with serve_app(app) as url:
        assert await calcom(url, http).call(USERS) == [{"id": 1}]


def test_proxies_come_from_the_environment_once_per_host(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """HTTPS_PROXY applies, NO_PROXY exempts; read once, not on a thread per request."""
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.1,api.internal")
    transport = AiohttpTransport()
    assert transport._proxy(httpx.URL("https://api.cal.com/v2/me")) == "http://proxy.example:3128"
    assert transport._proxy(httpx.URL("https://api.internal/v2/me")) is None
    assert transport._proxy(httpx.URL("http://127.0.0.1:8080/v2/me")) is None
    monkeypatch.setenv("HTTPS_PROXY", "http://other.example:3128")
    assert transport._proxy(httpx.URL("https://api.cal.com/v2/x")) == "http://proxy.example:3128"
