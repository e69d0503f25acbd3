"""Waiting until every intake replica verifies with the secrets now in the store.

Each intake replica records, on every refresh of its secrets
(``CALHOOKS_WEBHOOK_SECRETS_REFRESH``), the store version it has loaded
(``WebhookSecretStore.acknowledge``). Before Cal.com is made to sign with a secret - a new
webhook, a secret put right, a rotation - ``wait_for_replicas`` waits until every replica
heard from recently has loaded at least the version that holds that secret. So no replica
ever receives a delivery signed with a secret it does not know yet.

A replica that has not refreshed for three intervals (plus two seconds) is taken for gone
(stopped, or cut off from Redis - it cannot queue deliveries then either); one not heard
from for a day is forgotten.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from calhooks.service.subscriptions.errors import PropagationError
from calhooks.service.subscriptions.secret_store import Clock, WebhookSecretStore

#: Replicas that have not refreshed for this long are removed from the record.
FORGET_REPLICAS_AFTER = 24 * 3600.0


def live_window(refresh_interval: float) -> float:
    """How long a replica may stay silent and still count as running."""
    return 3 * refresh_interval + 2.0


async def wait_for_replicas(
    store: WebhookSecretStore,
    version: int,
    *,
    refresh_interval: float,
    clock: Clock = time.time,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    poll: float = 0.05,
) -> list[str]:
    """Wait until every live replica has loaded ``version``; return their names.

    A live replica acknowledges within its refresh interval and a dead one stops counting
    as live after ``live_window``, so the wait ends within about that time; only a replica
    that keeps refreshing yet stays on an older version makes it fail.
    """
    within = live_window(refresh_interval)
    deadline = clock() + within + 1.0
    while True:
        now = clock()
        states = await store.replicas()
        await store.forget_replicas(
            name for name, state in states.items() if state.at < now - FORGET_REPLICAS_AFTER
        )
        live = {name: state for name, state in states.items() if state.at >= now - within}
        behind = sorted(name for name, state in live.items() if state.version < version)
        if not behind:
            return sorted(live)
        if now >= deadline:
            raise PropagationError(
                f"intake replicas {', '.join(behind)} did not load the new webhook secret"
                f" within {within:.0f}s"
            )
        await sleep(poll)
