"""The webhooks page's state: one section per organization calhooks keeps a webhook in.

The environment's organization (when ``CALHOOKS_API_KEY`` or the platform client names one)
comes first, then the connections, ``PAGE`` to a page in the connection store's order (tenant,
name): only the connections shown are decrypted and listed at Cal.com, ``CONCURRENCY`` at a
time. A section says which organization it is, its intake URL, its plan (in sync / to create
/ to update), its current secret's id and age - never a secret value - its stored secrets,
the replicas that loaded them and its last apply. One organization failing (Cal.com down,
a key refused, no org id, a record that no longer decrypts) shows its error in its section;
the others are unaffected.

``send_ping`` is the page's PING for one organization: the environment's (no connection)
or a connection named by PCID or by name (default tenant), as ``calhooks webhooks test``.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import httpx
import redis.asyncio as aioredis

from calhooks.service.calcom.client import CalcomClient
from calhooks.service.calcom.errors import ToolError
from calhooks.service.connections.store import (
    ConnectionInfo,
    ConnectionStore,
    ConnectionStoreError,
)
from calhooks.service.core.settings import Settings
from calhooks.service.subscriptions import ping, report
from calhooks.service.subscriptions.apply import plan_current
from calhooks.service.subscriptions.errors import PingError, SubscriptionError
from calhooks.service.subscriptions.plan import CreateWebhook, Plan, plan_webhooks
from calhooks.service.subscriptions.remote import list_webhooks
from calhooks.service.subscriptions.targets import (
    ENVIRONMENT,
    Target,
    connection_targets,
    environment_configured,
)

#: Connections shown per page.
PAGE = 50
#: Organizations whose webhooks are listed at Cal.com at once.
CONCURRENCY = 4
#: What one organization's failure may be: shown in its section, never a 500.
FAILURES = (SubscriptionError, ToolError, ConnectionStoreError, httpx.HTTPError)


def plan_state(plan: Plan) -> str:
    """``in sync``, ``to create`` or ``to update``: what an apply would do to the webhook."""
    if any(isinstance(action, CreateWebhook) for action in plan.actions):
        return "to create"
    if plan.has_changes:
        return "to update"
    return "in sync"


def age_text(seconds: float) -> str:
    """A secret's age, coarsely: ``45 s``, ``12 min``, ``5 h``, ``3 d``."""
    seconds = max(0.0, seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{int(seconds // size)} {unit}"
    return f"{int(seconds)} s"


@dataclass
class Section:
    """One organization on the page; ``key`` is what the test-delivery form sends."""

    key: str
    label: str
    info: ConnectionInfo | None = None
    url: str = ""
    plan: list[str] | None = None
    state: str | None = None
    secret_id: str | None = None
    secret_age: str | None = None
    secrets: list[dict[str, Any]] | None = None
    replicas: dict[str, Any] | None = None
    last_apply: dict[str, Any] | None = None
    error: str | None = None


async def _section(
    settings: Settings, redis: aioredis.Redis, cal: CalcomClient, target: Target, key: str
) -> Section:
    section = Section(key, target.label, target.connection.info if target.connection else None)
    try:
        target.check()
        store = target.store(settings, redis)
        snapshot = await store.snapshot()
        now = time.time()
        section.secrets = report.secrets_rows(snapshot, now, show_secret=False)
        section.replicas = await store.replicas()
        section.last_apply = await store.last_apply()
        if snapshot.current is not None:
            section.secret_id = snapshot.current.id
            section.secret_age = age_text(now - snapshot.current.created_at)
        desired = target.desired(settings, target.rule_triggers(settings))
        section.url = desired(None).subscriber_url
        plan = await plan_current(target.client(cal), store, desired, org_id=target.org_id)
        section.plan = report.plan_lines(plan, show_secret=False)
        section.state = plan_state(plan)
    except FAILURES as exc:
        section.error = str(exc) or type(exc).__name__
    return section


async def _connection_section(
    settings: Settings,
    redis: aioredis.Redis,
    cal: CalcomClient,
    store: ConnectionStore,
    info: ConnectionInfo,
) -> Section:
    label = f"connection {info.name} ({info.pcid})"
    try:
        connection = await store.get(info.pcid, tenant=None)
    except ConnectionStoreError as exc:
        return Section(info.pcid, label, info, error=str(exc))
    if connection is None:
        return Section(info.pcid, label, info, error="this connection was just removed")
    return await _section(settings, redis, cal, Target(connection), info.pcid)


async def page_state(settings: Settings, redis: aioredis.Redis, page: int) -> dict[str, Any]:
    """The sections of ``page`` (1-based; the environment's on the first) and the paging."""
    infos: list[ConnectionInfo] = []
    store: ConnectionStore | None = None
    connections_error: str | None = None
    try:
        store = ConnectionStore.from_settings(settings, redis)
        infos = await store.connections()
    except ConnectionStoreError as exc:
        connections_error = str(exc)
    pages = max(1, -(-len(infos) // PAGE))
    page = min(max(1, page), pages)
    shown = infos[(page - 1) * PAGE : page * PAGE]
    gate = asyncio.Semaphore(CONCURRENCY)

    async def gated(work: Any) -> Section:
        async with gate:
            result: Section = await work
            return result

    async with CalcomClient.from_settings(settings) as cal:
        works: list[Any] = []
        if page == 1 and environment_configured(settings):
            works.append(_section(settings, redis, cal, ENVIRONMENT, ""))
        if store is not None:
            works += [_connection_section(settings, redis, cal, store, info) for info in shown]
        sections = list(await asyncio.gather(*(gated(w) for w in works)))
    return {
        "sections": sections,
        "connection_count": len(infos),
        "first": (page - 1) * PAGE + 1 if shown else 0,
        "last": (page - 1) * PAGE + len(shown),
        "page": page,
        "pages": pages,
        "connections_error": connections_error,
    }


async def _target(settings: Settings, redis: aioredis.Redis, ref: str) -> Target:
    if not ref:
        if not environment_configured(settings):
            raise PingError("the environment configures no organization: name a connection")
        return ENVIRONMENT
    [target] = await connection_targets(settings, redis, [ref], everything=False)
    return target


async def send_ping(settings: Settings, redis: aioredis.Redis, ref: str) -> dict[str, Any]:
    """A PING for the organization ``ref`` names ("" for the environment's): the sandbox pings
    its webhook; against Cal.com, a PING signed with the organization's current secret.
    ``{"ok", "text", "url", "label"}`` (and ``"bad_input"`` when ``ref`` names no
    organization); a failure is a result too, never raised."""
    label = "environment organization" if not ref else f"connection {ref}"
    try:
        target = await _target(settings, redis, ref)
    except SubscriptionError as exc:  # names no organization: the form's fault
        return {"ok": False, "text": str(exc), "url": "", "label": label, "bad_input": True}
    label = target.label
    try:
        target.check()
        store = target.store(settings, redis)
        snapshot = await store.snapshot()
        desired = target.desired(settings, target.rule_triggers(settings))(snapshot.current)
        async with CalcomClient.from_settings(settings) as base:
            cal = target.client(base)
            webhook = plan_webhooks(desired, await list_webhooks(cal, target.org_id)).kept
        api_url = settings.api_url
        if target.connection is not None and target.connection.info.base_url:
            api_url = target.connection.info.base_url
        async with httpx.AsyncClient(timeout=settings.api_timeout) as http:
            if await ping.is_sandbox(http, api_url):
                if webhook is None:
                    raise PingError(f"no webhook delivers to {desired.subscriber_url} yet")
                outcome = await ping.sandbox_ping(http, api_url, webhook.id)
            else:
                if snapshot.current is None:
                    raise PingError("no webhook secret yet: apply the webhook plan first")
                outcome = await ping.direct_ping(
                    http,
                    desired.subscriber_url,
                    snapshot.current,
                    webhook_id=webhook.id if webhook else None,
                )
        verdict = outcome.verdict()
        return {"ok": outcome.verified, "text": verdict, "url": outcome.url, "label": label}
    except FAILURES as exc:
        return {"ok": False, "text": str(exc) or type(exc).__name__, "url": "", "label": label}
