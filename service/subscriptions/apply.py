"""Make the organization's webhooks match the plan, through ``CalcomClient``.

``apply_webhooks`` holds the deployment's webhooks lock, makes sure a current secret exists
(generating one the first time), reads the webhooks, plans and executes. Because the plan is
made under the lock from what Cal.com reports at that moment, a second apply - or a replica
that waited for the lock - finds nothing left to do.

A create is a POST, which the client never repeats after an ambiguous failure (timeout,
5xx): the webhook may exist anyway. So on such a failure, and on a 409 (the URL is already
registered), the webhooks are listed again and the one at our URL is adopted and brought in
line instead of being created twice.

Cal.com is never made to sign with a secret an intake replica has not loaded yet: before a
create or a secret update, ``apply`` waits for every live replica (``propagation``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import structlog

from calhooks.service.calcom.client import CalcomClient
from calhooks.service.calcom.errors import CalcomError, CalcomTransportError
from calhooks.service.subscriptions.desired import DesiredFactory, DesiredWebhook
from calhooks.service.subscriptions.lock import LOCK_WAIT, webhooks_lock
from calhooks.service.subscriptions.plan import (
    Action,
    CreateWebhook,
    DeleteWebhook,
    Plan,
    UpdateWebhook,
    plan_webhooks,
)
from calhooks.service.subscriptions.propagation import wait_for_replicas
from calhooks.service.subscriptions.remote import (
    CREATE_TOOL,
    DELETE_TOOL,
    UPDATE_TOOL,
    RemoteWebhook,
    list_webhooks,
    org_params,
)
from calhooks.service.subscriptions.secret_store import StoredSecret, WebhookSecretStore

logger = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Done:
    """An action carried out, on which webhook, and anything worth saying about it."""

    action: Action
    webhook_id: str
    note: str | None = None


@dataclass(frozen=True, slots=True)
class ApplyResult:
    plan: Plan
    secret: StoredSecret
    secret_created: bool
    done: tuple[Done, ...]

    @property
    def changed(self) -> bool:
        return self.secret_created or bool(self.done)


async def plan_current(
    cal: CalcomClient,
    store: WebhookSecretStore,
    desired_for: DesiredFactory,
    *,
    prune: bool = False,
    org_id: int | None = None,
) -> Plan:
    """The plan against the organization as it is now; reads only, changes nothing."""
    snapshot = await store.snapshot()
    desired = desired_for(snapshot.current)
    remote = await list_webhooks(cal, org_id)
    return plan_webhooks(desired, remote, prune=prune, known_secrets=snapshot.secrets)


async def apply_webhooks(
    cal: CalcomClient,
    store: WebhookSecretStore,
    desired_for: DesiredFactory,
    *,
    refresh_interval: float,
    prune: bool = False,
    org_id: int | None = None,
    lock_wait: float = LOCK_WAIT,
    guard: Callable[[], Awaitable[None]] | None = None,
) -> ApplyResult:
    """Plan and execute under the webhooks lock.

    Before Cal.com is made to sign with the secret (a new webhook, a secret put right) every
    live intake replica must have loaded it (``propagation``); ``refresh_interval`` is the
    intake's ``CALHOOKS_WEBHOOK_SECRETS_REFRESH``. ``guard``, awaited first under the lock,
    may raise to stop before anything changes (a connection removed meanwhile,
    ``targets.Target.guard``).
    """
    async with webhooks_lock(store, wait=lock_wait):
        if guard is not None:
            await guard()
        secret, created = await store.ensure_current()
        if created:
            logger.info("webhooks.secret_generated", secret_id=secret.id)
        snapshot = await store.snapshot()
        desired = desired_for(secret)
        remote = await list_webhooks(cal, org_id)
        plan = plan_webhooks(desired, remote, prune=prune, known_secrets=snapshot.secrets)
        if _signs_with_secret(plan):
            await wait_for_replicas(store, snapshot.version, refresh_interval=refresh_interval)
        done = await execute_plan(cal, plan, secret, org_id=org_id)
        await store.record_apply(
            {
                "at": store.clock(),
                "secret_created": created,
                "secret_id": secret.id,
                "done": [
                    {"action": _ACTION_NAMES[type(d.action)], "webhook": d.webhook_id,
                     "note": d.note}
                    for d in done
                ],
            }
        )  # fmt: skip
    return ApplyResult(plan, secret, created, tuple(done))


_ACTION_NAMES: dict[type, str] = {
    CreateWebhook: "create",
    UpdateWebhook: "update",
    DeleteWebhook: "delete",
}


def _signs_with_secret(plan: Plan) -> bool:
    """Whether carrying out ``plan`` makes Cal.com sign with the desired secret anew."""
    return any(
        isinstance(a, CreateWebhook) or (isinstance(a, UpdateWebhook) and "secret" in a.fields())
        for a in plan.actions
    )


async def execute_plan(
    cal: CalcomClient, plan: Plan, secret: StoredSecret, *, org_id: int | None = None
) -> list[Done]:
    """Carry out ``plan``'s actions in order, signing with ``secret``."""
    done: list[Done] = []
    for action in plan.actions:
        if isinstance(action, CreateWebhook):
            done.append(await _create(cal, plan.desired, action, secret, org_id))
        elif isinstance(action, UpdateWebhook):
            await cal.call(
                UPDATE_TOOL, **org_params(org_id), **_update_params(action, plan.desired, secret)
            )
            logger.info(
                "webhooks.updated", webhook_id=action.webhook.id, fields=sorted(action.fields())
            )
            done.append(Done(action, action.webhook.id))
        else:
            done.append(await _delete(cal, action, org_id))
    return done


def _update_params(
    action: UpdateWebhook, desired: DesiredWebhook, secret: StoredSecret
) -> dict[str, Any]:
    params: dict[str, Any] = {"webhookId": action.webhook.id}
    fields = action.fields()
    if "active" in fields:
        params["active"] = True
    if "triggers" in fields:
        params["triggers"] = list(desired.triggers)
    if "payloadTemplate" in fields:
        params["payloadTemplate"] = ""  # empty: Cal.com sends its default body again
    if "secret" in fields:
        params["secret"] = secret.value
    return params


def _find(hooks: Iterable[RemoteWebhook], url: str) -> RemoteWebhook | None:
    return next((w for w in hooks if w.subscriber_url == url), None)


async def _create(
    cal: CalcomClient,
    desired: DesiredWebhook,
    action: CreateWebhook,
    secret: StoredSecret,
    org_id: int | None,
) -> Done:
    params = {
        "subscriberUrl": action.subscriber_url,
        "active": True,
        "triggers": list(action.triggers),
        "secret": secret.value,
    }
    try:
        data = await cal.call(CREATE_TOOL, **org_params(org_id), **params)
    except (CalcomTransportError, CalcomError) as exc:
        status = exc.status if isinstance(exc, CalcomError) else None
        if status is not None and status < 500 and status != 409:
            raise
        found = _find(await list_webhooks(cal, org_id), action.subscriber_url)
        if found is None:
            raise
        logger.warning("webhooks.create_adopted", webhook_id=found.id, reason=str(exc))
        fix = plan_webhooks(desired, [found]).actions
        for extra in fix:
            if isinstance(extra, UpdateWebhook):
                await cal.call(
                    UPDATE_TOOL, **org_params(org_id), **_update_params(extra, desired, secret)
                )
        return Done(action, found.id, note="already existed after an uncertain create; adopted")
    webhook_id = str(data["id"])
    logger.info("webhooks.created", webhook_id=webhook_id, triggers=list(action.triggers))
    return Done(action, webhook_id)


async def _delete(cal: CalcomClient, action: DeleteWebhook, org_id: int | None) -> Done:
    try:
        await cal.call(DELETE_TOOL, **org_params(org_id), webhookId=action.webhook.id)
    except CalcomError as exc:
        if exc.status != 404:
            raise
        return Done(action, action.webhook.id, note="already gone")
    logger.info("webhooks.deleted", webhook_id=action.webhook.id, reason=action.reason)
    return Done(action, action.webhook.id)
