"""Organization attributes and their options, and assigning options to members."""

from __future__ import annotations

import re

from calhooks.service.sandbox import output
from calhooks.service.sandbox.errors import bad_request, conflict, not_found
from calhooks.service.sandbox.operations.base import Call, Result, operation, page
from calhooks.service.sandbox.state import (
    Attribute,
    AttributeOption,
    OptionAssignment,
    Store,
    new_cuid,
)

#: Attribute types whose options a member is assigned by value (Cal.com creates the option).
_VALUE_TYPES = frozenset({"TEXT", "NUMBER"})
_OPTION_TYPES = frozenset({"SINGLE_SELECT", "MULTI_SELECT"})


def _slugify(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "option"


def _check_slug_free(store: Store, org_id: int, slug: str, keep: str | None = None) -> None:
    for attribute in store.attributes.values():
        if attribute.team_id == org_id and attribute.slug == slug and attribute.id != keep:
            raise conflict(
                f"Unique constraint failed on the fields: (`teamId`,`slug`): an attribute "
                f"with slug {slug!r} already exists in organization {org_id}"
            )


@operation("cal_organizations_attributes_controller_get_organization_attributes")
def list_attributes(call: Call) -> Result:
    rows = [a for a in call.store.attributes.values() if a.team_id == call.org.id]
    return Result([output.attribute(a) for a in page(rows, call.params)])


@operation("cal_organizations_attributes_controller_create_organization_attribute")
def create_attribute(call: Call) -> Result:
    body = call.body()
    _check_slug_free(call.store, call.org.id, body["slug"])
    attribute = Attribute(
        new_cuid(),
        call.org.id,
        body["name"],
        body["slug"],
        body["type"],
        enabled=body.get("enabled", True),
    )
    call.store.attributes[attribute.id] = attribute
    if attribute.type in _OPTION_TYPES:  # Cal.com ignores options of TEXT/NUMBER attributes
        for given in body["options"]:
            created = AttributeOption(new_cuid(), attribute.id, given["value"], given["slug"])
            call.store.options[created.id] = created
    return Result(output.attribute(attribute))


@operation("cal_organizations_attributes_controller_get_organization_attribute")
def get_attribute(call: Call) -> Result:
    attribute = call.store.attributes.get(call.params["attributeId"])
    if attribute is None or attribute.team_id != call.org.id:
        return Result(None)  # Cal.com answers 200 with null data here, not 404
    return Result(output.attribute(attribute))


@operation("cal_organizations_attributes_controller_update_organization_attribute")
def update_attribute(call: Call) -> Result:
    attribute = call.store.org_attribute(call.org.id, call.params["attributeId"])
    body = call.body()
    if "slug" in body:
        _check_slug_free(call.store, call.org.id, body["slug"], keep=attribute.id)
    attribute.name = body.get("name", attribute.name)
    attribute.slug = body.get("slug", attribute.slug)
    attribute.type = body.get("type", attribute.type)
    attribute.enabled = body.get("enabled", attribute.enabled)
    return Result(output.attribute(attribute))


@operation("cal_organizations_attributes_controller_delete_organization_attribute")
def delete_attribute(call: Call) -> Result:
    attribute = call.store.org_attribute(call.org.id, call.params["attributeId"])
    call.store.remove_attribute(attribute.id)
    return Result(output.attribute(attribute))


def _attribute_option(call: Call) -> AttributeOption:
    attribute = call.store.org_attribute(call.org.id, call.params["attributeId"])
    found = call.store.options.get(call.params["optionId"])
    if found is None or found.attribute_id != attribute.id:
        raise not_found(f"Attribute option with id {call.params['optionId']} not found")
    return found


@operation("cal_organizations_attributes_options_controller_create_organization_attribute_option")
def create_option(call: Call) -> Result:
    attribute = call.store.org_attribute(call.org.id, call.params["attributeId"])
    body = call.body()
    created = AttributeOption(new_cuid(), attribute.id, body["value"], body["slug"])
    call.store.options[created.id] = created
    return Result(output.option(created))


@operation("cal_organizations_attributes_options_controller_get_organization_attribute_options")
def list_options(call: Call) -> Result:
    attribute = call.store.org_attribute(call.org.id, call.params["attributeId"])
    return Result([output.option(o) for o in call.store.options_of(attribute.id)])


@operation("cal_organizations_attributes_options_controller_update_organization_attribute_option")
def update_option(call: Call) -> Result:
    found = _attribute_option(call)
    body = call.body()
    found.value = body.get("value", found.value)
    found.slug = body.get("slug", found.slug)
    return Result(output.option(found))


@operation("cal_organizations_attributes_options_controller_delete_organization_attribute_option")
def delete_option(call: Call) -> Result:
    found = _attribute_option(call)
    call.store.remove_option(found.id)
    return Result(output.option(found))


@operation(
    "cal_organizations_attributes_options_controller_assign_organization_attribute_option_to_user"
)
def assign_option(call: Call) -> Result:
    store, body = call.store, call.body()
    attribute = store.attributes.get(body["attributeId"])
    if attribute is None or attribute.team_id != call.org.id:
        raise not_found("Attribute not found")
    membership = store.membership_of(call.org.id, call.params["userId"])
    if membership is None or not membership.accepted:
        raise not_found("User is not a member of the organization")
    value, option_id = body.get("value"), body.get("attributeOptionId")
    if value and attribute.type not in _VALUE_TYPES:
        raise bad_request("Attribute type does not support value")
    if option_id:
        chosen = store.options.get(option_id)
        if chosen is None or chosen.attribute_id != attribute.id:
            raise not_found(f"Attribute option with id {option_id} not found")
    elif value:
        chosen = AttributeOption(new_cuid(), attribute.id, value, _slugify(value))
        store.options[chosen.id] = chosen
    else:
        raise bad_request("Either attributeOptionId or value must be provided")
    for existing in store.assignments.values():
        if existing.member_id == membership.id and existing.option_id == chosen.id:
            raise conflict(
                "Unique constraint failed on the fields: (`memberId`,`attributeOptionId`): "
                "the option is already assigned to this user"
            )
    assigned = OptionAssignment(new_cuid(), membership.id, chosen.id)
    store.assignments[assigned.id] = assigned
    return Result(output.assignment(assigned))


@operation(
    "cal_organizations_attributes_options_controller_unassign_organization_attribute_option_from_user"
)
def unassign_option(call: Call) -> Result:
    store = call.store
    membership = store.membership_of(call.org.id, call.params["userId"])
    if membership is None:
        raise not_found("User is not a member of the organization")
    option_id = call.params["attributeOptionId"]
    for assigned in list(store.assignments.values()):
        if assigned.member_id == membership.id and assigned.option_id == option_id:
            del store.assignments[assigned.id]
            return Result(output.assignment(assigned))
    raise not_found(f"Attribute option {option_id} is not assigned to user {call.params['userId']}")
