"""The tools registry: exactly the catalog's 37 tools, each tied to a vendored operation."""

from __future__ import annotations

import re

import pytest

from calhooks.service.calcom import TOOLS, UnknownToolError, get_tool, tool_name
from calhooks.service.calcom.spec import load_document

# The catalog's names, written out (the registry derives them; this is the check).
CATALOG = {
    *(
        f"cal_organizations_attributes_controller_{verb}_organization_attribute"
        for verb in ("create", "delete", "get", "update")
    ),
    "cal_organizations_attributes_controller_get_organization_attributes",
    "cal_organizations_attributes_options_controller_assign_organization_attribute_option_to_user",
    *(
        f"cal_organizations_attributes_options_controller_{verb}_organization_attribute_option"
        for verb in ("create", "delete", "update")
    ),
    "cal_organizations_attributes_options_controller_get_organization_attribute_options",
    "cal_organizations_attributes_options_controller_unassign_organization_attribute_option_from_user",
    *(
        f"cal_organizations_controller_{verb}_organization"
        for verb in ("create", "delete", "get", "update")
    ),
    "cal_organizations_controller_get_organizations",
    "cal_organizations_delegation_credential_controller_create_delegation_credential",
    "cal_organizations_delegation_credential_controller_update_delegation_credential",
    *(
        f"cal_organizations_memberships_controller_{verb}_membership"
        for verb in ("create", "delete", "update")
    ),
    "cal_organizations_memberships_controller_get_all_memberships",
    "cal_organizations_memberships_controller_get_org_membership",
    *(
        f"cal_organizations_users_controller_{verb}_organization_user"
        for verb in ("create", "delete", "update")
    ),
    "cal_organizations_users_controller_get_organizations_users",
    *(
        f"cal_organizations_users_ooocontroller_{verb}_organization_user_ooo"
        for verb in ("create", "delete", "update")
    ),
    "cal_organizations_users_ooocontroller_get_organization_user_ooo",
    "cal_organizations_users_ooocontroller_get_organization_users_ooo",
    "cal_organizations_webhooks_controller_create_organization_webhook",
    "cal_organizations_webhooks_controller_delete_webhook",
    "cal_organizations_webhooks_controller_get_all_organization_webhooks",
    "cal_organizations_webhooks_controller_get_organization_webhook",
    "cal_organizations_webhooks_controller_update_org_webhook",
}


def test_registry_holds_exactly_the_catalog() -> None:
    """The registry has the 37 catalog names, no more, no fewer."""
    assert len(CATALOG) == 37
    assert set(TOOLS) == CATALOG


def test_each_tool_maps_to_a_vendored_operation() -> None:
    """Every tool's method + path is an operation of the vendored spec with its operationId."""
    paths = load_document()["paths"]
    for tool in TOOLS.values():
        operation = paths[tool.path][tool.method.lower()]
        assert operation["operationId"] == tool.operation_id
        assert tool_name(tool.operation_id) == tool.name


def test_managed_org_tools_keep_catalog_names() -> None:
    """The managed-orgs group keeps the catalog's name but calls the real path."""
    tool = get_tool("cal_organizations_controller_get_organizations")
    assert tool.operation_id == "OrganizationsOrganizationsController_getOrganizations"
    assert tool.path == "/v2/organizations/{orgId}/organizations"


def test_every_path_variable_is_a_required_path_parameter() -> None:
    """Each `{name}` in a path is a required path parameter of the tool."""
    for tool in TOOLS.values():
        variables = re.findall(r"{(\w+)}", tool.path)
        assert [p.name for p in tool.parameters_in("path")] == variables, tool.name
        assert all(p.required for p in tool.parameters_in("path"))


def test_parameter_names_are_unique_per_tool() -> None:
    """Path, query and body share one namespace without collisions."""
    for tool in TOOLS.values():
        names = [p.name for p in tool.parameters]
        assert len(names) == len(set(names)), tool.name


def test_success_status_is_201_for_creates_200_otherwise() -> None:
    for tool in TOOLS.values():
        expected = 201 if tool.method == "POST" else 200
        assert tool.success_status == expected, tool.name


def test_input_schema_shape() -> None:
    """The flat input schema lists every parameter and the required ones."""
    tool = get_tool("cal_organizations_users_ooocontroller_create_organization_user_ooo")
    schema = tool.input_schema
    assert schema["type"] == "object"
    assert schema["additionalProperties"] is False
    assert list(schema["properties"]) == [
        "orgId",
        "userId",
        "start",
        "end",
        "notes",
        "toUserId",
        "reason",
    ]
    assert schema["required"] == ["orgId", "userId", "start", "end"]
    assert schema["properties"]["reason"]["enum"] == [
        "unspecified",
        "vacation",
        "travel",
        "sick",
        "public_holiday",
    ]


def test_hints_follow_the_method() -> None:
    read = get_tool("cal_organizations_attributes_controller_get_organization_attributes")
    delete = get_tool("cal_organizations_webhooks_controller_delete_webhook")
    create = get_tool("cal_organizations_memberships_controller_create_membership")
    assert (read.read_only, read.destructive, read.idempotent) == (True, False, True)
    assert (delete.read_only, delete.destructive, delete.idempotent) == (False, True, True)
    assert (create.read_only, create.idempotent) == (False, False)
    assert read.paginated
    assert not create.paginated


def test_unknown_tool_suggests_close_names() -> None:
    with pytest.raises(UnknownToolError) as caught:
        get_tool("cal_organizations_webhooks_controller_delete_webhooks")
    assert "cal_organizations_webhooks_controller_delete_webhook" in caught.value.suggestions
