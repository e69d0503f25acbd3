"""Each overlay correction of the published OpenAPI document takes effect."""

from __future__ import annotations

import json
from importlib import resources

from calhooks.service.calcom import get_tool
from calhooks.service.calcom.overlay import CORRECTIONS, apply_overlay
from calhooks.service.calcom.webhooks import WEBHOOK_TRIGGERS


def raw_document() -> dict:  # type: ignore[type-arg]
    text = resources.files("calhooks.service.calcom").joinpath("data/openapi-orgs.json").read_text()
    loaded: dict = json.loads(text)  # type: ignore[type-arg]
    return loaded


def test_overlay_does_not_mutate_its_input() -> None:
    raw = raw_document()
    before = json.dumps(raw, sort_keys=True)
    apply_overlay(raw)
    assert json.dumps(raw, sort_keys=True) == before


def test_correction_keys_are_unique() -> None:
    keys = [c.key for c in CORRECTIONS]
    assert len(keys) == len(set(keys))


def test_path_variables_declared() -> None:
    """orgId (and userId on delete-OOO) become path parameters where the document omits them."""
    raw_ops = {
        op["operationId"]: op for item in raw_document()["paths"].values() for op in item.values()
    }
    assert "orgId" not in [
        p["name"]
        for p in raw_ops["OrganizationsUsersOOOController_deleteOrganizationUserOOO"]["parameters"]
    ]
    tool = get_tool("cal_organizations_users_ooocontroller_delete_organization_user_ooo")
    assert [p.name for p in tool.parameters_in("path")] == ["orgId", "userId", "oooId"]


def test_integer_ids() -> None:
    tool = get_tool("cal_organizations_users_controller_get_organizations_users")
    assert tool.by_name["orgId"].schema["type"] == "integer"
    assert tool.by_name["take"].schema["type"] == "integer"
    assert tool.by_name["take"].schema["maximum"] == 1000
    assert tool.by_name["teamIds"].schema["items"] == {"type": "integer"}
    webhook = get_tool("cal_organizations_webhooks_controller_get_organization_webhook")
    assert webhook.by_name["webhookId"].schema["type"] == "string"


def test_webhook_triggers_array() -> None:
    for name in (
        "cal_organizations_webhooks_controller_create_organization_webhook",
        "cal_organizations_webhooks_controller_update_org_webhook",
    ):
        triggers = get_tool(name).by_name["triggers"].schema
        assert triggers["type"] == "array"
        assert triggers["items"]["enum"] == list(WEBHOOK_TRIGGERS)
        assert "BOOKING_CONFIRMED" not in triggers["items"]["enum"]


def test_webhook_version() -> None:
    tool = get_tool("cal_organizations_webhooks_controller_create_organization_webhook")
    assert tool.by_name["version"].enum == ("2021-10-20",)
    assert not tool.by_name["version"].required


def test_webhook_output_types() -> None:
    tool = get_tool("cal_organizations_webhooks_controller_get_organization_webhook")
    assert tool.response_schema is not None
    data = tool.response_schema["properties"]["data"]
    assert data["properties"]["id"]["type"] == "string"
    assert data["properties"]["payloadTemplate"]["type"] == ["string", "null"]


def test_service_account_key_object() -> None:
    tool = get_tool(
        "cal_organizations_delegation_credential_controller_create_delegation_credential"
    )
    schema = tool.by_name["serviceAccountKey"].schema
    assert "type" not in schema
    shapes = [set(s["required"]) for s in schema["oneOf"]]
    assert {"private_key", "client_email", "client_id"} in shapes
    assert {"private_key", "tenant_id", "client_id"} in shapes


def test_update_user_body() -> None:
    tool = get_tool("cal_organizations_users_controller_update_organization_user")
    body = {p.name for p in tool.parameters_in("body")}
    assert {"email", "username", "timeZone", "metadata", "locale"} <= body
    assert not body & {"organizationRole", "autoAccept"}
    assert not any(p.required for p in tool.parameters_in("body"))


def test_user_field_constraints() -> None:
    tool = get_tool("cal_organizations_users_controller_create_organization_user")
    assert tool.by_name["timeFormat"].enum == (12, 24)
    assert tool.by_name["email"].schema["format"] == "email"


def test_metadata_limits() -> None:
    tool = get_tool("cal_organizations_controller_create_organization")
    metadata = tool.by_name["metadata"].schema
    assert metadata["maxProperties"] == 50
    assert metadata["propertyNames"] == {"maxLength": 40}


def test_non_empty_strings() -> None:
    tool = get_tool("cal_organizations_attributes_controller_create_organization_attribute")
    assert tool.by_name["slug"].schema["minLength"] == 1


def test_membership_role_optional() -> None:
    tool = get_tool("cal_organizations_memberships_controller_create_membership")
    assert tool.required == ("orgId", "userId")
    assert tool.by_name["role"].enum == ("MEMBER", "OWNER", "ADMIN")


def test_membership_list_array() -> None:
    tool = get_tool("cal_organizations_memberships_controller_get_all_memberships")
    assert tool.response_schema is not None
    assert tool.response_schema["properties"]["data"]["type"] == "array"


def test_ooo_dates_utc() -> None:
    tool = get_tool("cal_organizations_users_ooocontroller_update_organization_user_ooo")
    assert tool.by_name["start"].schema["pattern"].endswith("Z$")


def test_ooo_responses() -> None:
    for verb in ("create", "update", "delete"):
        tool = get_tool(f"cal_organizations_users_ooocontroller_{verb}_organization_user_ooo")
        assert tool.response_schema is not None
        assert tool.response_schema["properties"]["data"]["required"] == [
            "id",
            "uuid",
            "userId",
            "start",
            "end",
        ]
    listing = get_tool("cal_organizations_users_ooocontroller_get_organization_users_ooo")
    assert listing.response_schema is not None
    assert listing.response_schema["properties"]["data"]["type"] == "array"
