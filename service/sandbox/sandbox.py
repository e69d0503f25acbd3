"""``Sandbox``: one fake Cal.com's state, limits, faults, request log and deliveries.

The app serves it over HTTP; tests reach it through ``app.state.sandbox`` to read the store
and the logs or to add fault rules from their own thread. ``emit`` is how handlers (and the
admin surface) send webhook events: to every active organization webhook subscribed to the
trigger, in the background.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from calhooks.service.calcom.webhooks import ping_body, utc_timestamp
from calhooks.service.sandbox import bookings, payloads
from calhooks.service.sandbox.deliveries import Deliverer, Delivery
from calhooks.service.sandbox.errors import bad_request, not_found
from calhooks.service.sandbox.faults import FaultInjector, FaultRule
from calhooks.service.sandbox.operations.ooo import day_end, day_start
from calhooks.service.sandbox.ratelimit import RateLimit, RateLimiter
from calhooks.service.sandbox.requestlog import RequestLog
from calhooks.service.sandbox.seed import SANDBOX_ORG_ID, add_organizations, seed
from calhooks.service.sandbox.state import (
    Organization,
    OutOfOffice,
    Store,
    User,
    Webhook,
    new_uuid,
)

#: Rate limiting as Cal.com applies it to API keys.
CALCOM_RATE_LIMIT = RateLimit()
_DAY = timedelta(days=1)


@dataclass(frozen=True, slots=True)
class Emitted:
    """An event the sandbox sent: the body and the deliveries started for it."""

    trigger: str
    body: Mapping[str, Any]
    webhooks: list[str]
    tasks: list[asyncio.Task[Delivery]]


class Sandbox:
    """A stateful fake of Cal.com's organization API and webhook sender."""

    def __init__(
        self,
        *,
        seeded: bool = True,
        organizations: int = 0,
        rate_limit: RateLimit = CALCOM_RATE_LIMIT,
        faults: Iterable[FaultRule] = (),
        keep_requests: int = 10_000,
        delivery_timeout: float = 10.0,
        allow_remote_deliveries: bool = False,
    ) -> None:
        self.seeded = seeded
        self.organizations = organizations
        self.store = Store()
        seed(self.store, people=seeded, organizations=organizations)
        self._rate_limit = rate_limit
        self.limiter = RateLimiter(rate_limit)
        self.faults = FaultInjector(faults)
        self.requests = RequestLog(keep_requests)
        self.deliverer = Deliverer(timeout=delivery_timeout, allow_remote=allow_remote_deliveries)

    def reset(self, *, seeded: bool | None = None) -> None:
        """Back to the starting data and rate limit; logs, faults and counters cleared."""
        if seeded is not None:
            self.seeded = seeded
        self.store = Store()
        seed(self.store, people=self.seeded, organizations=self.organizations)
        self.limiter.configure(self._rate_limit)
        self.faults.clear()
        self.requests.clear()
        self.deliverer.clear()

    def add_organizations(self, count: int) -> list[Organization]:
        """``count`` more numbered organizations, each with its API key (``seed``)."""
        return add_organizations(self.store, count, people=self.seeded)

    # Webhook events.

    def subscribers(self, org_id: int, trigger: str) -> list[Webhook]:
        return [
            w
            for w in self.store.webhooks.values()
            if w.team_id == org_id and w.active and trigger in w.triggers
        ]

    def emit(self, org_id: int, trigger: str, body: Mapping[str, Any]) -> Emitted:
        """Deliver ``body`` to the organization's webhooks subscribed to ``trigger``."""
        targets = self.subscribers(org_id, trigger)
        tasks = self.deliverer.dispatch(targets, trigger, body)
        return Emitted(trigger, body, [w.id for w in targets], tasks)

    def trigger_event(
        self,
        trigger: str,
        *,
        user: str | int | None = None,
        org_id: int | None = None,
        event_type: str = "30min",
        attendee: payloads.Attendee | None = None,
        overrides: Mapping[str, Any] | None = None,
    ) -> Emitted:
        """Build a realistic ``trigger`` event for a sandbox user and deliver it."""
        if trigger not in payloads.SUPPORTED_TRIGGERS:
            supported = ", ".join(payloads.SUPPORTED_TRIGGERS)
            raise bad_request(f"trigger {trigger!r} is not supported; supported: {supported}")
        now = datetime.now(UTC)
        if trigger == "FORM_SUBMITTED" and user is None:
            org = self.store.orgs.get(org_id or SANDBOX_ORG_ID)
            if org is None:
                raise not_found(f"organization {org_id} not found")
            return self.emit(org.id, trigger, payloads.form_body(org, now, overrides))
        person = self._person(user, org_id)
        org = self.store.orgs[person.org_id]
        if trigger == "FORM_SUBMITTED":
            body = payloads.form_body(org, now, overrides)
        elif trigger == "OOO_CREATED":
            entry = self._time_off(person, now)
            body = payloads.ooo_created_body(self.store, entry, now, overrides)
        else:
            kind = self.store.event_type(person, event_type)
            booking = payloads.new_booking(
                self.store, org, person, kind, trigger=trigger, now=now, attendee=attendee
            )
            body = payloads.booking_body(trigger, booking, now, overrides)
        return self.emit(org.id, trigger, body)

    def change_booking(
        self,
        change: str,
        *,
        uid: str | None = None,
        user: str | int | None = None,
        org_id: int | None = None,
        event_type: str = "30min",
        attendee: payloads.Attendee | None = None,
        start: str | None = None,
        end: str | None = None,
        reason: str | None = None,
        by: str | None = None,
        as_request: bool = False,
    ) -> tuple[bookings.Change, Emitted]:
        """Apply a booking ``change`` (``bookings.CHANGES``) and deliver its trigger.

        ``create`` and ``request`` book ``event_type`` of ``user``; the others change the
        booking ``uid`` of organization ``org_id`` (default: the seeded one).
        """
        now = datetime.now(UTC)
        if change in ("create", "request"):
            person = self._person(user, org_id)
            done = bookings.create(
                self.store,
                self.store.orgs[person.org_id],
                person,
                event_type,
                now=now,
                attendee=attendee,
                start=start,
                end=end,
                pending=change == "request",
            )
        elif change in bookings.CHANGES:
            if not uid:
                raise bad_request(f"{change} needs the booking's uid")
            record = bookings.booking(self.store, org_id or SANDBOX_ORG_ID, uid)
            if change == "accept":
                done = bookings.accept(self.store, record, now=now)
            elif change == "reject":
                done = bookings.reject(self.store, record, now=now, reason=reason)
            elif change == "cancel":
                done = bookings.cancel(self.store, record, now=now, reason=reason, by=by)
            else:
                done = bookings.reschedule(
                    self.store, record, now=now, start=start, end=end, by=by, as_request=as_request
                )
        else:
            raise bad_request(
                f"unknown booking change {change!r}; one of {', '.join(bookings.CHANGES)}"
            )
        return done, self.emit(done.booking.org_id, done.trigger, done.body)

    def _person(self, ref: str | int | None, org_id: int | None) -> User:
        if ref is None:
            scope = org_id or SANDBOX_ORG_ID
            found = next(iter(sorted(self.store.org_users(scope), key=lambda u: u.id)), None)
            if found is None:
                raise bad_request(f"organization {scope} has no users: create one or pass user")
            return found
        person = self.store.find_user(ref, org_id)
        if person is None:
            raise not_found(
                f"no sandbox user {ref!r}" + (f" in organization {org_id}" if org_id else "")
            )
        return person

    def _time_off(self, person: User, now: datetime) -> OutOfOffice:
        """A real OOO entry for an OOO_CREATED event, as if made in Cal.com's settings
        (three days from tomorrow, covered by a colleague when there is one)."""
        tomorrow = utc_timestamp(now.replace(microsecond=0) + _DAY)
        colleagues = sorted(u.id for u in self.store.org_users(person.org_id) if u.id != person.id)
        entry = OutOfOffice(
            id=self.store.next_id("ooo"),
            uuid=new_uuid(),
            user_id=person.id,
            start=day_start(tomorrow),
            end=day_end(utc_timestamp(now + 3 * _DAY)),
            created_at=now,
            updated_at=now,
            reason="vacation",
            to_user_id=colleagues[0] if colleagues else None,
        )
        self.store.ooo[entry.id] = entry
        return entry

    async def ping(self, webhook_id: str) -> Delivery:
        """The dashboard's "Ping test": a PING to one webhook, whatever its triggers."""
        webhook = self.store.webhooks.get(webhook_id)
        if webhook is None:
            raise not_found(f"Webhook with id {webhook_id} not found")
        return await self.deliverer.deliver(webhook, "PING", ping_body(datetime.now(UTC)))

    def snapshot(self) -> dict[str, Any]:
        """The organizations, credentials and row counts, for ``GET /_sandbox/state``."""
        store = self.store
        return {
            "seeded": self.seeded,
            "organizations": [
                {"id": o.id, "name": o.name, "slug": o.slug, "managedBy": o.parent_id}
                for o in store.orgs.values()
            ],
            "apiKeys": [
                {"id": k.id, "key": k.key, "orgId": k.org_id, "userId": k.user_id}
                for k in store.api_keys.values()
            ],
            "platformClients": [
                {"id": c.id, "secret": c.secret, "orgId": c.org_id} for c in store.clients.values()
            ],
            "users": [
                {"id": u.id, "orgId": u.org_id, "username": u.username, "email": u.email}
                for u in store.users.values()
            ],
            "counts": {
                "attributes": len(store.attributes),
                "options": len(store.options),
                "assignments": len(store.assignments),
                "memberships": len(store.memberships),
                "ooo": len(store.ooo),
                "webhooks": len(store.webhooks),
                "delegationCredentials": len(store.credentials),
                "bookings": len(store.bookings),
            },
            "rateLimit": rate_limit_dict(self.limiter.config),
            "faults": [rule.to_dict() for rule in self.faults.rules],
            "requests": len(self.requests),
            "deliveries": len(self.deliverer.records),
        }


def rate_limit_dict(config: RateLimit) -> dict[str, Any]:
    return {
        "enabled": config.enabled,
        "limit": config.limit,
        "window": config.window,
        "block": config.block,
        "clientLimit": config.client_limit,
    }
