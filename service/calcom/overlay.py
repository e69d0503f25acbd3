"""Corrections to Cal.com's published OpenAPI document, applied over the vendored copy.

The published document (``data/openapi-orgs.json``, trimmed by ``scripts/trim_openapi.py``)
disagrees with what Cal.com's servers really accept and return. Where they disagree the real
API wins (see the FACTS section cited by each entry). Each correction is one entry in
``CORRECTIONS``: a key, the reason, and a function that edits the document in place.
``tests/calcom/test_overlay.py`` proves each one took effect.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from calhooks.service.calcom.webhooks import WEBHOOK_TRIGGERS

Document = dict[str, Any]

#: Identifier names Cal.com parses as integers (FACTS §6.9); every other id is a string.
INTEGER_IDS = frozenset({"orgId", "userId", "membershipId", "oooId", "managedOrganizationId"})

#: Cal.com accepts OOO dates only as UTC ISO-8601 with a literal ``Z`` (FACTS §4.7).
OOO_DATE_PATTERN = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,3})?Z$"

_PATH_VARIABLE = re.compile(r"{(\w+)}")

#: The schema extension marking a field whose value is a credential (``Tool.secret_outputs``).
SECRET_MARK = "x-calhooks-secret"  # noqa: S105 - a schema keyword, not a secret

#: Fields that carry credentials: the managed organization's API key (shown once, FACTS
#: §4.3), webhook secrets (returned in clear, FACTS §4.8), delegation credentials' private
#: keys (sent, never returned, FACTS §4.4).
SECRET_FIELDS = (
    ("ManagedOrganizationWithApiKeyOutput", "apiKey"),
    ("TeamWebhookOutputDto", "secret"),
    ("CreateWebhookInputDto", "secret"),
    ("UpdateWebhookInputDto", "secret"),
    ("GoogleServiceAccountKeyInput", "private_key"),
    ("MicrosoftServiceAccountKeyInput", "private_key"),
)


@dataclass(frozen=True, slots=True)
class Correction:
    """One defect of the published document and the edit that fixes it."""

    key: str
    why: str
    apply: Callable[[Document], None]


def _operations(document: Document) -> list[tuple[str, dict[str, Any]]]:
    return [
        (path, operation)
        for path, item in document["paths"].items()
        for operation in item.values()
        if isinstance(operation, dict) and "operationId" in operation
    ]


def _operation(document: Document, operation_id: str) -> dict[str, Any]:
    for _, operation in _operations(document):
        if operation["operationId"] == operation_id:
            return operation
    raise KeyError(operation_id)


def _schema(document: Document, name: str) -> dict[str, Any]:
    schema: dict[str, Any] = document["components"]["schemas"][name]
    return schema


def _id_schema(name: str) -> dict[str, Any]:
    return {"type": "integer"} if name in INTEGER_IDS else {"type": "string"}


def declare_path_variables(document: Document) -> None:
    # e.g. createOrganizationUser, the OOO operations and webhook get/update/delete omit
    # `orgId` (and deleteOrganizationUserOOO omits `userId`) although their paths use them.
    for path, operation in _operations(document):
        parameters = operation.setdefault("parameters", [])
        declared = {p["name"] for p in parameters if p.get("in") == "path"}
        for name in _PATH_VARIABLE.findall(path):
            if name not in declared:
                parameters.append(
                    {"name": name, "in": "path", "required": True, "schema": _id_schema(name)}
                )


def integer_ids_and_paging(document: Document) -> None:
    # The document types every id and `take`/`skip` as "number"; the server parses them
    # with ParseIntPipe / @IsInt, so 1.5 is a 400.
    for _, operation in _operations(document):
        for parameter in operation.get("parameters", []):
            name, schema = parameter["name"], parameter.get("schema", {})
            if name in INTEGER_IDS or name in {"take", "skip"}:
                schema["type"] = "integer"
            if name == "teamIds":
                schema["items"] = {"type": "integer"}
                schema["minItems"] = 1
            if name == "assignedOptionIds":
                schema["minItems"] = 1
    _schema(document, "CreateOrgMembershipDto")["properties"]["userId"]["type"] = "integer"
    for name in ("CreateOutOfOfficeEntryDto", "UpdateOutOfOfficeEntryDto"):
        _schema(document, name)["properties"]["toUserId"]["type"] = "integer"
    _schema(document, "CreateOrganizationInput")["properties"]["apiKeyDaysValid"]["type"] = (
        "integer"
    )
    _schema(document, "CreateOrganizationUserInput")["properties"]["defaultScheduleId"]["type"] = (
        "integer"
    )


def webhook_triggers_array(document: Document) -> None:
    # `triggers` is documented as one string; the API takes and returns an array of them.
    for name in ("CreateWebhookInputDto", "UpdateWebhookInputDto"):
        properties = _schema(document, name)["properties"]
        properties["triggers"] = {
            "type": "array",
            "items": {"type": "string", "enum": list(WEBHOOK_TRIGGERS)},
            "description": "Trigger events this webhook is delivered for.",
        }


def webhook_version(document: Document) -> None:
    # The catalog and the current API take `version` (one value); the 2025-10 snapshot
    # lacks it and would strip it, so sending it is always safe.
    for name in ("CreateWebhookInputDto", "UpdateWebhookInputDto"):
        _schema(document, name)["properties"]["version"] = {
            "type": "string",
            "enum": ["2021-10-20"],
            "description": "Webhook payload version.",
        }


def webhook_output_types(document: Document) -> None:
    # Webhook ids are UUID strings (typed number), triggers are strings (typed object),
    # and payloadTemplate is null when unset.
    properties = _schema(document, "TeamWebhookOutputDto")["properties"]
    properties["id"] = {"type": "string", "format": "uuid"}
    properties["triggers"] = {"type": "array", "items": {"type": "string"}}
    properties["payloadTemplate"] = {**properties["payloadTemplate"], "nullable": True}


def service_account_key_object(document: Document) -> None:
    # Documented as an array; the validator requires a single Google or Microsoft key object.
    key = {
        "oneOf": [
            {"$ref": "#/components/schemas/GoogleServiceAccountKeyInput"},
            {"$ref": "#/components/schemas/MicrosoftServiceAccountKeyInput"},
        ]
    }
    for name in ("CreateDelegationCredentialInput", "UpdateDelegationCredentialInput"):
        _schema(document, name)["properties"]["serviceAccountKey"] = copy.deepcopy(key)
    for name in ("GoogleServiceAccountKeyInput", "MicrosoftServiceAccountKeyInput"):
        for field in _schema(document, name)["properties"].values():
            field["minLength"] = 1


def update_user_body(document: Document) -> None:
    # The document shows an empty body; the server takes every create field except
    # organizationRole/autoAccept, all optional (PartialType of the base user input).
    create = _schema(document, "CreateOrganizationUserInput")
    properties = {
        name: copy.deepcopy(field)
        for name, field in create["properties"].items()
        if name not in {"organizationRole", "autoAccept"}
    }
    document["components"]["schemas"]["UpdateOrganizationUserInput"] = {
        "type": "object",
        "properties": properties,
    }


def user_field_constraints(document: Document) -> None:
    # Constraints the class-validator DTOs enforce but the document leaves out.
    for name in ("CreateOrganizationUserInput", "UpdateOrganizationUserInput"):
        properties = _schema(document, name)["properties"]
        properties["email"]["format"] = "email"
        properties["timeFormat"] = {**properties["timeFormat"], "type": "integer", "enum": [12, 24]}
        for theme in ("theme", "appTheme"):
            properties[theme] = {**properties[theme], "enum": ["light", "dark", None]}


def metadata_limits(document: Document) -> None:
    # metadata: at most 50 keys of at most 40 characters; values string (<= 500), number, bool.
    limits = {
        "maxProperties": 50,
        "propertyNames": {"maxLength": 40},
        "additionalProperties": {
            "anyOf": [
                {"type": "string", "maxLength": 500},
                {"type": "number"},
                {"type": "boolean"},
            ]
        },
    }
    for name in (
        "CreateOrganizationUserInput",
        "UpdateOrganizationUserInput",
        "CreateOrganizationInput",
        "UpdateOrganizationInput",
    ):
        _schema(document, name)["properties"]["metadata"].update(copy.deepcopy(limits))


def non_empty_strings(document: Document) -> None:
    # @IsNotEmpty() fields the document types as plain strings.
    fields = {
        "CreateOrganizationAttributeInput": ("name", "slug"),
        "CreateOrganizationAttributeOptionInput": ("value", "slug"),
        "AssignOrganizationAttributeOptionToUserInput": (
            "attributeId",
            "attributeOptionId",
            "value",
        ),
        "CreateDelegationCredentialInput": ("workspacePlatformSlug", "domain"),
    }
    for name, properties in fields.items():
        for field in properties:
            _schema(document, name)["properties"][field]["minLength"] = 1


def membership_role_optional(document: Document) -> None:
    # Marked required, but the server defaults a missing role to MEMBER.
    schema = _schema(document, "CreateOrgMembershipDto")
    schema["required"] = [name for name in schema["required"] if name != "role"]


def membership_list_array(document: Document) -> None:
    # The list operation returns an array; the document shows a single membership.
    _schema(document, "GetAllOrgMemberships")["properties"]["data"] = {
        "type": "array",
        "items": {"$ref": "#/components/schemas/OrganizationMembershipOutput"},
    }


def ooo_dates_utc(document: Document) -> None:
    # "ISO 8601" in the document; the server accepts only UTC with a trailing Z.
    for name in ("CreateOutOfOfficeEntryDto", "UpdateOutOfOfficeEntryDto"):
        properties = _schema(document, name)["properties"]
        for field in ("start", "end"):
            properties[field]["pattern"] = OOO_DATE_PATTERN


def ooo_responses(document: Document) -> None:
    # The five OOO operations document no response body; this is the output DTO's shape.
    schemas = document["components"]["schemas"]
    schemas["OutOfOfficeEntryOutput"] = {
        "type": "object",
        "properties": {
            "id": {"type": "integer"},
            "uuid": {"type": "string"},
            "userId": {"type": "integer"},
            "toUserId": {"type": "integer", "nullable": True},
            "start": {"type": "string", "format": "date-time"},
            "end": {"type": "string", "format": "date-time"},
            "notes": {"type": "string", "nullable": True},
            "reason": {
                "type": "string",
                "nullable": True,
                "enum": ["unspecified", "vacation", "travel", "sick", "public_holiday", None],
            },
        },
        "required": ["id", "uuid", "userId", "start", "end"],
    }
    entry = {"$ref": "#/components/schemas/OutOfOfficeEntryOutput"}
    shapes = {
        "OrganizationsUsersOOOController_getOrganizationUserOOO": ("200", "list"),
        "OrganizationsUsersOOOController_getOrganizationUsersOOO": ("200", "list"),
        "OrganizationsUsersOOOController_createOrganizationUserOOO": ("201", "one"),
        "OrganizationsUsersOOOController_updateOrganizationUserOOO": ("200", "one"),
        "OrganizationsUsersOOOController_deleteOrganizationUserOOO": ("200", "one"),
    }
    for operation_id, (status, shape) in shapes.items():
        data = {"type": "array", "items": entry} if shape == "list" else entry
        _operation(document, operation_id)["responses"][status] = {
            "description": "",
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "properties": {
                            "status": {"type": "string", "enum": ["success", "error"]},
                            "data": data,
                        },
                        "required": ["status", "data"],
                    }
                }
            },
        }


def secret_fields(document: Document) -> None:
    # Not a defect of the document but a fact it does not state: these values are
    # credentials, sealed or dropped before calhooks records anything (tools.Tool.secrets).
    for schema, name in SECRET_FIELDS:
        _schema(document, schema)["properties"][name][SECRET_MARK] = True


CORRECTIONS: tuple[Correction, ...] = (
    Correction(
        "path-variables-declared",
        "FACTS §4: orgId is a path param everywhere",
        declare_path_variables,
    ),
    Correction(
        "integer-ids", "FACTS §6.9, §2: ids and take/skip are integers", integer_ids_and_paging
    ),
    Correction(
        "webhook-triggers-array", "FACTS §4.8: triggers is an array of enum", webhook_triggers_array
    ),
    Correction(
        "webhook-version", "FACTS §4.8/§6.6: version exists in the current API", webhook_version
    ),
    Correction(
        "webhook-output-types", "FACTS §4.8: webhook ids are UUID strings", webhook_output_types
    ),
    Correction(
        "service-account-key-object", "FACTS §4.4/§6.3: one key object", service_account_key_object
    ),
    Correction(
        "update-user-body", "FACTS §4.6/§6.4: update takes the user fields", update_user_body
    ),
    Correction(
        "user-field-constraints", "FACTS §4.6: email, timeFormat, theme", user_field_constraints
    ),
    Correction("metadata-limits", "FACTS §4.3/§4.6: metadata limits", metadata_limits),
    Correction("non-empty-strings", "FACTS §4.1/§4.2/§4.4: @IsNotEmpty fields", non_empty_strings),
    Correction(
        "membership-role-optional",
        "FACTS §4.5/§6.5: role defaults to MEMBER",
        membership_role_optional,
    ),
    Correction(
        "membership-list-array", "FACTS §4.5: the list returns an array", membership_list_array
    ),
    Correction("ooo-dates-utc", "FACTS §4.7/§6.8: dates must end in Z", ooo_dates_utc),
    Correction("ooo-responses", "FACTS §4.7: OOO responses have no schema", ooo_responses),
    Correction("secret-fields", "FACTS §4.3/§4.4/§4.8: fields carrying credentials", secret_fields),
)


def apply_overlay(document: Document) -> Document:
    """Return a corrected deep copy of ``document``; the argument is left untouched."""
    corrected = copy.deepcopy(document)
    for correction in CORRECTIONS:
        correction.apply(corrected)
    return corrected
