"""The async client over real HTTP: envelopes, errors, retries, timeouts, pagination."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from service.calcom import (
    Backoff,
    CalcomClient,
    CalcomError,
    CalcomTransportError,
    Credentials,
    ToolValidationError,
)
from tests.calcom.scripted import Answer, ScriptedCalcom
from tests.servers import serve_app

USERS = "cal_organizations_users_controller_get_organizations_users"
CREATE_OOO = "cal_organizations_users_ooocontroller_create_organization_user_ooo"
WEBHOOKS = "cal_organizations_webhooks_controller_get_all_organization_webhooks"


def ok(data: object) -> dict[str, object]:
    return {"status": "success", "data": data}


def cal_error(code: str, message: str) -> dict[str, object]:
    return {
        "status": "error",
        "timestamp": "2025-01-01T00:00:00.000Z",
        "path": "/v2/x",
        "error": {"code": code, "message": message, "details": {"errors": []}},
    }


@pytest.fixture
def fake() -> ScriptedCalcom:
    return ScriptedCalcom()


@pytest.fixture
def base_url(fake: ScriptedCalcom) -> Iterator[str]:
    with serve_app(fake.app) as url:
        yield url


class Sleeps:
    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
async def client(base_url: str, sleeps: Sleeps) -> CalcomClient:
    return CalcomClient(
        base_url=base_url,
        credentials=Credentials(api_key="cal_test_abcdef123456"),
        org_id=7,
        retries=3,
        backoff=Backoff(base=0.1, cap=5),
        sleep=sleeps,
        timeout=httpx.Timeout(0.5),
    )


async def test_success_unwraps_envelope_and_sends_bearer(
    client: CalcomClient, fake: ScriptedCalcom
) -> None:
    """A 200 returns `data`; the API key goes as Bearer and orgId defaults from settings."""
    fake.answer("/v2/organizations/7/users", Answer(body=ok([{"id": 1, "email": "a@x.io"}])))
    data = await client.call(USERS, emails=["a@x.io", "b@x.io"], take=10)
    assert data == [{"id": 1, "email": "a@x.io"}]
    sent = fake.requests[0]
    assert sent.method == "GET"
    assert sent.query == [("take", "10"), ("emails", "a@x.io"), ("emails", "b@x.io")]
    assert sent.headers["authorization"] == "Bearer cal_test_abcdef123456"


async def test_body_parameters_go_in_json(client: CalcomClient, fake: ScriptedCalcom) -> None:
    """Body fields are sent as JSON; path params fill the template."""
    fake.answer("/v2/organizations/7/users/42/ooo", Answer(201, ok({"id": 5})))
    result = await client.call(
        CREATE_OOO, userId=42, start="2025-05-01T00:00:00.000Z", end="2025-05-02T00:00:00.000Z"
    )
    assert result == {"id": 5}
    assert fake.requests[0].body == {
        "start": "2025-05-01T00:00:00.000Z",
        "end": "2025-05-02T00:00:00.000Z",
    }


async def test_client_error_body_becomes_calcom_error(
    client: CalcomClient, fake: ScriptedCalcom
) -> None:
    """A 4xx is raised at once with Cal.com's code, message and X-Request-Id."""
    fake.answer(
        "/v2/organizations/7/users",
        Answer(404, cal_error("NotFoundException", "no such org"), {"X-Request-Id": "req-1"}),
    )
    with pytest.raises(CalcomError) as caught:
        await client.call(USERS)
    error = caught.value
    assert (error.status, error.code, error.message, error.request_id) == (
        404,
        "NotFoundException",
        "no such org",
        "req-1",
    )
    assert not error.retryable
    assert len(fake.requests) == 1


async def test_429_waits_retry_after_then_succeeds(
    client: CalcomClient, fake: ScriptedCalcom, sleeps: Sleeps
) -> None:
    """A 429 with Retry-After waits that long, then retries."""
    fake.answer(
        "/v2/organizations/7/users",
        Answer(429, cal_error("ThrottlerException", "Too many"), {"Retry-After": "2"}),
        Answer(body=ok([])),
    )
    assert await client.call(USERS) == []
    assert sleeps.waits == [2.0]
    assert len(fake.requests) == 2


async def test_429_honours_rate_limit_reset_header(
    client: CalcomClient, fake: ScriptedCalcom, sleeps: Sleeps
) -> None:
    """Without Retry-After, Cal.com's X-RateLimit-Reset-Default says how long to wait."""
    headers = {"X-RateLimit-Remaining-Default": "0", "X-RateLimit-Reset-Default": "3"}
    fake.answer(
        "/v2/organizations/7/users",
        Answer(429, cal_error("ThrottlerException", "Too many"), headers),
        Answer(body=ok([])),
    )
    await client.call(USERS)
    assert sleeps.waits == [3.0]


async def test_wait_longer_than_cap_raises_with_retry_after(
    client: CalcomClient, fake: ScriptedCalcom, sleeps: Sleeps
) -> None:
    """When Cal.com asks for more than the back-off cap, the caller gets retry_after."""
    fake.answer(
        "/v2/organizations/7/users",
        Answer(429, cal_error("ThrottlerException", "Too many"), {"Retry-After": "60"}),
    )
    with pytest.raises(CalcomError) as caught:
        await client.call(USERS)
    assert caught.value.retry_after == 60.0
    assert sleeps.waits == []


async def test_500_then_success_for_reads(
    client: CalcomClient, fake: ScriptedCalcom, sleeps: Sleeps
) -> None:
    """A GET that meets a 500 is retried after a jittered back-off within the ceiling."""
    fake.answer(
        "/v2/organizations/7/users",
        Answer(500, cal_error("INTERNAL_SERVER_ERROR", "boom")),
        Answer(503, cal_error("ServiceUnavailable", "later")),
        Answer(body=ok([{"id": 1}])),
    )
    assert await client.call(USERS) == [{"id": 1}]
    assert len(sleeps.waits) == 2
    assert 0 <= sleeps.waits[0] <= 0.1
    assert 0 <= sleeps.waits[1] <= 0.2


async def test_500_on_create_is_not_retried(client: CalcomClient, fake: ScriptedCalcom) -> None:
    """A POST that got a 5xx may have created the entity: it is not repeated."""
    fake.answer("/v2/organizations/7/users/1/ooo", Answer(500, cal_error("INTERNAL", "boom")))
    with pytest.raises(CalcomError) as caught:
        await client.call(
            CREATE_OOO, userId=1, start="2025-01-01T00:00:00Z", end="2025-01-01T00:00:00Z"
        )
    assert caught.value.status == 500
    assert len(fake.requests) == 1


async def test_retries_exhausted_raises_last_error(
    client: CalcomClient, fake: ScriptedCalcom
) -> None:
    """After `retries` extra attempts the last 5xx is raised."""
    fake.answer("/v2/organizations/7/users", *[Answer(502, cal_error("BadGateway", "x"))] * 4)
    with pytest.raises(CalcomError) as caught:
        await client.call(USERS)
    assert caught.value.status == 502
    assert len(fake.requests) == 4


async def test_timeout_then_success(client: CalcomClient, fake: ScriptedCalcom) -> None:
    """A read timeout on a GET is retried; the second answer arrives in time."""
    fake.answer(
        "/v2/organizations/7/users",
        Answer(body=ok([]), delay=1.0),
        Answer(body=ok([{"id": 2}])),
    )
    assert await client.call(USERS) == [{"id": 2}]
    assert len(fake.requests) == 2


async def test_unreachable_raises_transport_error(sleeps: Sleeps) -> None:
    """Connection refused on every attempt ends in CalcomTransportError."""
    from service.embedded_redis import free_port

    client = CalcomClient(base_url=f"http://127.0.0.1:{free_port()}", retries=2, sleep=sleeps)
    async with client:
        with pytest.raises(CalcomTransportError):
            await client.call(USERS, orgId=1)
    assert len(sleeps.waits) == 2


async def test_validation_error_sends_nothing(client: CalcomClient, fake: ScriptedCalcom) -> None:
    """Invalid parameters raise before any request leaves the process."""
    with pytest.raises(ToolValidationError) as caught:
        await client.call(CREATE_OOO, userId="me", start="tomorrow")
    assert set(caught.value.parameters) >= {"userId", "start", "end"}
    assert fake.requests == []


async def test_pagination_fetches_three_pages(client: CalcomClient, fake: ScriptedCalcom) -> None:
    """paginate() walks take/skip until a short page."""
    path = "/v2/organizations/7/webhooks"
    fake.answer(
        path,
        Answer(body=ok([{"id": "a"}, {"id": "b"}])),
        Answer(body=ok([{"id": "c"}, {"id": "d"}])),
        Answer(body=ok([{"id": "e"}])),
    )
    items = [item async for item in client.paginate(WEBHOOKS, page_size=2)]
    assert [i["id"] for i in items] == ["a", "b", "c", "d", "e"]
    assert [dict(r.query) for r in fake.requests] == [
        {"take": "2", "skip": "0"},
        {"take": "2", "skip": "2"},
        {"take": "2", "skip": "4"},
    ]


async def test_platform_client_credentials(base_url: str, fake: ScriptedCalcom) -> None:
    """A platform client id + secret are sent as the x-cal-* pair."""
    creds = Credentials(client_id="cid", client_secret="csecret")
    async with CalcomClient(base_url=base_url, credentials=creds, org_id=7) as client:
        await client.call(USERS)
    headers = fake.requests[0].headers
    assert headers["x-cal-client-id"] == "cid"
    assert headers["x-cal-secret-key"] == "csecret"
    assert "authorization" not in headers
