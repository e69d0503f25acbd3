"""The admin surface: event requests checked, reset to seeded or empty, state, the request
log (which never holds a credential), rate-limit settings."""

from __future__ import annotations

import json

import httpx
import pytest

from calhooks.service.calcom.webhooks import WEBHOOK_TRIGGERS
from calhooks.service.sandbox import (
    SANDBOX_API_KEY,
    SANDBOX_CLIENT_SECRET,
    SECOND_API_KEY,
    SECOND_ORG_ID,
    SUPPORTED_TRIGGERS,
    create_app,
)
from tests.sandbox.server import RunningSandbox

USERS = "cal_organizations_users_controller_get_organizations_users"


@pytest.mark.parametrize(
    ("request_body", "status", "message"),
    [
        ({"trigger": "BOOKING_PAID"}, 400, "trigger 'BOOKING_PAID' is not supported"),
        ({"trigger": "PING"}, 400, "is not supported"),
        ({"trigger": "BOOKING_CREATED", "user": "zed"}, 404, "no sandbox user 'zed'"),
        (
            {"trigger": "BOOKING_CREATED", "user": "dave", "orgId": 1},
            404,
            "no sandbox user 'dave' in organization 1",
        ),
        ({"trigger": "BOOKING_CREATED", "eventType": ""}, 400, "invalid request"),
        ({"user": "alice"}, 400, "invalid request"),
        ({"trigger": "OOO_CREATED", "attendee": {"mail": "x"}}, 400, "invalid request"),
    ],
)
async def test_event_requests_are_checked(
    request_body: dict[str, object], status: int, message: str, sandbox: RunningSandbox
) -> None:
    """Bad event requests get a clear error and send nothing."""
    async with sandbox.client() as cal:
        await cal.call(
            "cal_organizations_webhooks_controller_create_organization_webhook",
            active=True,
            subscriberUrl="http://127.0.0.1:9/everything",
            triggers=list(WEBHOOK_TRIGGERS),
        )
    response = await sandbox.admin("POST", "/events", json=request_body)
    assert response.status_code == status
    assert message in response.json()["error"]
    assert await sandbox.deliveries() == []


async def test_event_user_by_email_id_or_default(sandbox: RunningSandbox) -> None:
    """The user may be a username, an email or an id; without one, the org's first user."""
    organizers = []
    for user in ("carol@acme.example", 102, None):
        spec = {"trigger": "BOOKING_CREATED", **({"user": user} if user is not None else {})}
        answer = (await sandbox.admin("POST", "/events", json=spec)).json()
        organizers.append(answer["body"]["payload"]["organizer"]["id"])
    second = await sandbox.admin("POST", "/events", json={"trigger": "FORM_SUBMITTED", "orgId": 2})
    assert organizers == [103, 102, 101]
    assert second.json()["body"]["payload"]["teamId"] == SECOND_ORG_ID


async def test_emitted_ooo_is_a_real_entry(sandbox: RunningSandbox) -> None:
    """An emitted OOO_CREATED describes an entry the API then lists."""
    answer = (
        await sandbox.admin("POST", "/events", json={"trigger": "OOO_CREATED", "user": "bob"})
    ).json()
    entry = answer["body"]["payload"]["oooEntry"]
    async with sandbox.client() as cal:
        listed = await cal.call(
            "cal_organizations_users_ooocontroller_get_organization_user_ooo", userId=102
        )
    assert [e["id"] for e in listed] == [entry["id"]]
    assert entry["toUser"]["id"] == 101


async def test_reset_to_empty_and_back(sandbox: RunningSandbox) -> None:
    """Empty keeps organizations and keys but no people; a plain reset keeps the mode."""
    state = (await sandbox.admin("POST", "/reset", json={"empty": True})).json()
    assert (state["seeded"], state["users"]) == (False, [])
    assert [o["id"] for o in state["organizations"]] == [1, 2, 3]
    async with sandbox.client() as cal:
        assert await cal.call(USERS) == []
        assert (
            await cal.call("cal_organizations_attributes_controller_get_organization_attributes")
            == []
        )
    again = (await sandbox.admin("POST", "/reset")).json()
    assert again["seeded"] is False
    seeded = (await sandbox.admin("POST", "/reset", json={"empty": False})).json()
    assert len(seeded["users"]) == 5


def test_empty_app() -> None:
    """create_app(seeded=False) starts bare: the keys exist, nobody else does."""
    sandbox = create_app(seeded=False).state.sandbox
    assert sandbox.store.users == {}
    assert SANDBOX_API_KEY in sandbox.store.api_keys


async def test_state(sandbox: RunningSandbox) -> None:
    """The state names the organizations, credentials and counts."""
    state = (await sandbox.admin("GET", "/state")).json()
    assert [(o["id"], o["managedBy"]) for o in state["organizations"]] == [
        (1, None),
        (2, None),
        (3, 1),
    ]
    assert {k["key"] for k in state["apiKeys"]} >= {SANDBOX_API_KEY, SECOND_API_KEY}
    assert state["counts"]["options"] == 3
    assert state["rateLimit"]["limit"] == 120


async def test_request_log_never_holds_credentials(sandbox: RunningSandbox) -> None:
    """The log says which credential was used by id; no key or secret appears in it."""
    async with sandbox.client() as acme, sandbox.client(SECOND_API_KEY, SECOND_ORG_ID) as globex:
        await acme.call(USERS)
        await globex.call(USERS)
        await acme.call("cal_organizations_attributes_controller_get_organization_attributes")
    logged = await sandbox.admin("GET", "/requests", params={"tool": USERS})
    records = logged.json()["requests"]
    assert [(r["tool"], r["credential"], r["status"]) for r in records] == [
        (USERS, "key-acme-admin", 200),
        (USERS, "key-globex-admin", 200),
    ]
    text = json.dumps((await sandbox.admin("GET", "/requests")).json())
    for secret in (SANDBOX_API_KEY, SECOND_API_KEY, SANDBOX_CLIENT_SECRET):
        assert secret not in text
    await sandbox.admin("DELETE", "/requests")
    assert sandbox.requests() == []


async def test_rate_limit_settings(sandbox: RunningSandbox) -> None:
    """The limit can be read and changed; nonsense is refused."""
    assert (await sandbox.admin("GET", "/rate-limit")).json()["enabled"] is True
    bad = await sandbox.admin("PUT", "/rate-limit", json={"limit": 0})
    assert bad.status_code == 400
    changed = await sandbox.admin(
        "PUT", "/rate-limit", json={"limit": 5, "window": 10, "clientLimit": 9}
    )
    assert changed.json() == {
        "enabled": True,
        "limit": 5,
        "window": 10.0,
        "block": None,
        "clientLimit": 9,
    }


async def test_admin_body_must_be_json(sandbox: RunningSandbox) -> None:
    response = await sandbox.admin("POST", "/events", content=b"{nope")
    assert response.status_code == 400
    assert response.json()["error"].startswith("body is not JSON")


async def test_admin_needs_no_key_and_is_not_throttled(sandbox: RunningSandbox) -> None:
    """Admin calls carry no Cal.com credentials and do not count against the limit."""
    await sandbox.admin("PUT", "/rate-limit", json={"limit": 1})
    async with httpx.AsyncClient(base_url=sandbox.url) as http:
        answers = [(await http.get("/_sandbox/state")).status_code for _ in range(3)]
    assert answers == [200, 200, 200]
    assert len(SUPPORTED_TRIGGERS) == 9
