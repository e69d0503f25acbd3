"""Who is calling, and may they: Cal.com's ``ApiAuthGuard``, ``IsOrgGuard`` and ``RolesGuard``.

* ``Authorization: Bearer cal_...`` is an API key; a Bearer value without the ``cal_``
  prefix is an OAuth access token (the sandbox issues none, so it is always invalid).
* ``x-cal-client-id`` + ``x-cal-secret-key`` is a platform OAuth client; one without the
  other is a 401.
* The ``orgId`` in the path must be the caller's organization (403 otherwise), and every
  operation needs an organization admin except the few Cal.com opens to members.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.datastructures import Headers

from calhooks.service.calcom.tools import TOOLS
from calhooks.service.sandbox.errors import forbidden, unauthorized
from calhooks.service.sandbox.state import ADMIN_ROLES, Store

#: Operations Cal.com allows to any organization member (``@Roles("ORG_MEMBER")``).
MEMBER_OPERATIONS = frozenset(
    {
        "cal_organizations_attributes_controller_get_organization_attributes",
        "cal_organizations_attributes_controller_get_organization_attribute",
        "cal_organizations_attributes_options_controller_get_organization_attribute_options",
        "cal_organizations_attributes_options_controller_unassign_organization_attribute_option_from_user",
    }
)
if MEMBER_OPERATIONS - TOOLS.keys():
    raise RuntimeError(f"unknown tools in MEMBER_OPERATIONS: {MEMBER_OPERATIONS - TOOLS.keys()}")

_PREFIX = "ApiAuthStrategy"


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated caller: its organization, role there, and a loggable credential id."""

    org_id: int
    role: str
    credential_id: str
    user_id: int | None
    #: Platform OAuth clients get Cal.com's higher rate limit.
    platform_client: bool = False


def authenticate(store: Store, headers: Headers) -> Caller:
    """The caller behind the request's credentials; ``ApiError`` 401 when there is none."""
    authorization = headers.get("authorization", "")
    client_id = headers.get("x-cal-client-id")
    client_secret = headers.get("x-cal-secret-key")
    if authorization:
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise unauthorized(f"{_PREFIX} - Invalid Bearer token")
        if not token.startswith("cal_"):
            raise unauthorized(f"{_PREFIX} - access token - Invalid Access Token")
        key = store.api_keys.get(token)
        if key is None:
            raise unauthorized(f"{_PREFIX} - api key - Your api key is not valid")
        return Caller(
            key.org_id, _role(store, key.org_id, key.user_id, key.role), key.id, key.user_id
        )
    if client_id and client_secret:
        client = store.clients.get(client_id)
        if client is None:
            raise unauthorized(f"{_PREFIX} - oAuth client - Client with ID {client_id} not found")
        if client.secret != client_secret:
            raise unauthorized(f"{_PREFIX} - oAuth client - Invalid client secret")
        role = _role(store, client.org_id, client.user_id, "OWNER")
        return Caller(client.org_id, role, f"client:{client.id}", client.user_id, True)
    if client_id:
        raise unauthorized(f"{_PREFIX} - x-cal-client-id provided without x-cal-secret-key")
    if client_secret:
        raise unauthorized(f"{_PREFIX} - x-cal-secret-key provided without x-cal-client-id")
    raise unauthorized(
        f"{_PREFIX} - No authentication method provided. Either provide a Bearer API key "
        "in the Authorization header or the x-cal-client-id and x-cal-secret-key headers"
    )


def _role(store: Store, org_id: int, user_id: int | None, fallback: str) -> str:
    """The credential owner's current role in the organization (their membership wins)."""
    if user_id is not None:
        membership = store.membership_of(org_id, user_id)
        if membership is not None:
            return membership.role if membership.accepted else "PENDING"
    return fallback


def authorize(caller: Caller, tool_name: str, org_id_text: str) -> None:
    """403 unless ``orgId`` is the caller's organization and its role allows the operation."""
    if org_id_text != str(caller.org_id):
        raise forbidden(f"IsOrgGuard - you are not a member of organization {org_id_text}")
    if tool_name in MEMBER_OPERATIONS:
        if caller.role in ADMIN_ROLES or caller.role == "MEMBER":
            return
    elif caller.role in ADMIN_ROLES:
        return
    required = "ORG_MEMBER" if tool_name in MEMBER_OPERATIONS else "ORG_ADMIN"
    raise forbidden(
        f"RolesGuard - {caller.credential_id} does not have the required role {required} "
        f"in organization {caller.org_id}"
    )
