"""Removing a connection cleanly: its webhook in Cal.com, then the connection, then its secrets.

``remove_connection`` (``calhooks connections remove``), under the connection's webhooks lock
(so no apply - a web replica's ``arrivals``, a CLI run - makes the webhook meanwhile; one that
waited for the lock finds the connection gone, ``Target.guard``, and stops):

1. lists the organization's webhooks with the connection's own credentials, org id and base
   URL, and deletes each one carrying the connection's ownership mark
   ``calhooks=<deployment>.<pcid>`` (``ownership.is_own``) - never a webhook calhooks does
   not own, nor the environment's or another connection's in the same organization;
2. deletes the connection (``ConnectionStore.remove``);
3. deletes every key of its secret store, ``calhooks:webhooks:<deployment>.<pcid>:*``
   (``WebhookSecretStore.purge``).

When Cal.com cannot be reached or refuses (a transport failure, a 5xx, a revoked key) step 1
raises ``RemovalError`` before anything is deleted, so the connection stays and the command can
be run again - unless ``force``: then steps 2 and 3 are done anyway and the result carries
why the webhook may still exist. ``keep_webhook`` skips step 1 (no Cal.com call). A connection
without an org id cannot have an organization webhook: step 1 has nothing to do.
"""

from __future__ import annotations

from dataclasses import dataclass

import structlog

from calhooks.service.calcom.client import CalcomClient
from calhooks.service.calcom.errors import CalcomError, ToolError
from calhooks.service.connections.store import ConnectionStore
from calhooks.service.subscriptions.errors import SubscriptionError
from calhooks.service.subscriptions.lock import webhooks_lock
from calhooks.service.subscriptions.ownership import is_own
from calhooks.service.subscriptions.remote import DELETE_TOOL, list_webhooks, org_params
from calhooks.service.subscriptions.secret_store import WebhookSecretStore
from calhooks.service.subscriptions.targets import Target

logger = structlog.get_logger(__name__)


class RemovalError(SubscriptionError):
    """The connection's webhook could not be deleted; the connection was kept."""


@dataclass(frozen=True, slots=True)
class Removal:
    """What removing one connection did."""

    removed: bool  # the connection was deleted (False: someone removed it meanwhile)
    deleted: tuple[str, ...] = ()  # ids of the connection's webhooks deleted in Cal.com
    foreign_kept: int = 0  # other webhooks of the organization, left alone
    keys_deleted: int = 0  # secret-store keys deleted
    checked: bool = False  # Cal.com was asked for the organization's webhooks
    webhook_error: str | None = None  # why its webhook may still exist (``force``)


async def remove_connection(
    cal: CalcomClient,
    connections: ConnectionStore,
    target: Target,
    store: WebhookSecretStore,
    *,
    keep_webhook: bool = False,
    force: bool = False,
) -> Removal:
    """Delete the connection ``target``'s own webhooks, the connection and its secret store
    (module docstring). ``cal`` is a client of the deployment: the connection's credentials
    are put on it here."""
    if target.connection is None:
        raise RemovalError("the environment's organization is not a connection")
    info = target.connection.info
    log = logger.bind(connection=info.name, pcid=info.pcid, org_id=info.org_id)
    deleted: list[str] = []
    foreign = 0
    error: str | None = None
    checked = False
    async with webhooks_lock(store):
        if not keep_webhook and info.org_id is not None:
            try:
                checked = True
                client = target.client(cal)
                hooks = await list_webhooks(client, info.org_id)
                own = [w for w in hooks if is_own(w.subscriber_url, store.deployment)]
                foreign = len(hooks) - len(own)
                for webhook in own:
                    await _delete(client, webhook.id, info.org_id)
                    deleted.append(webhook.id)
                    log.info("webhooks.deleted", webhook_id=webhook.id, reason="connection removed")
            except ToolError as exc:
                if not force:
                    raise RemovalError(
                        f"cannot delete the Cal.com webhook of {target.label} in org"
                        f" {info.org_id}: {exc}; the connection is kept (run again, or"
                        " --force to remove it anyway)"
                    ) from exc
                error = str(exc)
                log.warning("connections.remove_forced", reason=error, deleted=deleted)
        removed = await connections.remove(info.pcid)
        keys = await store.purge(keep_lock=True)  # the lock goes when it is released
    log.info("connections.removed", webhooks_deleted=deleted, keys_deleted=keys)
    return Removal(removed, tuple(deleted), foreign, keys, checked, error)


async def _delete(cal: CalcomClient, webhook_id: str, org_id: int) -> None:
    try:
        await cal.call(DELETE_TOOL, **org_params(org_id), webhookId=webhook_id)
    except CalcomError as exc:
        if exc.status != 404:  # 404: already gone, which is what we want
            raise
