"""Parameter validation and request preparation: every problem named, nothing guessed."""

from __future__ import annotations

import pytest

from calhooks.service.calcom import ToolValidationError, get_tool, prepare_request, validate_params
from tests.sandbox.server import RunningSandbox

OOO = get_tool("cal_organizations_users_ooocontroller_create_organization_user_ooo")
USERS = get_tool("cal_organizations_users_controller_get_organizations_users")
ASSIGN = get_tool(
    "cal_organizations_attributes_options_controller_assign_organization_attribute_option_to_user"
)
DELEGATION = get_tool(
    "cal_organizations_delegation_credential_controller_create_delegation_credential"
)


def problems(tool_params: dict[str, object], tool=OOO) -> dict[str | None, str]:  # type: ignore[no-untyped-def]
    with pytest.raises(ToolValidationError) as caught:
        validate_params(tool, tool_params)
    assert caught.value.tool == tool.name
    return {p.parameter: p.message for p in caught.value.problems}


def test_valid_call_passes() -> None:
    validate_params(
        OOO,
        {
            "orgId": 1,
            "userId": 2,
            "start": "2025-01-01T00:00:00.000Z",
            "end": "2025-01-03T10:00:00Z",
        },
    )


def test_missing_required() -> None:
    assert problems({"orgId": 1}) == {
        "userId": "is required",
        "start": "is required",
        "end": "is required",
    }


def test_unknown_parameter_with_suggestion() -> None:
    found = problems(
        {"orgId": 1, "userid": 2, "start": "2025-01-01T00:00:00Z", "end": "2025-01-01T00:00:00Z"}
    )
    assert found["userid"] == "unknown parameter (did you mean 'userId'?)"


def test_wrong_type_and_enum() -> None:
    found = problems(
        {
            "orgId": "1",
            "userId": True,
            "start": "2025-01-01T00:00:00Z",
            "end": "2025-01-01T00:00:00Z",
            "reason": "party",
        }
    )
    assert found["orgId"].startswith("expected integer, got str")
    assert found["userId"].startswith("expected integer, got bool")
    assert "'party' is not one of" in found["reason"]


def test_ooo_dates_must_be_utc_with_z() -> None:
    found = problems(
        {"orgId": 1, "userId": 2, "start": "2025-01-01", "end": "2025-01-01T00:00:00+02:00"}
    )
    assert set(found) == {"start", "end"}
    assert "UTC date-time" in found["start"]


def test_nested_problems_name_the_path() -> None:
    found = problems(
        {
            "orgId": 1,
            "workspacePlatformSlug": "google",
            "domain": "acme.com",
            "serviceAccountKey": [{}],
        },
        tool=DELEGATION,
    )
    assert "serviceAccountKey" in found


def test_assign_takes_attribute_id_in_the_body() -> None:
    prepared = prepare_request(
        ASSIGN, {"orgId": 3, "userId": 9, "attributeId": "a1", "attributeOptionId": "o1"}
    )
    assert prepared.url == "/v2/organizations/3/attributes/options/9"
    assert prepared.body == {"attributeId": "a1", "attributeOptionId": "o1"}


def test_query_arrays_repeat_and_booleans_are_lowercase() -> None:
    prepared = prepare_request(
        USERS, {"orgId": 3, "emails": ["a@x.io", "b@x.io"], "teamIds": [1, 2]}
    )
    assert prepared.method == "GET"
    assert prepared.body is None
    assert prepared.query == [
        ("emails", "a@x.io"),
        ("emails", "b@x.io"),
        ("teamIds", "1"),
        ("teamIds", "2"),
    ]


def test_path_values_are_escaped() -> None:
    tool = get_tool("cal_organizations_webhooks_controller_get_organization_webhook")
    prepared = prepare_request(tool, {"orgId": 1, "webhookId": "..x y?#%"})
    assert prepared.url == "/v2/organizations/1/webhooks/..x%20y%3F%23%25"


def test_take_bounds() -> None:
    found = problems({"orgId": 1, "take": 1001}, tool=USERS)
    assert "1001" in found["take"]


def test_request_too_long_for_a_url_names_the_parameter() -> None:
    emails = [f"user{i}@example.com" for i in range(10_000)]
    found = problems({"orgId": 1, "emails": emails}, tool=USERS)
    assert list(found) == ["emails"]
    assert found["emails"].startswith("too long for a URL (10000 values, ")


def test_request_just_under_the_url_limit_passes() -> None:
    emails = [f"user{i}@example.com" for i in range(100)]
    prepared = prepare_request(USERS, {"orgId": 1, "emails": emails})
    assert len(prepared.query) == 100


async def test_too_long_request_is_never_sent(sandbox: RunningSandbox) -> None:
    emails = [f"user{i}@example.com" for i in range(10_000)]
    async with sandbox.client() as cal:
        with pytest.raises(ToolValidationError) as caught:
            await cal.call(USERS.name, emails=emails)
    assert caught.value.parameters == ("emails",)
    assert sandbox.requests() == []


@pytest.mark.parametrize("value", [".", "..", "", "a/b", "a\x00b", "\r\n"])
def test_path_parameter_cannot_leave_its_segment(value: str) -> None:
    tool = get_tool(
        "cal_organizations_attributes_options_controller_delete_organization_attribute_option"
    )
    found = problems({"orgId": 1, "attributeId": "attr-1", "optionId": value}, tool=tool)
    assert list(found) == ["optionId"]


def test_integer_path_parameter_travels_as_digits() -> None:
    tool = get_tool("cal_organizations_users_controller_delete_organization_user")
    assert prepare_request(tool, {"orgId": 1, "userId": 7.0}).url == "/v2/organizations/1/users/7"
