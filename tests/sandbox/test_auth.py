"""Authentication and authorization as Cal.com's guards do them: API keys, platform clients,
the organization guard that keeps two organizations apart, and member-only operations."""

from __future__ import annotations

import httpx
import pytest

from calhooks.service.calcom import CalcomError, Credentials
from calhooks.service.sandbox import (
    DEPARTMENT_ATTRIBUTE_ID,
    MANAGED_API_KEY,
    MANAGED_ORG_ID,
    SANDBOX_CLIENT_ID,
    SANDBOX_CLIENT_SECRET,
    SANDBOX_MEMBER_API_KEY,
    SECOND_API_KEY,
    SECOND_ORG_ID,
    option_id,
)
from tests.sandbox.server import RunningSandbox

USERS = "cal_organizations_users_controller_get_organizations_users"
ATTRIBUTES = "cal_organizations_attributes_controller_get_organization_attributes"
UNASSIGN = (
    "cal_organizations_attributes_options_controller_"
    "unassign_organization_attribute_option_from_user"
)
UPDATE_MEMBERSHIP = "cal_organizations_memberships_controller_update_membership"


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({}, "ApiAuthStrategy - No authentication method provided"),
        ({"Authorization": "Bearer not-an-api-key"}, "ApiAuthStrategy - access token - "),
        ({"Authorization": "Basic YWxpY2U6c2VjcmV0"}, "ApiAuthStrategy - Invalid Bearer token"),
        (
            {"x-cal-client-id": SANDBOX_CLIENT_ID},
            "ApiAuthStrategy - x-cal-client-id provided without",
        ),
        (
            {"x-cal-secret-key": SANDBOX_CLIENT_SECRET},
            "ApiAuthStrategy - x-cal-secret-key provided without",
        ),
        (
            {"x-cal-client-id": SANDBOX_CLIENT_ID, "x-cal-secret-key": "wrong"},
            "ApiAuthStrategy - oAuth client - Invalid client secret",
        ),
        (
            {"x-cal-client-id": "nobody", "x-cal-secret-key": "x"},
            "ApiAuthStrategy - oAuth client - Client with ID nobody not found",
        ),
    ],
    ids=[
        "none",
        "access-token",
        "basic",
        "client-id-only",
        "secret-only",
        "bad-secret",
        "no-client",
    ],
)
async def test_credentials_rejected(
    headers: dict[str, str], message: str, sandbox: RunningSandbox
) -> None:
    """Every way of not being authenticated is a 401 UnauthorizedException."""
    async with httpx.AsyncClient(base_url=sandbox.url) as http:
        response = await http.get("/v2/organizations/1/users", headers=headers)
    assert response.status_code == 401
    error = response.json()["error"]
    assert error["code"] == "UnauthorizedException"
    assert error["message"].startswith(message)


async def test_platform_client_credentials(sandbox: RunningSandbox) -> None:
    """A platform client id + secret act for Acme; the log names the client, not the secret."""
    credentials = Credentials(client_id=SANDBOX_CLIENT_ID, client_secret=SANDBOX_CLIENT_SECRET)
    async with sandbox.client(credentials=credentials) as cal:
        users = await cal.call(USERS)
    assert [u["username"] for u in users] == ["alice", "bob", "carol"]
    record = sandbox.requests(USERS)[-1]
    assert record.credential == f"client:{SANDBOX_CLIENT_ID}"
    assert SANDBOX_CLIENT_SECRET not in str(record.to_dict())


async def test_two_organizations_are_kept_apart(sandbox: RunningSandbox) -> None:
    """Each key sees its own organization's users and is refused the other's."""
    async with sandbox.client() as acme, sandbox.client(SECOND_API_KEY, SECOND_ORG_ID) as globex:
        acme_users = await acme.call(USERS)
        globex_users = await globex.call(USERS)
        with pytest.raises(CalcomError) as caught:
            await globex.call(USERS, orgId=1)
    assert {u["username"] for u in acme_users} == {"alice", "bob", "carol"}
    assert {u["username"] for u in globex_users} == {"dave", "erin"}
    assert caught.value.status == 403
    assert [r.credential for r in sandbox.requests(USERS)] == [
        "key-acme-admin",
        "key-globex-admin",
        "key-globex-admin",
    ]


async def test_member_key_gets_member_operations_only(sandbox: RunningSandbox) -> None:
    """bob (MEMBER) may read attributes and unassign options, not list users (403)."""
    async with sandbox.client(SANDBOX_MEMBER_API_KEY) as cal:
        attributes = await cal.call(ATTRIBUTES)
        unassigned = await cal.call(UNASSIGN, userId=102, attributeOptionId=option_id("sales"))
        with pytest.raises(CalcomError) as caught:
            await cal.call(USERS)
    assert [a["id"] for a in attributes] == [DEPARTMENT_ATTRIBUTE_ID]
    assert unassigned["attributeOptionId"] == option_id("sales")
    assert (caught.value.status, caught.value.code) == (403, "ForbiddenException")
    assert "ORG_ADMIN" in caught.value.message


async def test_role_follows_the_membership(sandbox: RunningSandbox) -> None:
    """Demoting alice to MEMBER takes her key's admin rights away at once."""
    async with sandbox.client() as cal:
        await cal.call(UPDATE_MEMBERSHIP, membershipId=11, role="MEMBER")
        await cal.call(ATTRIBUTES)
        with pytest.raises(CalcomError) as caught:
            await cal.call(USERS)
    assert caught.value.status == 403


async def test_managed_organization_keys(sandbox: RunningSandbox) -> None:
    """A managed organization's key (seeded or just created) works on that organization only."""
    async with sandbox.client(MANAGED_API_KEY, MANAGED_ORG_ID) as labs:
        assert await labs.call(USERS) == []
        with pytest.raises(CalcomError):
            await labs.call(USERS, orgId=1)
    async with sandbox.client() as acme:
        created = await acme.call(
            "cal_organizations_controller_create_organization", name="Acme Studio"
        )
    async with sandbox.client(created["apiKey"], created["id"]) as studio:
        user = await studio.call(
            "cal_organizations_users_controller_create_organization_user",
            email="sam@studio.example",
        )
    assert sandbox.store.users[user["id"]].org_id == created["id"]
