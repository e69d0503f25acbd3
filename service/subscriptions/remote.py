"""The organization's webhooks as Cal.com reports them, read through ``CalcomClient``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from calhooks.service.calcom.client import CalcomClient

LIST_TOOL = "cal_organizations_webhooks_controller_get_all_organization_webhooks"
CREATE_TOOL = "cal_organizations_webhooks_controller_create_organization_webhook"
UPDATE_TOOL = "cal_organizations_webhooks_controller_update_org_webhook"
DELETE_TOOL = "cal_organizations_webhooks_controller_delete_webhook"
GET_TOOL = "cal_organizations_webhooks_controller_get_organization_webhook"


@dataclass(frozen=True, slots=True)
class RemoteWebhook:
    """One organization webhook; Cal.com returns ``secret`` in clear, so it stays out of reprs."""

    id: str
    subscriber_url: str
    active: bool
    triggers: tuple[str, ...]
    payload_template: str | None = None
    secret: str | None = field(default=None, repr=False)

    @classmethod
    def from_api(cls, data: Mapping[str, Any]) -> RemoteWebhook:
        triggers = data.get("triggers") or ()
        return cls(
            id=str(data["id"]),
            subscriber_url=str(data.get("subscriberUrl") or ""),
            active=bool(data.get("active")),
            triggers=tuple(str(t) for t in triggers),
            payload_template=data.get("payloadTemplate") or None,
            secret=data.get("secret") or None,
        )

    def summary(self) -> dict[str, Any]:
        """What may be shown of it: everything but the secret."""
        return {
            "id": self.id,
            "subscriberUrl": self.subscriber_url,
            "active": self.active,
            "triggers": list(self.triggers),
            "payloadTemplate": self.payload_template,
            "hasSecret": self.secret is not None,
        }


def org_params(org_id: int | None) -> dict[str, Any]:
    """``{"orgId": org_id}``, or nothing to let the client use ``CALHOOKS_ORG_ID``."""
    return {} if org_id is None else {"orgId": org_id}


async def list_webhooks(cal: CalcomClient, org_id: int | None = None) -> list[RemoteWebhook]:
    """Every webhook of the organization (all pages)."""
    return [
        RemoteWebhook.from_api(item) async for item in cal.paginate(LIST_TOOL, **org_params(org_id))
    ]
