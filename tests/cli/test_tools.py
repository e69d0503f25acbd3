"""`calhooks tools`: list, describe, and call with validation before anything is sent."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from typer.testing import CliRunner

from calhooks.service.calcom import TOOLS
from calhooks.service.cli.main import app
from calhooks.service.core.settings import get_settings
from calhooks.service.sandbox import SANDBOX_API_KEY, SANDBOX_ORG_ID, SECOND_ORG_ID
from tests.sandbox.server import RunningSandbox

runner = CliRunner()


def test_list_shows_all_tools() -> None:
    result = runner.invoke(app, ["tools", "list"])
    assert result.exit_code == 0
    listed = [line.split()[0] for line in result.stdout.splitlines()]
    assert listed == list(TOOLS)
    assert "POST   /v2/organizations/{orgId}/users/{userId}/ooo" in result.stdout


def test_describe_shows_types_required_and_enums() -> None:
    result = runner.invoke(
        app,
        ["tools", "describe", "cal_organizations_users_ooocontroller_create_organization_user_ooo"],
    )
    assert result.exit_code == 0
    assert "userId" in result.stdout
    assert "required" in result.stdout
    assert '"vacation"' in result.stdout


def test_describe_unknown_tool_fails_with_one_line() -> None:
    result = runner.invoke(app, ["tools", "describe", "cal_nope"])
    assert result.exit_code == 1
    assert result.stderr.strip().startswith("error: unknown tool 'cal_nope'")


@pytest.fixture
def calcom(sandbox: RunningSandbox, monkeypatch: pytest.MonkeyPatch) -> Iterator[RunningSandbox]:
    monkeypatch.setenv("CALHOOKS_API_URL", sandbox.url)
    monkeypatch.setenv("CALHOOKS_API_KEY", SANDBOX_API_KEY)
    monkeypatch.setenv("CALHOOKS_ORG_ID", str(SANDBOX_ORG_ID))
    get_settings.cache_clear()
    yield sandbox
    get_settings.cache_clear()


def test_call_coerces_params_and_prints_json(calcom: RunningSandbox) -> None:
    result = runner.invoke(
        app,
        [
            "tools",
            "call",
            "cal_organizations_users_controller_get_organizations_users",
            "-p",
            "take=5",
            "-p",
            "emails=alice@acme.example,bob@acme.example",
        ],
    )
    assert result.exit_code == 0, result.stderr
    assert [user["username"] for user in json.loads(result.stdout)] == ["alice", "bob"]
    assert calcom.requests()[0].query == [
        ("take", "5"),
        ("emails", "alice@acme.example"),
        ("emails", "bob@acme.example"),
    ]


def test_call_with_json_params(calcom: RunningSandbox) -> None:
    payload = {
        "userId": 101,
        "start": "2025-01-01T00:00:00Z",
        "end": "2025-01-02T00:00:00Z",
        "reason": "sick",
    }
    result = runner.invoke(
        app,
        [
            "tools",
            "call",
            "cal_organizations_users_ooocontroller_create_organization_user_ooo",
            "--json",
            json.dumps(payload),
        ],
    )
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["reason"] == "sick"
    assert calcom.requests()[0].body == {k: v for k, v in payload.items() if k != "userId"}


def test_call_validation_error_sends_nothing(calcom: RunningSandbox) -> None:
    result = runner.invoke(
        app,
        [
            "tools",
            "call",
            "cal_organizations_users_ooocontroller_create_organization_user_ooo",
            "-p",
            "userId=4",
            "-p",
            "reason=party",
        ],
    )
    assert result.exit_code == 1
    assert "reason: 'party' is not one of" in result.stderr
    assert calcom.requests() == []


def test_call_api_error_is_one_line(calcom: RunningSandbox) -> None:
    result = runner.invoke(
        app,
        [
            "tools",
            "call",
            "cal_organizations_users_controller_get_organizations_users",
            "-p",
            f"orgId={SECOND_ORG_ID}",
        ],
    )
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        "error: cal_organizations_users_controller_get_organizations_users: "
        "Cal.com answered 403 ForbiddenException: "
        f"IsOrgGuard - you are not a member of organization {SECOND_ORG_ID}"
    )
    assert SANDBOX_API_KEY not in result.stdout + result.stderr


def test_bad_param_value_names_the_parameter() -> None:
    result = runner.invoke(
        app,
        [
            "tools",
            "call",
            "cal_organizations_users_controller_get_organizations_users",
            "-p",
            "take=many",
        ],
    )
    assert result.exit_code == 1
    assert "take:" in result.stderr


def test_dot_segment_id_is_refused_and_nothing_is_sent(calcom: RunningSandbox) -> None:
    """The issue's reproduction: optionId '..' would have deleted the whole attribute."""
    result = runner.invoke(
        app,
        [
            "tools",
            "call",
            "cal_organizations_attributes_options_controller_delete_organization_attribute_option",
            "-p",
            "attributeId=cdepartmentattribute00001",
            "-p",
            "optionId=..",
        ],
    )
    assert result.exit_code == 1
    assert "optionId: '..' is not an id" in result.stderr
    assert calcom.requests() == []
