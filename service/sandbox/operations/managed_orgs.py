"""Managed organizations: sub-organizations the caller's organization creates and runs.

A created organization is a full sandbox organization with an API key of its own, returned
once in the create answer, so a test can go on to call the 37 tools against it.
"""

from __future__ import annotations

import math
import re
import secrets
from collections.abc import Mapping
from typing import Any

from calhooks.service.sandbox import output
from calhooks.service.sandbox.errors import bad_request, conflict, not_found
from calhooks.service.sandbox.operations.base import Call, Result, operation, page
from calhooks.service.sandbox.state import ApiKey, Organization, Store


def _kebab(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "organization"


def _managed(call: Call) -> Organization:
    managed_id = call.params["managedOrganizationId"]
    found = call.store.orgs.get(managed_id)
    if found is None or found.parent_id != call.org.id:
        raise not_found(f"Managed organization with id {managed_id} not found")
    return found


def _check_slug_free(store: Store, slug: str) -> None:
    if any(org.slug == slug for org in store.orgs.values()):
        raise conflict(f"Unique constraint failed on the fields: (`slug`): {slug!r} is taken")


def pagination(total: int, skip: int, take: int, returned: int) -> dict[str, Any]:
    """Cal.com's PaginationMetaDto for one page."""
    return {
        "totalItems": total,
        "remainingItems": max(0, total - (skip + take)),
        "returnedItems": returned,
        "itemsPerPage": take,
        "currentPage": skip // take + 1,
        "totalPages": math.ceil(total / take),
        "hasNextPage": skip + take < total,
        "hasPreviousPage": skip > 0,
    }


@operation("cal_organizations_controller_create_organization")
def create_organization(call: Call) -> Result:
    body = call.body()
    slug = body.get("slug") or _kebab(body["name"])
    _check_slug_free(call.store, slug)
    created = Organization(
        call.store.next_id("org"), body["name"], slug, body.get("metadata"), parent_id=call.org.id
    )
    call.store.orgs[created.id] = created
    key = ApiKey(
        f"key-{call.store.next_id('api_key')}", "cal_test_" + secrets.token_hex(16), created.id
    )
    call.store.api_keys[key.key] = key
    return Result({**output.managed_org(created), "apiKey": key.key})


def _matches(org: Organization, params: Mapping[str, Any]) -> bool:
    if "slug" in params and org.slug != params["slug"]:
        return False
    if "metadataKey" in params:
        value = (org.metadata or {}).get(params["metadataKey"])
        return value is not None and str(value) == params["metadataValue"]
    return True


@operation("cal_organizations_controller_get_organizations")
def list_organizations(call: Call) -> Result:
    params = call.params
    if ("metadataKey" in params) != ("metadataValue" in params):
        raise bad_request("metadataKey and metadataValue must be provided together")
    rows = [o for o in call.store.managed_by(call.org.id) if _matches(o, params)]
    shown = page(rows, params)
    meta = pagination(len(rows), params["skip"], params["take"], len(shown))
    return Result([output.managed_org(o) for o in shown], pagination=meta)


@operation("cal_organizations_controller_get_organization")
def get_organization(call: Call) -> Result:
    return Result(output.managed_org(_managed(call)))


@operation("cal_organizations_controller_update_organization")
def update_organization(call: Call) -> Result:
    managed = _managed(call)
    body = call.body()
    managed.name = body.get("name", managed.name)
    if "metadata" in body:
        managed.metadata = body["metadata"]
    return Result(output.managed_org(managed))


@operation("cal_organizations_controller_delete_organization")
def delete_organization(call: Call) -> Result:
    managed = _managed(call)
    call.store.remove_org(managed.id)
    return Result(output.managed_org(managed))
