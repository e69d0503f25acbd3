"""Organization webhooks: where the sandbox delivers events, with their signing secrets.

Ids are UUID strings; the secret is returned in clear text when set, as Cal.com does. One
subscriber URL may be registered once per organization (409 ``ConflictException``). Any
``http(s)`` URL is accepted, loopback included: the sandbox runs next to its subscribers.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from calhooks.service.sandbox import output
from calhooks.service.sandbox.errors import (
    CONFLICT_EXCEPTION,
    ApiError,
    bad_request,
    nest_details,
    not_found,
)
from calhooks.service.sandbox.operations.base import Call, Result, operation, page
from calhooks.service.sandbox.state import Webhook, new_uuid


def _check_url(call: Call, url: str, keep: str | None = None) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise bad_request("subscriberUrl must be a URL address")
    for existing in call.store.webhooks.values():
        if (
            existing.team_id == call.org.id
            and existing.subscriber_url == url
            and existing.id != keep
        ):
            message = "Webhook with this subscriber url already exists for this user"
            raise ApiError(409, CONFLICT_EXCEPTION, message, nest_details(409, message))


def _webhook(call: Call) -> Webhook:
    found = call.store.webhooks.get(call.params["webhookId"])
    if found is None or found.team_id != call.org.id:
        raise not_found(f"Webhook with id {call.params['webhookId']} not found")
    return found


@operation("cal_organizations_webhooks_controller_get_all_organization_webhooks")
def list_webhooks(call: Call) -> Result:
    rows = [w for w in call.store.webhooks.values() if w.team_id == call.org.id]
    return Result([output.webhook(w) for w in page(rows, call.params)])


@operation("cal_organizations_webhooks_controller_create_organization_webhook")
def create_webhook(call: Call) -> Result:
    body = call.body()
    _check_url(call, body["subscriberUrl"])
    created = Webhook(
        new_uuid(),
        call.org.id,
        body["subscriberUrl"],
        body["active"],
        list(body["triggers"]),
        payload_template=body.get("payloadTemplate"),
        secret=body.get("secret"),
        version=body.get("version", "2021-10-20"),
    )
    call.store.webhooks[created.id] = created
    return Result(output.webhook(created))


@operation("cal_organizations_webhooks_controller_get_organization_webhook")
def get_webhook(call: Call) -> Result:
    return Result(output.webhook(_webhook(call)))


@operation("cal_organizations_webhooks_controller_update_org_webhook")
def update_webhook(call: Call) -> Result:
    found = _webhook(call)
    body = call.body()
    if "subscriberUrl" in body:
        _check_url(call, body["subscriberUrl"], keep=found.id)
        found.subscriber_url = body["subscriberUrl"]
    found.active = body.get("active", found.active)
    found.triggers = list(body.get("triggers", found.triggers))
    found.payload_template = body.get("payloadTemplate", found.payload_template)
    found.secret = body.get("secret", found.secret)
    found.version = body.get("version", found.version)
    return Result(output.webhook(found))


@operation("cal_organizations_webhooks_controller_delete_webhook")
def delete_webhook(call: Call) -> Result:
    found = _webhook(call)
    del call.store.webhooks[found.id]
    return Result(output.webhook(found))
