"""Organization memberships: who belongs to the organization, with which role."""

from __future__ import annotations

from calhooks.service.sandbox import output
from calhooks.service.sandbox.errors import ApiError, conflict, not_found
from calhooks.service.sandbox.operations.base import Call, Result, operation, page
from calhooks.service.sandbox.state import Membership


def _membership(call: Call) -> Membership:
    membership_id = call.params["membershipId"]
    found = call.store.memberships.get(membership_id)
    if found is None or found.team_id != call.org.id:
        raise not_found(f"Membership with id {membership_id} not found in organization")
    return found


@operation("cal_organizations_memberships_controller_get_all_memberships")
def list_memberships(call: Call) -> Result:
    rows = [m for m in call.store.memberships.values() if m.team_id == call.org.id]
    return Result([output.membership(call.store, m) for m in page(rows, call.params)])


@operation("cal_organizations_memberships_controller_create_membership")
def create_membership(call: Call) -> Result:
    body, store = call.body(), call.store
    user_id = body["userId"]
    if user_id not in store.users:
        # A foreign-key violation, reported the way Cal.com's Prisma filter does.
        raise ApiError(400, "BAD_REQUEST", f"Foreign key constraint failed: no user {user_id}")
    if store.membership_of(call.org.id, user_id) is not None:
        raise conflict(
            f"Unique constraint failed on the fields: (`userId`,`teamId`): user {user_id} "
            f"is already a member of organization {call.org.id}"
        )
    created = Membership(
        store.next_id("membership"),
        user_id,
        call.org.id,
        role=body["role"],
        accepted=body["accepted"],
        disable_impersonation=body["disableImpersonation"],
    )
    store.memberships[created.id] = created
    return Result(output.membership(store, created))


@operation("cal_organizations_memberships_controller_get_org_membership")
def get_membership(call: Call) -> Result:
    return Result(output.membership(call.store, _membership(call)))


@operation("cal_organizations_memberships_controller_update_membership")
def update_membership(call: Call) -> Result:
    found = _membership(call)
    body = call.body()
    found.accepted = body.get("accepted", found.accepted)
    found.role = body.get("role", found.role)
    found.disable_impersonation = body.get("disableImpersonation", found.disable_impersonation)
    return Result(output.membership(call.store, found))


@operation("cal_organizations_memberships_controller_delete_membership")
def delete_membership(call: Call) -> Result:
    found = _membership(call)
    data = output.membership(call.store, found)
    call.store.remove_membership(found.id)
    return Result(data)
