"""Replace the webhook's signing secret without a single delivery being rejected.

Under the webhooks lock:

1. a new secret is generated and stored, and the command waits until every live intake
   replica has loaded it (each records the version it verifies with on every refresh of its
   secrets, ``CALHOOKS_WEBHOOK_SECRETS_REFRESH``; a replica silent for three intervals is
   taken for gone) - from then on the intake accepts the old and the new secret;
2. Cal.com's webhook is updated to sign with the new secret;
3. the new secret becomes current and every other one expires after the grace period
   (``CALHOOKS_WEBHOOK_ROTATION_GRACE``), long enough for deliveries signed before step 2 -
   in flight, or retried later by Cal.com - to arrive; secrets already expired are deleted.

Deliveries signed with either secret verify throughout. If a live replica does not confirm
in time, the new secret is dropped and nothing else changes. If step 2 fails, the webhook is
read back: still on the old secret, the new one is dropped; unknown, both stay accepted for
the grace period and the command fails, so a second ``rotate`` (or ``apply``) finishes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog

from calhooks.service.calcom.client import CalcomClient
from calhooks.service.calcom.errors import CalcomError, ToolError
from calhooks.service.subscriptions.desired import DesiredFactory, DesiredWebhook
from calhooks.service.subscriptions.errors import PropagationError, RotationError
from calhooks.service.subscriptions.lock import LOCK_WAIT, webhooks_lock
from calhooks.service.subscriptions.plan import plan_webhooks
from calhooks.service.subscriptions.propagation import wait_for_replicas
from calhooks.service.subscriptions.remote import (
    GET_TOOL,
    UPDATE_TOOL,
    RemoteWebhook,
    list_webhooks,
    org_params,
)
from calhooks.service.subscriptions.secret_store import Clock, StoredSecret, WebhookSecretStore

logger = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class RotationResult:
    webhook_id: str
    new: StoredSecret
    retired: dict[str, float]  # old secret id -> when it stops being accepted
    purged: tuple[str, ...]
    replicas: tuple[str, ...]  # intake replicas that confirmed the new secret


async def rotate_secret(
    cal: CalcomClient,
    store: WebhookSecretStore,
    desired_for: DesiredFactory,
    *,
    grace: float,
    refresh_interval: float,
    org_id: int | None = None,
    lock_wait: float = LOCK_WAIT,
    clock: Clock = time.time,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> RotationResult:
    """Rotate the deployment's webhook secret (see the module docstring for the steps).

    ``refresh_interval`` is the intake's ``CALHOOKS_WEBHOOK_SECRETS_REFRESH``.
    """
    async with webhooks_lock(store, wait=lock_wait):
        before = await store.snapshot()
        desired = desired_for(before.current)
        hook = _own_webhook(desired, await list_webhooks(cal, org_id))
        new = await store.add(make_current=False)
        log = logger.bind(webhook_id=hook.id, secret_id=new.id)
        log.info("webhooks.rotation_started")
        try:
            replicas = await wait_for_replicas(
                store,
                await store.version(),
                refresh_interval=refresh_interval,
                clock=clock,
                sleep=sleep,
            )
        except PropagationError as exc:
            await store.expire(new.id, clock())
            raise RotationError(f"{exc}; nothing changed in Cal.com") from exc
        await _switch(cal, store, hook, new, grace=grace, org_id=org_id, clock=clock)
        now = clock()
        retire = {
            s.id: min(s.expires_at or now + grace, now + grace)
            for s in before.valid(now)
            if s.id != new.id
        }
        await store.promote(new.id, retire=retire)
        purged = tuple(await store.purge_expired())
        log.info("webhooks.rotated", retired=sorted(retire), purged=list(purged))
    return RotationResult(hook.id, new, retire, purged, tuple(replicas))


def _own_webhook(desired: DesiredWebhook, remote: list[RemoteWebhook]) -> RemoteWebhook:
    """The webhook ``apply`` keeps at the desired URL (the same choice among duplicates)."""
    kept = plan_webhooks(desired, remote).kept
    if kept is not None:
        return kept
    raise RotationError(
        f"no webhook delivers to {desired.subscriber_url} yet: run `calhooks webhooks apply` first"
    )


async def _switch(
    cal: CalcomClient,
    store: WebhookSecretStore,
    hook: RemoteWebhook,
    new: StoredSecret,
    *,
    grace: float,
    org_id: int | None,
    clock: Clock,
) -> None:
    """Point Cal.com's webhook at ``new``; on failure leave the store consistent and raise."""
    try:
        await cal.call(UPDATE_TOOL, **org_params(org_id), webhookId=hook.id, secret=new.value)
        return
    except ToolError as exc:
        failure = exc
    definite = isinstance(failure, CalcomError) and 400 <= failure.status < 500
    if not definite:
        try:
            data = await cal.call(GET_TOOL, **org_params(org_id), webhookId=hook.id)
        except ToolError:
            pass  # still unknown
        else:
            if RemoteWebhook.from_api(data).secret == new.value:
                return  # the update did land
            definite = True
    if definite:
        await store.expire(new.id, clock())
        raise RotationError(
            f"Cal.com did not take the new secret ({failure}); nothing changed"
        ) from failure
    await store.expire(new.id, clock() + grace)
    raise RotationError(
        f"cannot tell whether Cal.com took the new secret ({failure}); both secrets stay"
        " accepted for the grace period - run `calhooks webhooks rotate` again"
    ) from failure
