"""The reconciliation page: the workers' last passes, the lock, the snapshot, recent events.

Reads reconciliation's records (``calhooks.workers.reconcile.records``, never its runtime):
the pass history of every organization (``records.read_all_passes``: which organization -
the environment's or a connection -, when, how long, who, entities seen per kind, events
queued per trigger, calls spent against the budget) and, for the environment's organization,
whether a pass holds the lock and who, the snapshot's size
per kind, when the current period ends, and the events recent passes queued, each with its
outcome from the recent-events index and a link to its page. ``run_now`` (operators only)
asks the workers for a pass at once (``records.request_run``): the next worker to check
takes the request.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from calhooks.service.console.auth import Session
from calhooks.service.core import eventindex
from calhooks.workers.reconcile import records

if TYPE_CHECKING:
    from calhooks.service.console.app import Context

#: Passes and events the page shows (the records keep more: ``records.PASSES_KEPT``...).
PASSES_SHOWN = 20
EVENTS_SHOWN = 50


def _off_reason(ctx: Context) -> str | None:
    """Why this deployment's workers run no pass (from the settings the console shares)."""
    if ctx.settings.org_id is None:
        return (
            "CALHOOKS_ORG_ID is not set: the environment's organization is not reconciled"
            " (the connections' passes, if any, are listed below)."
        )
    if ctx.settings.reconcile_period <= 0:
        return (
            "CALHOOKS_RECONCILE_PERIOD is 0: the workers run no pass "
            "(`calhooks reconcile` still does)."
        )
    return None


async def _outcomes(ctx: Context, ids: list[str]) -> dict[str, str]:
    """Each event's outcome from its summary in the recent-events index (if still kept)."""
    if not ids:
        return {}
    raw = await ctx.redis.mget([eventindex.summary_key(i) for i in ids])
    found: dict[str, str] = {}
    for event_id, item in zip(ids, raw, strict=True):
        if item is not None:
            try:
                found[event_id] = str(json.loads(item).get("outcome", ""))
            except ValueError:
                continue
    return found


async def page(ctx: Context, request: Request, session: Session, _: FormData | None) -> Response:
    org_id = ctx.settings.org_id
    values: dict[str, Any] = {
        "off": _off_reason(ctx),
        "period": ctx.settings.reconcile_period,
        "notice": request.query_params.get("notice"),
        "state": None,
        "outcomes": {},
        "passes": await records.read_all_passes(ctx.redis, PASSES_SHOWN),
    }
    if org_id is not None:
        state = await records.read_status(
            ctx.redis, org_id, passes=PASSES_SHOWN, events=EVENTS_SHOWN
        )
        values["state"] = state
        values["outcomes"] = await _outcomes(ctx, [e.id for e in state.events])
        if not values["passes"]:  # a history written before connections: this org's only
            values["passes"] = state.passes
    return ctx.render(request, session, "reconciliation.html", **values)


async def run_now(ctx: Context, request: Request, session: Session, _: FormData | None) -> Response:
    base = request.scope.get("root_path", "").rstrip("/")
    org_id = ctx.settings.org_id
    off = _off_reason(ctx)
    if off is not None or org_id is None:
        notice = f"No pass was requested. {off}"
    else:
        assert session.user is not None  # the gate signed the visitor in
        await records.request_run(ctx.redis, org_id, f"console: {session.user.name}")
        notice = "A pass is requested: the next worker to check (within 20 seconds) runs it."
    return RedirectResponse(f"{base}/reconciliation?{urlencode({'notice': notice})}", 303)
