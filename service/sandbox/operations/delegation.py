"""Delegation credentials: a Google Workspace or Microsoft 365 service account per domain.

The service-account key is kept but never returned. A key must be the platform's kind
(Google keys carry ``client_email``, Microsoft ones ``tenant_id``); new credentials start
disabled until updated with ``enabled: true``.
"""

from __future__ import annotations

from typing import Any

from calhooks.service.sandbox import output
from calhooks.service.sandbox.errors import bad_request, conflict, not_found
from calhooks.service.sandbox.operations.base import Call, Result, operation
from calhooks.service.sandbox.state import (
    WORKSPACE_PLATFORMS,
    DelegationCredential,
    WorkspacePlatform,
    new_cuid,
)


def _check_key(platform: WorkspacePlatform, key: dict[str, Any]) -> None:
    if platform.key_field not in key:
        raise bad_request(
            f"serviceAccountKey is not a {platform.name} service account key "
            f"(it needs {platform.key_field})"
        )


@operation("cal_organizations_delegation_credential_controller_create_delegation_credential")
def create_credential(call: Call) -> Result:
    body = call.body()
    platform = WORKSPACE_PLATFORMS.get(body["workspacePlatformSlug"])
    if platform is None:
        raise not_found(f"Workspace platform {body['workspacePlatformSlug']!r} not found")
    _check_key(platform, body["serviceAccountKey"])
    domain = body["domain"].lower()
    for existing in call.store.credentials.values():
        if existing.org_id == call.org.id and existing.domain == domain:
            raise conflict(
                f"Unique constraint failed on the fields: (`organizationId`,`domain`): "
                f"{domain} already has a delegation credential"
            )
    created = DelegationCredential(
        new_cuid(),
        call.org.id,
        domain,
        platform.slug,
        dict(body["serviceAccountKey"]),
        created_at=call.now,
        updated_at=call.now,
    )
    call.store.credentials[created.id] = created
    return Result(output.credential(created))


@operation("cal_organizations_delegation_credential_controller_update_delegation_credential")
def update_credential(call: Call) -> Result:
    found = call.store.credentials.get(call.params["credentialId"])
    if found is None or found.org_id != call.org.id:
        raise not_found(f"Delegation credential with id {call.params['credentialId']} not found")
    body = call.body()
    if "serviceAccountKey" in body:
        _check_key(WORKSPACE_PLATFORMS[found.platform_slug], body["serviceAccountKey"])
        found.service_account_key = dict(body["serviceAccountKey"])
    found.enabled = body.get("enabled", found.enabled)
    found.updated_at = call.now
    return Result(output.credential(found))
