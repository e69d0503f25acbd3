"""``calhooks sandbox``: run the sandbox Cal.com, and make a running one emit events.

``calhooks sandbox --port 8788`` serves the fake API (``/v2/...``) and its admin surface
(``/_sandbox/...``) until interrupted, on loopback unless ``--allow-remote`` (with a
warning), delivering to loopback addresses unless ``--allow-remote-deliveries``.
``calhooks sandbox emit TRIGGER`` asks a running sandbox to deliver a realistic event to its
subscribed webhooks and prints what was sent.

``calhooks sandbox emit CHANGE`` changes a booking kept by the sandbox and delivers what
Cal.com sends for that change (``docs/bookings.md``): ``create`` / ``request`` book
(``--event-type time-off``, ``--start``, ``--end``) and print the new uid; ``accept``,
``reject``, ``reschedule`` (``--start``/``--end``, ``--as-request`` for Cal.com issue 21169)
and ``cancel`` take ``--uid``.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any

import typer

from calhooks.service.cli.output import fail, print_json
from calhooks.service.cli.ports import require_free

# the option help of `emit` lists these; the sandbox app itself loads in the commands
from calhooks.service.sandbox.bookings import CHANGES
from calhooks.service.sandbox.payloads import SUPPORTED_TRIGGERS

if TYPE_CHECKING:
    from calhooks.service.sandbox import FaultRule

app = typer.Typer(
    help="A local fake of Cal.com's organization API that also sends signed webhooks.",
    invoke_without_command=True,
)

DEFAULT_URL = "http://127.0.0.1:8788"


def _faults(latency: float, specs: list[str]) -> list[FaultRule]:
    from calhooks.service.sandbox import FaultRule

    rules = [FaultRule(latency=latency)] if latency else []
    for spec in specs:
        try:
            rules.append(FaultRule.model_validate(json.loads(spec)))
        except ValueError as exc:
            raise typer.BadParameter(f"--fault {spec!r}: {exc}") from None
    return rules


@app.callback()
def serve(
    ctx: typer.Context,
    host: Annotated[
        str, typer.Option(help="Interface to bind (admin routes need no key).")
    ] = "127.0.0.1",
    allow_remote: Annotated[
        bool,
        typer.Option("--allow-remote", help="Allow a non-loopback --host (prints a warning)."),
    ] = False,
    allow_remote_deliveries: Annotated[
        bool,
        typer.Option(
            "--allow-remote-deliveries",
            help="Deliver webhooks to any host (default: loopback addresses only).",
        ),
    ] = False,
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8788,
    empty: Annotated[
        bool, typer.Option("--empty", help="Start with organizations and keys only.")
    ] = False,
    orgs: Annotated[
        int,
        typer.Option(
            "--orgs",
            min=0,
            max=10_000,
            help="Numbered organizations to add (Org <id>), each with an API key of its own.",
        ),
    ] = 0,
    no_rate_limit: Annotated[
        bool, typer.Option("--no-rate-limit", help="Do not throttle (Cal.com: 120 requests/min).")
    ] = False,
    rate_limit: Annotated[int, typer.Option(help="Requests per window per API key.")] = 120,
    window: Annotated[float, typer.Option(help="Rate-limit window in seconds.")] = 60.0,
    latency: Annotated[float, typer.Option(help="Seconds added to every API call.")] = 0.0,
    fault: Annotated[
        list[str] | None,
        typer.Option(help='A fault rule as JSON, e.g. \'{"status": 503, "rate": 0.1}\'.'),
    ] = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
) -> None:
    """Serve the sandbox Cal.com (API under /v2, admin under /_sandbox)."""
    if ctx.invoked_subcommand is not None:
        return
    import uvicorn

    from calhooks.service.core.logs import configure_logging
    from calhooks.service.sandbox import (
        SANDBOX_API_KEY,
        SANDBOX_ORG_ID,
        SECOND_API_KEY,
        SECOND_ORG_ID,
        RateLimit,
        create_app,
        organization_api_key,
    )
    from calhooks.service.sandbox.exposure import bind_refusal, bind_warning, is_loopback_host

    if not is_loopback_host(host):
        if not allow_remote:
            fail(bind_refusal(host))
        typer.echo(bind_warning(host, port), err=True)
    require_free(host, {"sandbox": port}, "another sandbox? choose another with --port")
    configure_logging(log_level)
    throttle = None if no_rate_limit else RateLimit(limit=rate_limit, window=window)
    sandbox_app = create_app(
        seeded=not empty,
        organizations=orgs,
        rate_limit=throttle,
        faults=_faults(latency, fault or []),
        allow_remote_deliveries=allow_remote_deliveries,
    )
    base = f"http://{host}:{port}"
    typer.echo(f"Sandbox Cal.com on {base} (admin: {base}/_sandbox/state)", err=True)
    typer.echo(f"  CALHOOKS_API_URL={base}", err=True)
    typer.echo(f"  CALHOOKS_API_KEY={SANDBOX_API_KEY}  CALHOOKS_ORG_ID={SANDBOX_ORG_ID}", err=True)
    typer.echo(f"  second org: key {SECOND_API_KEY}, orgId {SECOND_ORG_ID}", err=True)
    numbered = sorted(sandbox_app.state.sandbox.store.orgs)[-orgs:] if orgs else []
    if numbered:
        ids = f"{numbered[0]}" if orgs == 1 else f"{numbered[0]}-{numbered[-1]}"
        example = organization_api_key(numbered[0])
        typer.echo(f"  numbered orgs: orgId {ids}, key of each like {example}", err=True)
    uvicorn.run(sandbox_app, host=host, port=port, log_config=None, log_level=log_level.lower())


def _overrides(pairs: list[str]) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"--set {pair!r} is not key=value")
        try:
            value: Any = json.loads(text)
        except ValueError:
            value = text
        overrides[key] = value
    return overrides


def _event_id(response: Any) -> str | None:
    """The intake's event id from its answer (``{"id": ...}``), if it gave one."""
    try:
        body = json.loads(response) if isinstance(response, str) else response
    except ValueError:
        return None
    found = body.get("id") if isinstance(body, dict) else None
    return str(found) if found else None


def summary_lines(answer: dict[str, Any]) -> list[str]:
    """One plain line per delivery: where to, status, the intake's event id, the booking uid."""
    payload = (answer.get("body") or {}).get("payload") or {}
    uid = payload.get("uid") if isinstance(payload, dict) else None
    booking = f"  booking uid {uid}" if uid else ""
    trigger = answer.get("trigger", "?")
    deliveries = answer.get("deliveries")
    if not answer.get("webhooks"):
        return [f"{trigger}: sent to no webhook{booking}"]
    if deliveries is None:
        count = len(answer.get("webhooks") or [])
        return [f"{trigger}: {count} delivery(ies) started, not waited for{booking}"]
    lines = []
    for delivery in deliveries:
        status = delivery.get("status") or f"no answer ({delivery.get('error') or 'pending'})"
        event_id = _event_id(delivery.get("response"))
        event = f"  event {event_id}" if event_id else ""
        lines.append(f"{trigger} -> {delivery.get('url')}  {status}{event}{booking}")
    return lines


def _post(url: str, path: str, request: dict[str, Any]) -> dict[str, Any]:
    import httpx

    try:
        response = httpx.post(f"{url.rstrip('/')}{path}", json=request, timeout=30)
    except httpx.HTTPError as exc:
        fail(f"cannot reach the sandbox at {url}: {exc}")
    try:
        answer = response.json()
    except ValueError:
        fail(f"the sandbox answered {response.status_code}: {response.text[:200]}")
    if response.is_error:
        fail(str(answer.get("error", answer)) if isinstance(answer, dict) else str(answer))
    if not isinstance(answer, dict):
        fail(f"the sandbox answered {answer!r}")
    return answer


def _change_booking(change: str, options: dict[str, Any], url: str) -> dict[str, Any]:
    """A booking change: ``create``/``request`` book, the others change ``options["uid"]``."""
    uid = options.pop("uid")
    if change in ("create", "request"):
        if uid is not None:
            fail(f"{change} makes a new booking: drop --uid")
        return _post(url, "/_sandbox/bookings", {**options, "change": change})
    if uid is None:
        fail(f"{change} needs --uid (the booking's uid, as `create` printed it)")
    for name in ("user", "eventType"):
        options.pop(name, None)
    return _post(url, f"/_sandbox/bookings/{uid}/{change}", options)


@app.command()
def emit(
    trigger: Annotated[
        str,
        typer.Argument(
            help=f"A trigger ({', '.join(SUPPORTED_TRIGGERS)}) or a booking change "
            f"({', '.join(CHANGES)})."
        ),
    ],
    user: Annotated[
        str | None, typer.Option(help="Username, email or id (default: first user).")
    ] = None,
    event_type: Annotated[str, typer.Option(help="Event type slug of the booking.")] = "30min",
    org_id: Annotated[int | None, typer.Option(help="Organization of the user.")] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="payload override key=JSON value (repeatable)")
    ] = None,
    wait: Annotated[bool, typer.Option(help="Wait for the deliveries and print them.")] = True,
    url: Annotated[str, typer.Option(help="Base URL of the running sandbox.")] = DEFAULT_URL,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the sandbox's full answer as JSON.")
    ] = False,
    uid: Annotated[
        str | None, typer.Option(help="The booking to accept, reject, reschedule or cancel.")
    ] = None,
    start: Annotated[
        str | None, typer.Option(help="Booking start, ISO-8601 UTC (create, reschedule).")
    ] = None,
    end: Annotated[
        str | None, typer.Option(help="Booking end, ISO-8601 UTC (create, reschedule).")
    ] = None,
    reason: Annotated[str | None, typer.Option(help="Cancellation or rejection reason.")] = None,
    as_request: Annotated[
        bool,
        typer.Option(
            "--as-request", help="reschedule: send BOOKING_REQUESTED (Cal.com issue 21169)."
        ),
    ] = False,
) -> None:
    """Make a running sandbox deliver TRIGGER, or change a booking and deliver what Cal.com
    sends for it (create, request, accept, reject, reschedule, cancel)."""
    if trigger.lower() in CHANGES:
        if set_:
            fail("--set applies to triggers, not to booking changes")
        options: dict[str, Any] = {
            "uid": uid,
            "user": user,
            "eventType": event_type,
            "orgId": org_id,
            "start": start,
            "end": end,
            "reason": reason,
            "asRequest": as_request,
            "wait": wait,
        }
        given = {k: v for k, v in options.items() if v is not None or k == "uid"}
        answer = _change_booking(trigger.lower(), given, url)
        _show(answer, as_json)
        return
    request: dict[str, Any] = {
        **_overrides(set_ or []),
        "trigger": trigger,
        "eventType": event_type,
        "wait": wait,
    }
    if user is not None:
        request["user"] = user
    if org_id is not None:
        request["orgId"] = org_id
    _show(_post(url, "/_sandbox/events", request), as_json)


def _show(answer: dict[str, Any], as_json: bool) -> None:
    """The sandbox's answer: one plain line per delivery, or the whole answer as JSON."""
    if as_json:
        print_json(answer)
    else:
        for line in summary_lines(answer):
            typer.echo(line)
    if not answer.get("webhooks"):
        trigger = answer.get("trigger", "?")
        typer.echo(f"note: no active webhook is subscribed to {trigger}", err=True)
