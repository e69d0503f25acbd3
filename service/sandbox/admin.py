"""The admin surface under ``/_sandbox``: emit events, ping webhooks, read logs, inject faults.

It needs no Cal.com credentials and is served wherever the sandbox is, so bind the sandbox
to loopback (the default) unless everyone who can reach it may drive it.

* ``POST /_sandbox/events`` — ``{"trigger", "user", "eventType", "orgId", "attendee",
  "wait", ...overrides}``: build a realistic body and deliver it to the subscribed webhooks
  (in the background; ``"wait": true`` answers with the delivery results);
* ``GET /_sandbox/bookings`` (``?orgId=``) - the stored bookings; ``POST /_sandbox/bookings``
  ``{"change": "create"|"request", "user", "eventType", "orgId", "attendee", "start",
  "end", "wait"}`` books; ``POST /_sandbox/bookings/{uid}/{change}`` (``accept``,
  ``reject``, ``reschedule``, ``cancel``; ``{"orgId", "start", "end", "reason", "by",
  "asRequest", "wait"}``) changes a booking - each sending what Cal.com sends
  (``calhooks.service.sandbox.bookings``);
* ``POST /_sandbox/webhooks/{id}/ping`` — the dashboard's PING test delivery;
* ``GET|DELETE /_sandbox/requests`` (``?tool=``) and ``GET|DELETE /_sandbox/deliveries``
  (``?wait=true`` first waits for deliveries in flight; ``?trigger=``);
* ``GET|POST|DELETE /_sandbox/faults``, ``DELETE /_sandbox/faults/{id}``;
* ``POST /_sandbox/organizations`` ``{"count": N}`` - adds ``N`` numbered organizations, each
  with an admin user and an API key of its own (``seed.organization_api_key(id)``; the answer
  gives ids, names, slugs and key ids, not keys);
* ``GET|PUT /_sandbox/rate-limit``; ``POST /_sandbox/reset`` (``{"empty": true}``);
  ``GET /_sandbox/state``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from calhooks.service.sandbox.bookings import CHANGES, describe
from calhooks.service.sandbox.errors import ApiError
from calhooks.service.sandbox.faults import FaultRule
from calhooks.service.sandbox.payloads import Attendee
from calhooks.service.sandbox.ratelimit import RateLimit
from calhooks.service.sandbox.sandbox import Sandbox, rate_limit_dict
from calhooks.service.sandbox.seed import organization_key_id

AdminHandler = Callable[[Request], Awaitable[JSONResponse]]
#: Most organizations one ``POST /_sandbox/organizations`` adds.
MAX_NEW_ORGANIZATIONS = 10_000


class AttendeeInput(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str = "Sam Booker"
    email: str = "sam@client.example"
    time_zone: str = Field("Europe/London", alias="timeZone")
    locale: str = "en"


class EventRequest(BaseModel):
    """``POST /_sandbox/events``; any other key is an override merged into the payload."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    trigger: str
    user: str | int | None = None
    event_type: str = Field("30min", alias="eventType", min_length=1)
    org_id: int | None = Field(None, alias="orgId")
    attendee: AttendeeInput | None = None
    wait: bool = False
    timeout: float = Field(10.0, gt=0, le=120)


class BookingChangeRequest(BaseModel):
    """``POST /_sandbox/bookings`` and ``/_sandbox/bookings/{uid}/{change}``."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    change: str | None = None
    user: str | int | None = None
    event_type: str = Field("30min", alias="eventType", min_length=1)
    org_id: int | None = Field(None, alias="orgId")
    attendee: AttendeeInput | None = None
    start: str | None = None
    end: str | None = None
    reason: str | None = None
    by: str | None = None
    as_request: bool = Field(False, alias="asRequest")
    wait: bool = False
    timeout: float = Field(10.0, gt=0, le=120)


class RateLimitInput(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    enabled: bool = True
    limit: int = Field(120, ge=1)
    window: float = Field(60.0, gt=0)
    block: float | None = Field(None, ge=0)
    client_limit: int = Field(500, ge=1, alias="clientLimit")


class OrganizationsInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    count: int = Field(ge=1, le=MAX_NEW_ORGANIZATIONS)


class ResetInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    empty: bool | None = None


def _problem(status: int, message: str, details: Any = None) -> JSONResponse:
    body: dict[str, Any] = {"error": message}
    if details is not None:
        body["details"] = details
    return JSONResponse(body, status_code=status)


async def _json(request: Request) -> Any:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise ApiError(400, "BadRequest", f"body is not JSON: {exc}") from None


def _flag(request: Request, name: str) -> bool:
    return request.query_params.get(name, "").lower() in ("1", "true", "yes")


class Admin:
    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox

    def routes(self) -> list[BaseRoute]:
        handlers = [
            ("/events", self.events, ["POST"]),
            ("/bookings", self.bookings, ["GET", "POST"]),
            ("/bookings/{uid}/{change}", self.booking_change, ["POST"]),
            ("/webhooks/{webhook_id}/ping", self.ping, ["POST"]),
            ("/requests", self.requests, ["GET", "DELETE"]),
            ("/deliveries", self.deliveries, ["GET", "DELETE"]),
            ("/faults", self.faults, ["GET", "POST", "DELETE"]),
            ("/faults/{rule_id}", self.fault, ["DELETE"]),
            ("/organizations", self.organizations, ["POST"]),
            ("/rate-limit", self.rate_limit, ["GET", "PUT"]),
            ("/reset", self.reset, ["POST"]),
            ("/state", self.state, ["GET"]),
        ]
        return [
            Route(path, self._guarded(handler), methods=methods)
            for path, handler, methods in handlers
        ]

    @staticmethod
    def _guarded(handler: AdminHandler) -> AdminHandler:
        """``handler`` with sandbox and validation errors answered as JSON problems."""

        async def endpoint(request: Request) -> JSONResponse:
            try:
                response = await handler(request)
            except ApiError as error:
                return _problem(error.status, error.message)
            except ValidationError as error:
                details = [
                    {"field": ".".join(str(p) for p in e["loc"]), "message": e["msg"]}
                    for e in error.errors(include_url=False)
                ]
                return _problem(400, "invalid request", details)
            return response

        return endpoint

    async def events(self, request: Request) -> JSONResponse:
        spec = EventRequest.model_validate(await _json(request))
        attendee = Attendee(**spec.attendee.model_dump()) if spec.attendee else None
        emitted = self.sandbox.trigger_event(
            spec.trigger,
            user=spec.user,
            org_id=spec.org_id,
            event_type=spec.event_type,
            attendee=attendee,
            overrides=spec.model_extra or {},
        )
        answer: dict[str, Any] = {
            "trigger": emitted.trigger,
            "body": emitted.body,
            "webhooks": emitted.webhooks,
        }
        if spec.wait and emitted.tasks:
            done, _ = await asyncio.wait(emitted.tasks, timeout=spec.timeout)
            answer["deliveries"] = [
                task.result().to_dict() for task in emitted.tasks if task in done
            ]
        return JSONResponse(answer, status_code=202 if not spec.wait else 200)

    async def bookings(self, request: Request) -> JSONResponse:
        if request.method == "GET":
            org = request.query_params.get("orgId")
            store = self.sandbox.store
            records = [
                describe(store, b)
                for b in store.bookings.values()
                if org is None or str(b.org_id) == org
            ]
            return JSONResponse({"bookings": records})
        spec = BookingChangeRequest.model_validate(await _json(request))
        if spec.change not in ("create", "request"):
            raise ApiError(400, "BadRequest", "change must be create or request here")
        return await self._change(spec, spec.change, None)

    async def booking_change(self, request: Request) -> JSONResponse:
        spec = BookingChangeRequest.model_validate(await _json(request))
        change = request.path_params["change"]
        if change not in CHANGES or change in ("create", "request"):
            raise ApiError(
                404, "NotFound", f"no booking change {change!r}: accept, reject, reschedule, cancel"
            )
        return await self._change(spec, change, request.path_params["uid"])

    async def _change(
        self, spec: BookingChangeRequest, change: str, uid: str | None
    ) -> JSONResponse:
        attendee = Attendee(**spec.attendee.model_dump()) if spec.attendee else None
        done, emitted = self.sandbox.change_booking(
            change,
            uid=uid,
            user=spec.user,
            org_id=spec.org_id,
            event_type=spec.event_type,
            attendee=attendee,
            start=spec.start,
            end=spec.end,
            reason=spec.reason,
            by=spec.by,
            as_request=spec.as_request,
        )
        answer: dict[str, Any] = {
            "booking": describe(self.sandbox.store, done.booking),
            "trigger": emitted.trigger,
            "body": emitted.body,
            "webhooks": emitted.webhooks,
        }
        if spec.wait and emitted.tasks:
            finished, _ = await asyncio.wait(emitted.tasks, timeout=spec.timeout)
            answer["deliveries"] = [
                task.result().to_dict() for task in emitted.tasks if task in finished
            ]
        return JSONResponse(answer, status_code=200 if spec.wait else 202)

    async def ping(self, request: Request) -> JSONResponse:
        delivery = await self.sandbox.ping(request.path_params["webhook_id"])
        return JSONResponse(delivery.to_dict())

    async def requests(self, request: Request) -> JSONResponse:
        if request.method == "DELETE":
            self.sandbox.requests.clear()
            return JSONResponse({"cleared": True})
        records = self.sandbox.requests.records(request.query_params.get("tool"))
        return JSONResponse({"requests": [r.to_dict() for r in records]})

    async def deliveries(self, request: Request) -> JSONResponse:
        deliverer = self.sandbox.deliverer
        if request.method == "DELETE":
            deliverer.clear()
            return JSONResponse({"cleared": True})
        idle = True
        if _flag(request, "wait"):
            idle = await deliverer.wait_idle(float(request.query_params.get("timeout", "10")))
        trigger = request.query_params.get("trigger")
        records = [d.to_dict() for d in list(deliverer.records) if trigger in (None, d.trigger)]
        return JSONResponse({"deliveries": records, "pending": deliverer.pending, "idle": idle})

    async def faults(self, request: Request) -> JSONResponse:
        injector = self.sandbox.faults
        if request.method == "DELETE":
            injector.clear()
            return JSONResponse({"faults": []})
        if request.method == "POST":
            given = await _json(request)
            specs = given if isinstance(given, list) else [given]
            rules = [FaultRule.model_validate(spec) for spec in specs]
            for rule in rules:
                injector.add(rule)
            return JSONResponse({"faults": [r.to_dict() for r in rules]}, status_code=201)
        return JSONResponse({"faults": [r.to_dict() for r in injector.rules]})

    async def fault(self, request: Request) -> JSONResponse:
        rule_id = request.path_params["rule_id"]
        if not self.sandbox.faults.remove(rule_id):
            return _problem(404, f"no fault rule {rule_id}")
        return JSONResponse({"removed": rule_id})

    async def organizations(self, request: Request) -> JSONResponse:
        given = OrganizationsInput.model_validate(await _json(request))
        added = self.sandbox.add_organizations(given.count)
        store = self.sandbox.store
        admins = {u.org_id: u.username for o in added for u in store.org_users(o.id)}
        return JSONResponse(
            {
                "organizations": [
                    {
                        "id": org.id,
                        "name": org.name,
                        "slug": org.slug,
                        "apiKeyId": organization_key_id(org.id),
                        "admin": admins.get(org.id),
                    }
                    for org in added
                ]
            },
            status_code=201,
        )

    async def rate_limit(self, request: Request) -> JSONResponse:
        limiter = self.sandbox.limiter
        if request.method == "PUT":
            given = RateLimitInput.model_validate(await _json(request))
            limiter.configure(
                RateLimit(
                    limit=given.limit,
                    window=given.window,
                    block=given.block,
                    client_limit=given.client_limit,
                    enabled=given.enabled,
                )
            )
        return JSONResponse(rate_limit_dict(limiter.config))

    async def reset(self, request: Request) -> JSONResponse:
        given = ResetInput.model_validate(await _json(request))
        self.sandbox.reset(seeded=None if given.empty is None else not given.empty)
        return JSONResponse(self.sandbox.snapshot())

    async def state(self, request: Request) -> JSONResponse:
        return JSONResponse(self.sandbox.snapshot())
