"""The console's pages: overview, events, one event, rules, dead letters, webhooks, connections
(reconciliation has its own module, ``reconciliation``).

Each view is ``async def view(ctx, request, session, form) -> Response``, called by the gate
in ``console/app.py`` once the visitor is signed in (and, for a POST, the CSRF token and the
role were checked). Views read Redis through the workers' and subscriptions' own stores and
render a template; nothing here writes except replay/drop (the dead-letter queue's own
operations) and the test delivery.
"""

from __future__ import annotations

import json
import math
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from redis.exceptions import RedisError
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from calhooks.service.connections.store import ConnectionStore, ConnectionStoreError
from calhooks.service.console import charts, eventlist, timeline, webhookstate
from calhooks.service.console.auth import Session
from calhooks.service.core import eventindex, timeseries
from calhooks.service.events import BodyError, Event, event_from_body
from calhooks.workers.deadletter import DeadLetter, DeadLetterQueue
from calhooks.workers.deadletter import replay as replay_entry
from calhooks.workers.eventlog import EventLog, redact
from calhooks.workers.ledger import Ledger
from calhooks.workers.rules.dryrun import dry_run as run_dry

if TYPE_CHECKING:
    from calhooks.service.console.app import Context

CHART_MINUTES = 180
INTAKE_OUTCOMES = (
    "accepted",
    "spooled",
    "duplicate",
    "ping",
    "bad_signature",
    "bad_body",
    "too_large",
    "bad_method",
    "unavailable",
    "error",
)
WORKER_OUTCOMES = ("done", "no_rule", "retrying", "dead_lettered", "running")
DLQ_PAGE = 50
REPLAY_ALL_LIMIT = 10_000


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _levels(series: timeseries.Series, name: str) -> list[float | None]:
    """A gauge per minute; ``None`` for minutes nobody sampled it."""
    return [float(c[name]) if name in c else None for c in series.counts]


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return "> 60000 ms" if math.isinf(value) else f"<= {value:g} ms"


async def overview(
    ctx: Context, request: Request, session: Session, _: FormData | None
) -> Response:
    redis = ctx.redis
    series = await timeseries.read(redis, CHART_MINUTES)
    now_ms = int(time.time() * 1000)
    async with redis.pipeline(transaction=False) as pipe:
        pipe.zcard(ctx.settings.queue_name)
        pipe.zcount(ctx.settings.queue_name, "-inf", now_ms)
        pipe.zcard("calhooks:dlq:index")
        pipe.info("memory")
        pipe.zcard(eventindex.INDEX_KEY)
        queued, ready, dead, memory, indexed = await pipe.execute()
    deliveries = [(o, series.values("intake." + o)) for o in INTAKE_OUTCOMES]
    outcomes = [(o, series.values("worker." + o)) for o in WORKER_OUTCOMES]
    calls = series.values("calcom.calls")
    throttled = series.values("calcom.429")
    last_hour = {
        name: sum(series.values(name)[-60:])
        for name in (
            "intake.accepted",
            "intake.bad_signature",
            "intake.unavailable",
            "intake.error",
            "intake.spooled",
            "calcom.calls",
            "calcom.429",
            "worker.retrying",
        )
    }
    spool = ctx.spool
    spool_state = {
        "directory": str(spool.directory) if spool else "-",
        "bytes": spool.size if spool else 0,
        "pending": spool.pending() if spool else False,
    }
    attention: list[tuple[str, str, str]] = []  # (text, link, level)
    if dead:
        attention.append((f"{dead} rule(s) in the dead-letter queue", "/dead-letters", "bad"))
    if spool_state["pending"]:
        attention.append(("deliveries wait in the disk spool (Redis was away)", "", "warn"))
    if last_hour["intake.bad_signature"]:
        attention.append(
            (
                f"{last_hour['intake.bad_signature']} deliveries with a bad signature in the last "
                "hour (a secret out of step?)",
                "/webhooks",
                "warn",
            )
        )
    if last_hour["calcom.429"]:
        attention.append(
            (f"Cal.com answered 429 {last_hour['calcom.429']} times in the last hour", "", "warn")
        )
    if last_hour["intake.unavailable"] or last_hour["intake.error"]:
        attention.append(("the intake answered 503 in the last hour", "", "bad"))
    if ready > 100:
        attention.append((f"{ready} events wait in the queue: enough workers?", "", "warn"))
    rules = ctx.rules.refresh()
    if rules.problems:
        attention.append(("the rules file has problems", "/rules", "bad"))
    if rules.path is None:
        attention.append(("no rules file (CALHOOKS_RULES_FILE): no rule runs", "/rules", "warn"))
    figures = {
        "queued": queued,
        "ready": ready,
        "dead": dead,
        "indexed": indexed,
        "redis_memory": _text(memory.get("used_memory_human", "?")),
        "intake_p50": _ms(series.quantile("intake.ms", 0.5, minutes=60)),
        "intake_p99": _ms(series.quantile("intake.ms", 0.99, minutes=60)),
        "worker_p50": _ms(series.quantile("worker.ms", 0.5, minutes=60)),
        "worker_p99": _ms(series.quantile("worker.ms", 0.99, minutes=60)),
        **{k.replace(".", "_"): v for k, v in last_hour.items()},
    }
    chart = {
        "deliveries": charts.stacked_bars("Deliveries per minute by outcome", deliveries),
        "outcomes": charts.stacked_bars("Events processed per minute by outcome", outcomes),
        "intake_latency": charts.lines(
            "Intake latency",
            [
                charts.Line("p50", series.quantiles("intake.ms", 0.5)),
                charts.Line("p99", series.quantiles("intake.ms", 0.99)),
            ],
        ),
        "worker_latency": charts.lines(
            "Worker latency per attempt",
            [
                charts.Line("p50", series.quantiles("worker.ms", 0.5)),
                charts.Line("p99", series.quantiles("worker.ms", 0.99)),
            ],
        ),
        "levels": charts.lines(
            "Queue depth and dead letters",
            [
                charts.Line("queue", _levels(series, "queue.depth")),
                charts.Line("dead letters", _levels(series, "dlq.entries")),
            ],
            unit="",
        ),
        "calls": charts.stacked_bars(
            "Cal.com calls per minute",
            [
                ("answered", [c - t for c, t in zip(calls, throttled, strict=True)]),
                ("429", throttled),
            ],
        ),
    }
    legends = {
        "deliveries": [o for o, v in deliveries if sum(v)],
        "outcomes": [o for o, v in outcomes if sum(v)],
    }
    return ctx.render(
        request,
        session,
        "overview.html",
        figures=figures,
        chart=chart,
        legends=legends,
        attention=attention,
        spool=spool_state,
        minutes=CHART_MINUTES,
        intake_names=INTAKE_OUTCOMES,
        worker_names=WORKER_OUTCOMES,
    )


def _epoch(text: str | None) -> float | None:
    """A ``datetime-local`` value (UTC) as epoch seconds."""
    if not text:
        return None
    try:
        return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()
    except ValueError:
        return None


def _filters(request: Request) -> eventlist.Filters:
    q = request.query_params
    return eventlist.Filters(
        trigger=q.get("trigger", "").strip(),
        outcome=q.get("outcome", "").strip(),
        rule=q.get("rule", "").strip(),
        uid=q.get("uid", "").strip(),
        since=_epoch(q.get("since")),
        until=_epoch(q.get("until")),
        prefix=q.get("id", "").strip(),
    )


async def _event_page(ctx: Context, request: Request) -> dict[str, Any]:
    filters = _filters(request)
    before_text = request.query_params.get("before")
    try:
        before = float(before_text) if before_text else None
    except ValueError:
        before = None
    page = await eventlist.query(ctx.redis, filters, before=before)
    query = {k: v for k, v in request.query_params.items() if k != "before" and v}
    older = (
        "?" + urlencode({**query, "before": repr(page.older)}) if page.older is not None else None
    )
    return {
        "page": page,
        "filters": filters,
        "query": urlencode(query),
        "values": dict(request.query_params),
        "older": older,
        "live": before is None,
    }


async def events(ctx: Context, request: Request, session: Session, _: FormData | None) -> Response:
    values = await _event_page(ctx, request)
    rules = ctx.rules.refresh().rules
    return ctx.render(
        request,
        session,
        "events.html",
        triggers=sorted(rules.triggers),
        rule_names=[r.name for r in rules],
        outcomes=eventindex.OUTCOMES,
        **values,
    )


async def event_rows(
    ctx: Context, request: Request, session: Session, _: FormData | None
) -> Response:
    """The events table alone (what htmx polls to keep the list live)."""
    return ctx.render(request, session, "event_rows.html", **await _event_page(ctx, request))


async def event(ctx: Context, request: Request, session: Session, _: FormData | None) -> Response:
    wanted = request.path_params["event_id"]
    event_id = await timeline.resolve(ctx.redis, wanted)
    if event_id is None:
        return ctx.error(
            request,
            session,
            404,
            "No such event",
            f"No record of event {wanted!r}: not processed yet, expired, or the prefix "
            "is ambiguous.",
        )
    view = await timeline.gather(
        ctx.redis, event_id, ttl=ctx.settings.worker_record_ttl, rules=ctx.rules.refresh().rules
    )
    return ctx.render(request, session, "event.html", event=view)


async def rules(ctx: Context, request: Request, session: Session, _: FormData | None) -> Response:
    recent = await eventlist.query(ctx.redis, eventlist.Filters(), limit=20)
    return ctx.render(
        request,
        session,
        "rules.html",
        rules=ctx.rules.refresh(),
        recent=recent.events,
        report=None,
        body="",
        chosen="",
        error=None,
    )


async def dry_run(
    ctx: Context, request: Request, session: Session, form: FormData | None
) -> Response:
    form = form or FormData()
    body = str(form.get("body", "")).strip()
    chosen = str(form.get("event", "")).strip()
    error: str | None = None
    event: Event | None = None
    if body:
        try:
            event = event_from_body(body.encode(), received_at=time.time())
        except BodyError as exc:
            error = f"That body is not a delivery: {exc}"
    elif chosen:
        data = await timeline.job_event(ctx.redis, chosen)
        if data is None:
            error = (
                f"The payload of event {chosen} is no longer kept (only while queued and for "
                "arq's result time after); paste its body instead."
            )
        else:
            try:
                event = Event.from_dict(data)
            except ValueError as exc:
                error = str(exc)
    else:
        error = "Pick a recent event or paste a delivery body."
    rules_file = ctx.rules.refresh()
    result = await run_dry(rules_file.rules, event) if event is not None else None
    recent = await eventlist.query(ctx.redis, eventlist.Filters(), limit=20)
    return ctx.render(
        request,
        session,
        "rules.html",
        200 if error is None else 400,
        rules=rules_file,
        recent=recent.events,
        body=body,
        chosen=chosen,
        error=error,
        report=result.to_dict() if result else None,
    )


def _dlq(ctx: Context) -> DeadLetterQueue:
    return DeadLetterQueue(ctx.redis)


async def dead_letters(
    ctx: Context, request: Request, session: Session, _: FormData | None
) -> Response:
    try:
        offset = max(0, int(request.query_params.get("offset", "0")))
    except ValueError:
        offset = 0
    dlq = _dlq(ctx)
    total = await dlq.count()
    entries = await dlq.page(offset=offset, limit=DLQ_PAGE)
    replaying = sum(1 for e in entries if e.status == "replaying")
    return ctx.render(
        request,
        session,
        "dead_letters.html",
        entries=entries,
        total=total,
        offset=offset,
        page=DLQ_PAGE,
        replaying=replaying,
        notice=request.query_params.get("notice"),
        error_text=timeline.error_text,
    )


async def dead_letter(
    ctx: Context, request: Request, session: Session, _: FormData | None
) -> Response:
    entry = await _dlq(ctx).get(request.path_params["entry_id"])
    if entry is None:
        return ctx.error(
            request,
            session,
            404,
            "No such dead letter",
            "It was replayed successfully, dropped, or the id is wrong.",
        )
    return ctx.render(
        request,
        session,
        "dead_letter.html",
        entry=entry,
        error_text=timeline.error_text,
        # Stored masked already (DeadLetterQueue.add); masked again in case an older entry was not.
        params=json.dumps(redact(entry.params), indent=2, default=str) if entry.params else None,
        error_json=json.dumps(redact(entry.error), indent=2, default=str),
    )


async def _targets(dlq: DeadLetterQueue, form: FormData) -> list[DeadLetter]:
    if form.get("all") == "1":
        ids = (await dlq.ids())[:REPLAY_ALL_LIMIT]
    else:
        ids = [str(v) for v in form.getlist("id") if str(v)]
    found = [await dlq.get(i) for i in ids]
    return [entry for entry in found if entry is not None]


def _back(request: Request, notice: str) -> Response:
    base = request.scope.get("root_path", "").rstrip("/")
    return RedirectResponse(f"{base}/dead-letters?{urlencode({'notice': notice})}", 303)


async def replay(
    ctx: Context, request: Request, session: Session, form: FormData | None
) -> Response:
    form = form or FormData()
    dlq = _dlq(ctx)
    entries = await _targets(dlq, form)
    if not entries:
        return _back(request, "Nothing to replay: select entries first.")
    ledger = Ledger(ctx.redis, ttl=ctx.settings.worker_record_ttl)
    queued = 0
    for entry in entries:
        if await replay_entry(
            entry, dlq=dlq, ledger=ledger, arq=ctx.redis, queue_name=ctx.settings.queue_name
        ):
            queued += 1
    already = len(entries) - queued
    text = f"Replaying {len(entries)}: {queued} queued again"
    if already:
        text += f", {already} already queued or running (they will run the rule again)"
    return _back(request, text + ". Entries leave the list once their rule succeeds.")


async def drop_confirm(
    ctx: Context, request: Request, session: Session, _: FormData | None
) -> Response:
    """The confirmation page of a drop (works without JavaScript)."""
    dlq = _dlq(ctx)
    everything = request.query_params.get("all") == "1"
    ids = [] if everything else [i for i in request.query_params.getlist("id") if i]
    entries = [e for e in [await dlq.get(i) for i in ids] if e is not None]
    total = await dlq.count() if everything else len(entries)
    return ctx.render(
        request,
        session,
        "drop_confirm.html",
        entries=entries,
        everything=everything,
        total=total,
    )


async def drop(ctx: Context, request: Request, session: Session, form: FormData | None) -> Response:
    form = form or FormData()
    dlq = _dlq(ctx)
    if form.get("confirm") != "yes":  # the list's "Drop selected": confirm first
        everything = form.get("all") == "1"
        entries = [] if everything else await _targets(dlq, form)
        return ctx.render(
            request,
            session,
            "drop_confirm.html",
            entries=entries,
            everything=everything,
            total=await dlq.count() if everything else len(entries),
        )
    entries = await _targets(dlq, form)
    ledger = Ledger(ctx.redis, ttl=ctx.settings.worker_record_ttl)
    eventlog = EventLog(ctx.redis, ttl=ctx.settings.worker_record_ttl)
    dropped = 0
    for entry in entries:
        dropped += await dlq.remove(entry.id)
        # As `calhooks dlq drop`: the event's records expire again once no entry is left.
        state = await ledger.load(entry.event_id)
        dead = [rule for rule, outcome in state.rules.items() if outcome == "dead"]
        if not await dlq.event_entries(entry.event_id, dead):
            await ledger.release_now(entry.event_id)
            await eventlog.expire(entry.event_id)
    return _back(request, f"Dropped {dropped} dead letter(s).")


def _page_number(request: Request) -> int:
    try:
        return int(request.query_params.get("page", "1"))
    except ValueError:
        return 1


async def webhooks(
    ctx: Context, request: Request, session: Session, _: FormData | None
) -> Response:
    state = await webhookstate.page_state(ctx.settings, ctx.redis, _page_number(request))
    return ctx.render(request, session, "webhooks.html", ping_result=None, **state)


async def send_test_delivery(
    ctx: Context, request: Request, session: Session, form: FormData | None
) -> Response:
    """A test delivery for the organization the form's ``connection`` names (a PCID or a
    name; empty: the environment's): the sandbox pings its webhook; against Cal.com, a
    signed PING."""
    ref = form.get("connection") if form is not None else None
    ref = ref.strip() if isinstance(ref, str) else ""
    result = await webhookstate.send_ping(ctx.settings, ctx.redis, ref)
    state = await webhookstate.page_state(ctx.settings, ctx.redis, _page_number(request))
    status = 400 if result.get("bad_input") else 200
    return ctx.render(request, session, "webhooks.html", status, ping_result=result, **state)


async def connections(
    ctx: Context, request: Request, session: Session, _: FormData | None
) -> Response:
    error: str | None = None
    items: list[dict[str, Any]] = []
    try:
        store = ConnectionStore.from_settings(ctx.settings, ctx.redis)
        items = [info.to_dict() for info in await store.connections()]
    except (ConnectionStoreError, RedisError) as exc:
        error = str(exc)
    return ctx.render(request, session, "connections.html", connections=items, error=error)
