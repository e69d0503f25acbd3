"""The async client over real HTTP against the sandbox Cal.com: envelopes, errors, retries
(driven by the sandbox's fault injection), timeouts, dropped connections, pagination."""

from __future__ import annotations

import httpx
import pytest

from calhooks.service.calcom import (
    Backoff,
    CalcomClient,
    CalcomError,
    CalcomTransportError,
    Credentials,
    ToolValidationError,
)
from calhooks.service.sandbox import SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET
from tests.sandbox.server import RunningSandbox

USERS = "cal_organizations_users_controller_get_organizations_users"
USER_OOO = "cal_organizations_users_ooocontroller_get_organization_user_ooo"
CREATE_OOO = "cal_organizations_users_ooocontroller_create_organization_user_ooo"
WEBHOOKS = "cal_organizations_webhooks_controller_get_all_organization_webhooks"
CREATE_WEBHOOK = "cal_organizations_webhooks_controller_create_organization_webhook"


class Sleeps:
    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def client(sandbox: RunningSandbox, sleeps: Sleeps) -> CalcomClient:
    return sandbox.client(
        retries=3, backoff=Backoff(base=0.1, cap=5), sleep=sleeps, timeout=httpx.Timeout(0.5)
    )


async def test_success_unwraps_envelope_and_sends_bearer(
    client: CalcomClient, sandbox: RunningSandbox
) -> None:
    """A 200 returns `data`; the API key goes as Bearer and orgId comes from the client."""
    async with client:
        data = await client.call(USERS, emails=["alice@acme.example", "bob@acme.example"], take=10)
    assert [u["id"] for u in data] == [101, 102]
    sent = sandbox.requests(USERS)[0]
    assert (sent.method, sent.path) == ("GET", "/v2/organizations/1/users")
    assert sent.query == [
        ("take", "10"),
        ("emails", "alice@acme.example"),
        ("emails", "bob@acme.example"),
    ]
    assert sent.credential == "key-acme-admin"


async def test_body_parameters_go_in_json(client: CalcomClient, sandbox: RunningSandbox) -> None:
    """Body fields are sent as JSON; path params fill the template."""
    async with client:
        result = await client.call(
            CREATE_OOO, userId=101, start="2025-05-01T00:00:00.000Z", end="2025-05-02T00:00:00.000Z"
        )
    assert (result["userId"], result["end"]) == (101, "2025-05-02T23:59:59.999Z")
    sent = sandbox.requests(CREATE_OOO)[0]
    assert sent.path == "/v2/organizations/1/users/101/ooo"
    assert sent.body == {"start": "2025-05-01T00:00:00.000Z", "end": "2025-05-02T00:00:00.000Z"}


async def test_client_error_body_becomes_calcom_error(
    client: CalcomClient, sandbox: RunningSandbox
) -> None:
    """A 4xx is raised at once with Cal.com's code, message and X-Request-Id."""
    async with client:
        with pytest.raises(CalcomError) as caught:
            await client.call(USER_OOO, userId=999)
    error = caught.value
    assert (error.status, error.code) == (404, "NotFoundException")
    assert error.message == "User with id 999 is not part of the organization 1"
    assert error.request_id == sandbox.requests(USER_OOO)[0].id
    assert not error.retryable
    assert len(sandbox.requests()) == 1


async def test_429_waits_retry_after_then_succeeds(
    client: CalcomClient, sandbox: RunningSandbox, sleeps: Sleeps
) -> None:
    """A 429 with Retry-After waits that long, then retries."""
    sandbox.sandbox.faults.add(tool=USERS, status=429, retry_after=2, times=1)
    async with client:
        assert len(await client.call(USERS)) == 3
    assert sleeps.waits == [2.0]
    assert [r.status for r in sandbox.requests(USERS)] == [429, 200]


async def test_429_honours_rate_limit_reset_header(
    client: CalcomClient, sandbox: RunningSandbox, sleeps: Sleeps
) -> None:
    """Without Retry-After, Cal.com's X-RateLimit-Reset-Default says how long to wait."""
    sandbox.sandbox.faults.add(tool=USERS, status=429, reset=3, times=1)
    async with client:
        await client.call(USERS)
    assert sleeps.waits == [3.0]


async def test_wait_longer_than_cap_raises_with_retry_after(
    client: CalcomClient, sandbox: RunningSandbox, sleeps: Sleeps
) -> None:
    """When Cal.com asks for more than the back-off cap, the caller gets retry_after."""
    sandbox.sandbox.faults.add(tool=USERS, status=429, retry_after=60, times=1)
    async with client:
        with pytest.raises(CalcomError) as caught:
            await client.call(USERS)
    assert caught.value.retry_after == 60.0
    assert sleeps.waits == []


async def test_500_then_success_for_reads(
    client: CalcomClient, sandbox: RunningSandbox, sleeps: Sleeps
) -> None:
    """A GET that meets a 500 is retried after a jittered back-off within the ceiling."""
    sandbox.sandbox.faults.add(tool=USERS, status=500, times=1)
    sandbox.sandbox.faults.add(tool=USERS, status=503, times=1)
    async with client:
        assert len(await client.call(USERS)) == 3
    assert [r.status for r in sandbox.requests(USERS)] == [500, 503, 200]
    assert len(sleeps.waits) == 2
    assert 0 <= sleeps.waits[0] <= 0.1
    assert 0 <= sleeps.waits[1] <= 0.2


async def test_500_on_create_is_not_retried(client: CalcomClient, sandbox: RunningSandbox) -> None:
    """A POST that got a 5xx may have created the entity: it is not repeated."""
    sandbox.sandbox.faults.add(tool=CREATE_OOO, status=500, times=1)
    async with client:
        with pytest.raises(CalcomError) as caught:
            await client.call(
                CREATE_OOO, userId=101, start="2025-01-01T00:00:00Z", end="2025-01-01T00:00:00Z"
            )
    assert caught.value.status == 500
    assert len(sandbox.requests(CREATE_OOO)) == 1
    assert sandbox.store.ooo.keys() == {301}


async def test_retries_exhausted_raises_last_error(
    client: CalcomClient, sandbox: RunningSandbox
) -> None:
    """After `retries` extra attempts the last 5xx is raised."""
    sandbox.sandbox.faults.add(tool=USERS, status=502, times=4)
    async with client:
        with pytest.raises(CalcomError) as caught:
            await client.call(USERS)
    assert caught.value.status == 502
    assert len(sandbox.requests(USERS)) == 4


async def test_timeout_then_success(client: CalcomClient, sandbox: RunningSandbox) -> None:
    """A read timeout on a GET is retried; the second answer arrives in time."""
    sandbox.sandbox.faults.add(tool=USERS, latency=1.0, times=1)
    async with client:
        assert len(await client.call(USERS)) == 3
    assert len(sandbox.requests(USERS)) == 2


async def test_dropped_connection_is_retried_for_reads(
    client: CalcomClient, sandbox: RunningSandbox
) -> None:
    """A connection closed without an answer is retried for a GET."""
    sandbox.sandbox.faults.add(tool=USERS, drop=True, times=1)
    async with client:
        assert len(await client.call(USERS)) == 3
    assert [r.dropped for r in sandbox.requests(USERS)] == [True, False]


async def test_dropped_connection_on_create_is_not_retried(
    client: CalcomClient, sandbox: RunningSandbox
) -> None:
    """A POST whose connection dropped may have landed: transport error, one attempt."""
    sandbox.sandbox.faults.add(tool=CREATE_OOO, drop=True, times=1)
    async with client:
        with pytest.raises(CalcomTransportError):
            await client.call(
                CREATE_OOO, userId=101, start="2025-01-01T00:00:00Z", end="2025-01-01T00:00:00Z"
            )
    assert len(sandbox.requests(CREATE_OOO)) == 1


async def test_unreachable_raises_transport_error(sleeps: Sleeps) -> None:
    """Connection refused on every attempt ends in CalcomTransportError."""
    from calhooks.service.core.embedded_redis import free_port

    client = CalcomClient(base_url=f"http://127.0.0.1:{free_port()}", retries=2, sleep=sleeps)
    async with client:
        with pytest.raises(CalcomTransportError):
            await client.call(USERS, orgId=1)
    assert len(sleeps.waits) == 2


async def test_validation_error_sends_nothing(
    client: CalcomClient, sandbox: RunningSandbox
) -> None:
    """Invalid parameters raise before any request leaves the process."""
    async with client:
        with pytest.raises(ToolValidationError) as caught:
            await client.call(CREATE_OOO, userId="me", start="tomorrow")
    assert set(caught.value.parameters) >= {"userId", "start", "end"}
    assert sandbox.requests() == []


async def test_pagination_fetches_three_pages(
    client: CalcomClient, sandbox: RunningSandbox
) -> None:
    """paginate() walks take/skip until a short page."""
    async with client:
        created = [
            await client.call(
                CREATE_WEBHOOK,
                active=True,
                subscriberUrl=f"https://hooks.example/{n}",
                triggers=["BOOKING_CREATED"],
            )
            for n in range(5)
        ]
        items = [item async for item in client.paginate(WEBHOOKS, page_size=2)]
    assert [i["id"] for i in items] == [c["id"] for c in created]
    assert [dict(r.query) for r in sandbox.requests(WEBHOOKS)] == [
        {"take": "2", "skip": "0"},
        {"take": "2", "skip": "2"},
        {"take": "2", "skip": "4"},
    ]


async def test_platform_client_credentials(sandbox: RunningSandbox) -> None:
    """A platform client id + secret are sent as the x-cal-* pair."""
    creds = Credentials(client_id=SANDBOX_CLIENT_ID, client_secret=SANDBOX_CLIENT_SECRET)
    async with sandbox.client(credentials=creds) as client:
        await client.call(USERS)
    assert sandbox.requests(USERS)[0].credential == f"client:{SANDBOX_CLIENT_ID}"
