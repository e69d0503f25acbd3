"""Each of the 37 tools through the real CalcomClient against the sandbox over HTTP: it
succeeds with a response that matches the tool's response schema and changes the state as
Cal.com would, and it is rejected where Cal.com rejects it."""

from __future__ import annotations

import copy
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

import pytest
from jsonschema import Draft202012Validator, FormatChecker

from calhooks.service.calcom import TOOLS, CalcomClient, CalcomError, Credentials, Tool
from calhooks.service.sandbox import (
    DEPARTMENT_ATTRIBUTE_ID,
    MANAGED_API_KEY,
    MANAGED_ORG_ID,
    SANDBOX_ORG_ID,
    SECOND_ORG_ID,
    option_id,
)
from tests.sandbox.server import RunningSandbox

ATTRIBUTE = DEPARTMENT_ATTRIBUTE_ID
OPTIONS = "cal_organizations_attributes_options_controller_"
HOOK_URL = "https://hooks.example/cal"
GOOGLE_KEY = {
    "private_key": "-----BEGIN PRIVATE KEY-----\nMIIEv...\n-----END PRIVATE KEY-----\n",
    "client_email": "calendar@acme-project.iam.gserviceaccount.com",
    "client_id": "104857600000000000001",
}

Prepare = Callable[[CalcomClient], Awaitable[dict[str, Any]]]
Check = Callable[[Any, RunningSandbox], None]


@dataclass(frozen=True)
class Scenario:
    """Parameters for a successful call, what to check after it, and a call Cal.com rejects."""

    success: Prepare
    check: Check
    reject: Prepare | None = None
    rejected: tuple[int, str] | None = None


def given(**params: Any) -> Prepare:
    async def prepare(_: CalcomClient) -> dict[str, Any]:
        return dict(params)

    return prepare


def nothing(_: Any, __: RunningSandbox) -> None:
    """No check beyond the response schema."""


def expect(predicate: Callable[[Any, RunningSandbox], bool]) -> Check:
    def check(data: Any, sandbox: RunningSandbox) -> None:
        assert predicate(data, sandbox), data

    return check


async def _webhook(cal: CalcomClient) -> str:
    created = await cal.call(
        "cal_organizations_webhooks_controller_create_organization_webhook",
        active=True,
        subscriberUrl=HOOK_URL,
        triggers=["BOOKING_CREATED"],
        secret="whsec_test",
    )
    return str(created["id"])


def with_webhook(**params: Any) -> Prepare:
    async def prepare(cal: CalcomClient) -> dict[str, Any]:
        return {"webhookId": await _webhook(cal), **params}

    return prepare


async def _attribute(cal: CalcomClient) -> str:
    created = await cal.call(
        "cal_organizations_attributes_controller_create_organization_attribute",
        name="Level",
        slug="level",
        type="TEXT",
        options=[],
    )
    return str(created["id"])


def with_credential(**params: Any) -> Prepare:
    async def prepare(cal: CalcomClient) -> dict[str, Any]:
        created = await cal.call(
            "cal_organizations_delegation_credential_controller_create_delegation_credential",
            workspacePlatformSlug="google",
            domain="acme.example",
            serviceAccountKey=GOOGLE_KEY,
        )
        return {"credentialId": created["id"], **params}

    return prepare


async def _created_attribute(cal: CalcomClient) -> dict[str, Any]:
    return {"attributeId": await _attribute(cal)}


def check_options_created(data: Any, sandbox: RunningSandbox) -> None:
    values = sorted(o.value for o in sandbox.store.options_of(data["id"]))
    assert values == ["Junior", "Senior"]


def check_assigned(data: Any, sandbox: RunningSandbox) -> None:
    assert data["attributeOptionId"] == option_id("engineering")
    assert data["memberId"] == 12  # bob's membership


def check_managed_key_works(data: Any, sandbox: RunningSandbox) -> None:
    assert data["apiKey"].startswith("cal_")
    assert sandbox.store.orgs[data["id"]].parent_id == SANDBOX_ORG_ID
    assert sandbox.store.api_keys[data["apiKey"]].org_id == data["id"]


def check_ooo_whole_days(data: Any, _: RunningSandbox) -> None:
    assert (data["start"], data["end"]) == ("2025-07-01T00:00:00.000Z", "2025-07-04T23:59:59.999Z")
    assert (data["userId"], data["toUserId"], data["reason"]) == (101, 102, "vacation")


SCENARIOS: dict[str, Scenario] = {
    "cal_organizations_attributes_controller_get_organization_attributes": Scenario(
        given(), expect(lambda data, _: [a["slug"] for a in data] == ["department"])
    ),
    "cal_organizations_attributes_controller_create_organization_attribute": Scenario(
        given(
            name="Level",
            slug="level",
            type="SINGLE_SELECT",
            options=[{"value": "Junior", "slug": "junior"}, {"value": "Senior", "slug": "senior"}],
        ),
        check_options_created,
        given(name="Dept", slug="department", type="TEXT", options=[]),
        (409, "CONFLICT"),
    ),
    "cal_organizations_attributes_controller_get_organization_attribute": Scenario(
        given(attributeId=ATTRIBUTE),
        expect(lambda data, _: data["teamId"] == SANDBOX_ORG_ID),
    ),
    "cal_organizations_attributes_controller_update_organization_attribute": Scenario(
        given(attributeId=ATTRIBUTE, name="Team", enabled=False),
        expect(lambda data, sb: sb.store.attributes[ATTRIBUTE].name == "Team"),
        given(attributeId="cnosuchattribute000000000", name="Team"),
        (404, "NotFoundException"),
    ),
    "cal_organizations_attributes_controller_delete_organization_attribute": Scenario(
        _created_attribute,
        expect(lambda data, sb: data["id"] not in sb.store.attributes),
        given(attributeId="cnosuchattribute000000000"),
        (404, "NotFoundException"),
    ),
    OPTIONS + "create_organization_attribute_option": Scenario(
        given(attributeId=ATTRIBUTE, value="Marketing", slug="marketing"),
        expect(lambda data, sb: sb.store.options[data["id"]].attribute_id == ATTRIBUTE),
        given(attributeId="cnosuchattribute000000000", value="x", slug="x"),
        (404, "NotFoundException"),
    ),
    OPTIONS + "get_organization_attribute_options": Scenario(
        given(attributeId=ATTRIBUTE),
        expect(lambda data, _: len(data) == 3),
        given(attributeId="cnosuchattribute000000000"),
        (404, "NotFoundException"),
    ),
    OPTIONS + "update_organization_attribute_option": Scenario(
        given(attributeId=ATTRIBUTE, optionId=option_id("sales"), value="Sales & BD"),
        expect(lambda data, _: (data["value"], data["slug"]) == ("Sales & BD", "sales")),
        given(attributeId=ATTRIBUTE, optionId="cnosuchoption000000000000", value="x"),
        (404, "NotFoundException"),
    ),
    OPTIONS + "delete_organization_attribute_option": Scenario(
        given(attributeId=ATTRIBUTE, optionId=option_id("support")),
        expect(lambda data, sb: data["id"] not in sb.store.options),
        given(attributeId=ATTRIBUTE, optionId="cnosuchoption000000000000"),
        (404, "NotFoundException"),
    ),
    OPTIONS + "assign_organization_attribute_option_to_user": Scenario(
        given(userId=102, attributeId=ATTRIBUTE, attributeOptionId=option_id("engineering")),
        check_assigned,
        given(userId=102, attributeId=ATTRIBUTE, attributeOptionId=option_id("sales")),
        (409, "CONFLICT"),
    ),
    OPTIONS + "unassign_organization_attribute_option_from_user": Scenario(
        given(userId=102, attributeOptionId=option_id("sales")),
        expect(lambda data, sb: data["id"] not in sb.store.assignments),
        given(userId=102, attributeOptionId=option_id("engineering")),
        (404, "NotFoundException"),
    ),
    "cal_organizations_controller_create_organization": Scenario(
        given(name="Acme Research", metadata={"region": "us", "tier": 2}),
        check_managed_key_works,
        given(name="Labs again", slug="acme-labs"),
        (409, "CONFLICT"),
    ),
    "cal_organizations_controller_get_organizations": Scenario(
        given(metadataKey="region", metadataValue="eu"),
        expect(lambda data, _: [o["id"] for o in data] == [MANAGED_ORG_ID]),
        given(metadataKey="region"),
        (400, "BadRequestException"),
    ),
    "cal_organizations_controller_get_organization": Scenario(
        given(managedOrganizationId=MANAGED_ORG_ID),
        expect(lambda data, _: data["slug"] == "acme-labs"),
        given(managedOrganizationId=SECOND_ORG_ID),
        (404, "NotFoundException"),
    ),
    "cal_organizations_controller_update_organization": Scenario(
        given(managedOrganizationId=MANAGED_ORG_ID, name="Acme Labs EU"),
        expect(lambda data, sb: sb.store.orgs[MANAGED_ORG_ID].name == "Acme Labs EU"),
        given(managedOrganizationId=999, name="Nope"),
        (404, "NotFoundException"),
    ),
    "cal_organizations_controller_delete_organization": Scenario(
        given(managedOrganizationId=MANAGED_ORG_ID),
        expect(lambda data, sb: MANAGED_API_KEY not in sb.store.api_keys),
        given(managedOrganizationId=999),
        (404, "NotFoundException"),
    ),
    "cal_organizations_delegation_credential_controller_create_delegation_credential": Scenario(
        given(workspacePlatformSlug="google", domain="acme.example", serviceAccountKey=GOOGLE_KEY),
        expect(
            lambda data, _: (
                (data["enabled"], data["workspacePlatform"]["slug"]) == (False, "google")
            )
        ),
        given(
            workspacePlatformSlug="office365", domain="acme.example", serviceAccountKey=GOOGLE_KEY
        ),
        (400, "BadRequestException"),
    ),
    "cal_organizations_delegation_credential_controller_update_delegation_credential": Scenario(
        with_credential(enabled=True),
        expect(lambda data, _: data["enabled"] is True),
        given(credentialId="cnosuchcredential00000000", enabled=True),
        (404, "NotFoundException"),
    ),
    "cal_organizations_memberships_controller_get_all_memberships": Scenario(
        given(take=2, skip=1),
        expect(lambda data, _: [m["id"] for m in data] == [12, 13]),
    ),
    "cal_organizations_memberships_controller_create_membership": Scenario(
        given(userId=201),
        expect(
            lambda data, _: (data["role"], data["accepted"], data["teamId"]) == ("MEMBER", False, 1)
        ),
        given(userId=101, role="MEMBER"),
        (409, "CONFLICT"),
    ),
    "cal_organizations_memberships_controller_get_org_membership": Scenario(
        given(membershipId=11),
        expect(lambda data, _: data["attributes"][0]["option"] == "Engineering"),
        given(membershipId=21),
        (404, "NotFoundException"),
    ),
    "cal_organizations_memberships_controller_update_membership": Scenario(
        given(membershipId=12, role="ADMIN"),
        expect(lambda data, sb: sb.store.memberships[12].role == "ADMIN"),
        given(membershipId=999, role="ADMIN"),
        (404, "NotFoundException"),
    ),
    "cal_organizations_memberships_controller_delete_membership": Scenario(
        given(membershipId=13),
        expect(lambda data, sb: 13 not in sb.store.memberships),
        given(membershipId=999),
        (404, "NotFoundException"),
    ),
    "cal_organizations_users_controller_get_organizations_users": Scenario(
        given(emails=["alice@acme.example", "BOB@acme.example"]),
        expect(lambda data, _: [u["username"] for u in data] == ["alice", "bob"]),
    ),
    "cal_organizations_users_controller_create_organization_user": Scenario(
        given(email="Dana@Acme.example", timeZone="America/Chicago", organizationRole="ADMIN"),
        expect(
            lambda data, sb: (
                data["email"] == "dana@acme.example"
                and data["username"] == "dana"
                and sb.store.membership_of(1, data["id"]) is not None
            )
        ),
        given(email="alice@acme.example"),
        (409, "CONFLICT"),
    ),
    "cal_organizations_users_controller_update_organization_user": Scenario(
        given(userId=102, bio="Sales lead", weekday="Tuesday"),
        expect(lambda data, _: (data["bio"], data["weekStart"]) == ("Sales lead", "Tuesday")),
        given(userId=201, bio="not ours"),
        (404, "NotFoundException"),
    ),
    "cal_organizations_users_controller_delete_organization_user": Scenario(
        given(userId=103),
        expect(lambda data, sb: 103 not in sb.store.users),
        given(userId=999),
        (404, "NotFoundException"),
    ),
    "cal_organizations_users_ooocontroller_get_organization_user_ooo": Scenario(
        given(userId=103, sortStart="desc"),
        expect(lambda data, _: [e["id"] for e in data] == [301]),
        given(userId=201),
        (404, "NotFoundException"),
    ),
    "cal_organizations_users_ooocontroller_create_organization_user_ooo": Scenario(
        given(
            userId=101,
            start="2025-07-01T09:30:00Z",
            end="2025-07-04T08:00:00.250Z",
            reason="vacation",
            toUserId=102,
        ),
        check_ooo_whole_days,
        given(userId=101, start="2025-07-04T00:00:00Z", end="2025-07-01T00:00:00Z"),
        (400, "BadRequestException"),
    ),
    "cal_organizations_users_ooocontroller_update_organization_user_ooo": Scenario(
        given(userId=103, oooId=301, notes="Back on Monday", reason="travel"),
        expect(lambda data, _: (data["notes"], data["reason"]) == ("Back on Monday", "travel")),
        given(userId=101, oooId=301, notes="not alice's"),
        (404, "NotFoundException"),
    ),
    "cal_organizations_users_ooocontroller_delete_organization_user_ooo": Scenario(
        given(userId=103, oooId=301),
        expect(lambda data, sb: 301 not in sb.store.ooo),
        given(userId=103, oooId=999),
        (404, "NotFoundException"),
    ),
    "cal_organizations_users_ooocontroller_get_organization_users_ooo": Scenario(
        given(email="carol@acme.example"),
        expect(lambda data, _: [e["userId"] for e in data] == [103]),
    ),
    "cal_organizations_webhooks_controller_get_all_organization_webhooks": Scenario(
        given(), expect(lambda data, _: data == [])
    ),
    "cal_organizations_webhooks_controller_create_organization_webhook": Scenario(
        given(
            active=True, subscriberUrl=HOOK_URL, triggers=["BOOKING_CREATED"], secret="whsec_test"
        ),
        expect(
            lambda data, _: (
                (data["secret"], data["payloadTemplate"], data["teamId"]) == ("whsec_test", None, 1)
            )
        ),
        given(active=True, subscriberUrl="not a url", triggers=["BOOKING_CREATED"]),
        (400, "BadRequestException"),
    ),
    "cal_organizations_webhooks_controller_get_organization_webhook": Scenario(
        with_webhook(),
        expect(lambda data, _: data["subscriberUrl"] == HOOK_URL),
        given(webhookId="00000000-0000-4000-8000-000000000000"),
        (404, "NotFoundException"),
    ),
    "cal_organizations_webhooks_controller_update_org_webhook": Scenario(
        with_webhook(active=False, triggers=["OOO_CREATED", "BOOKING_CANCELLED"]),
        expect(
            lambda data, _: (
                (data["active"], data["triggers"]) == (False, ["OOO_CREATED", "BOOKING_CANCELLED"])
            )
        ),
        given(webhookId="00000000-0000-4000-8000-000000000000", active=False),
        (404, "NotFoundException"),
    ),
    "cal_organizations_webhooks_controller_delete_webhook": Scenario(
        with_webhook(),
        expect(lambda data, sb: data["id"] not in sb.store.webhooks),
        given(webhookId="00000000-0000-4000-8000-000000000000"),
        (404, "NotFoundException"),
    ),
}

NAMES = sorted(TOOLS)
REJECTED = [name for name in NAMES if SCENARIOS.get(name, Scenario(given(), nothing)).reject]


def _relax_ambiguous_one_of(schema: Any) -> None:
    # Cal.com's document types membership attributes as oneOf(Text, Number, SingleSelect,
    # MultiSelect) where Text and SingleSelect are identical, so every string attribute
    # matches two branches and fails `oneOf`. Only such duplicated branches become anyOf.
    if isinstance(schema, dict):
        branches = schema.get("oneOf")
        if isinstance(branches, list) and any(branches.count(branch) > 1 for branch in branches):
            schema["anyOf"] = schema.pop("oneOf")
        for value in schema.values():
            _relax_ambiguous_one_of(value)
    elif isinstance(schema, list):
        for value in schema:
            _relax_ambiguous_one_of(value)


@cache
def response_validator(tool: Tool) -> Draft202012Validator:
    schema = copy.deepcopy(dict(tool.response_schema or {}))
    _relax_ambiguous_one_of(schema)
    return Draft202012Validator(schema, format_checker=FormatChecker())


def test_every_tool_has_a_scenario() -> None:
    """The table covers exactly the registry's tools."""
    assert sorted(SCENARIOS) == NAMES
    assert len(NAMES) == 37


@pytest.mark.parametrize("name", NAMES)
async def test_success_matches_response_schema(name: str, sandbox: RunningSandbox) -> None:
    """The call succeeds with the tool's status and a body its response schema accepts."""
    tool, scenario = TOOLS[name], SCENARIOS[name]
    async with sandbox.client() as cal:
        params = await scenario.success(cal)
        response = await cal.request(name, params)
    assert response.status == tool.success_status
    envelope: dict[str, Any] = {"status": "success", "data": response.data}
    if response.pagination is not None:
        envelope["pagination"] = response.pagination
    problems = [e.message for e in response_validator(tool).iter_errors(envelope)]
    assert problems == []
    scenario.check(response.data, sandbox)
    last = sandbox.requests(name)[-1]
    assert (last.status, last.credential) == (tool.success_status, "key-acme-admin")


@pytest.mark.parametrize("name", REJECTED)
async def test_rejection(name: str, sandbox: RunningSandbox) -> None:
    """Where Cal.com refuses the call, the sandbox answers its status and error code."""
    scenario = SCENARIOS[name]
    assert scenario.reject is not None
    assert scenario.rejected is not None
    async with sandbox.client() as cal:
        params = await scenario.reject(cal)
        with pytest.raises(CalcomError) as caught:
            await cal.call(name, **params)
    assert (caught.value.status, caught.value.code) == scenario.rejected
    assert caught.value.request_id == sandbox.requests(name)[-1].id


@pytest.mark.parametrize("name", NAMES)
async def test_other_organization_is_forbidden(name: str, sandbox: RunningSandbox) -> None:
    """Acme's key cannot act on Globex: 403, and nothing changes."""
    async with sandbox.client() as cal:
        params = await SCENARIOS[name].success(cal)
        before = sandbox.sandbox.snapshot()
        with pytest.raises(CalcomError) as caught:
            await cal.call(name, **{**params, "orgId": SECOND_ORG_ID})
    assert (caught.value.status, caught.value.code) == (403, "ForbiddenException")
    after = sandbox.sandbox.snapshot()
    assert (after["counts"], after["users"]) == (before["counts"], before["users"])


@pytest.mark.parametrize("name", NAMES)
async def test_unknown_api_key_is_unauthorized(name: str, sandbox: RunningSandbox) -> None:
    """A key Cal.com does not know gets 401 before anything else is looked at."""
    async with sandbox.client() as cal:
        params = await SCENARIOS[name].success(cal)
    async with sandbox.client(credentials=Credentials(api_key="cal_live_unknown0000")) as stranger:
        with pytest.raises(CalcomError) as caught:
            await stranger.call(name, **params)
    assert (caught.value.status, caught.value.code) == (401, "UnauthorizedException")
    assert sandbox.requests(name)[-1].credential is None
