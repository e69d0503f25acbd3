"""Webhook deliveries as Cal.com makes them: signed compact JSON to each active subscribed
webhook, checked by a real receiver, an independent HMAC (openssl) and the example shapes."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from calhooks.service.calcom import CalcomClient
from calhooks.service.core.embedded_redis import free_port
from calhooks.service.sandbox import (
    NO_SECRET,
    SECOND_API_KEY,
    SECOND_ORG_ID,
    SUPPORTED_TRIGGERS,
    WEBHOOK_VERSION,
    signature,
)
from calhooks.service.sandbox.deliveries import render_template
from calhooks.service.sandbox.exposure import delivery_refusal
from tests.sandbox.server import RunningSandbox
from tests.servers import serve_app

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "webhooks"
CREATE_WEBHOOK = "cal_organizations_webhooks_controller_create_organization_webhook"
CREATE_OOO = "cal_organizations_users_ooocontroller_create_organization_user_ooo"
SECRET = "whsec_sandbox_delivery_test"


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    raw: bytes

    def json(self) -> Any:
        return json.loads(self.raw)


@dataclass
class Receiver:
    """A tiny webhook receiver that records every POST and answers ``status``."""

    url: str = ""
    status: int = 200
    received: list[Received] = field(default_factory=list)

    def app(self) -> Starlette:
        async def hook(request: Request) -> PlainTextResponse:
            self.received.append(
                Received(request.url.path, dict(request.headers), await request.body())
            )
            return PlainTextResponse("ok" if self.status < 400 else "nope", self.status)

        return Starlette(routes=[Route("/{name}", hook, methods=["POST"])])


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    target = Receiver()
    with serve_app(target.app()) as url:
        target.url = url
        yield target


@pytest.fixture(autouse=True)
def _fresh_receiver(receiver: Receiver) -> None:
    receiver.received.clear()
    receiver.status = 200


def openssl_hmac(secret: str, body: bytes) -> str:
    """HMAC-SHA256 hex computed by openssl, independently of the sandbox's code."""
    openssl = shutil.which("openssl")
    assert openssl, "openssl is needed to check signatures independently"
    done = subprocess.run(
        [openssl, "dgst", "-sha256", "-hmac", secret], input=body, capture_output=True, check=True
    )
    return done.stdout.decode().strip().split()[-1]


def same_shape(actual: Any, expected: Any, where: str = "body") -> None:
    """Same keys everywhere; where both sides have a value, the same kind of value."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict), where
        assert set(actual) == set(expected), f"{where}: {set(actual) ^ set(expected)}"
        for key in expected:
            same_shape(actual[key], expected[key], f"{where}.{key}")
    elif isinstance(expected, list) and expected:
        assert isinstance(actual, list), where
        assert actual, f"{where} is empty"
        same_shape(actual[0], expected[0], f"{where}[0]")
    elif actual is not None and expected is not None:
        assert type(actual) is type(expected), f"{where}: {actual!r} vs {expected!r}"


async def subscribe(cal: CalcomClient, receiver: Receiver, name: str, **fields: Any) -> str:
    options: dict[str, Any] = {
        "active": True,
        "triggers": list(SUPPORTED_TRIGGERS),
        "secret": SECRET,
    }
    options.update(fields)
    options = {key: value for key, value in options.items() if value is not None}
    created = await cal.call(CREATE_WEBHOOK, subscriberUrl=f"{receiver.url}/{name}", **options)
    return str(created["id"])


async def emit(sandbox: RunningSandbox, **request: Any) -> dict[str, Any]:
    response = await sandbox.admin("POST", "/events", json={"wait": True, **request})
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


async def test_signed_delivery_verified_with_openssl(
    sandbox: RunningSandbox, receiver: Receiver
) -> None:
    """A BOOKING_CREATED reaches the receiver signed as Cal.com signs it, for the real user."""
    async with sandbox.client() as cal:
        webhook_id = await subscribe(cal, receiver, "calhooks", triggers=["BOOKING_CREATED"])
    answer = await emit(sandbox, trigger="BOOKING_CREATED", user="alice", eventType="time-off")
    assert answer["webhooks"] == [webhook_id]
    assert [(d["status"], d["ok"]) for d in answer["deliveries"]] == [(200, True)]
    [got] = receiver.received
    assert got.headers["content-type"] == "application/json"
    assert got.headers["x-cal-webhook-version"] == WEBHOOK_VERSION
    assert got.headers["x-cal-signature-256"] == openssl_hmac(SECRET, got.raw)
    assert got.raw == json.dumps(got.json(), separators=(",", ":"), ensure_ascii=False).encode()
    body = got.json()
    assert body == answer["body"]
    payload = body["payload"]
    assert (body["triggerEvent"], payload["type"], payload["eventTitle"]) == (
        "BOOKING_CREATED",
        "time-off",
        "Time Off",
    )
    assert payload["organizer"]["id"] == 101
    assert payload["organizer"]["email"] == "alice@acme.example"
    assert payload["organizer"]["name"] == "Alice Anders"
    assert payload["bookerUrl"] == "https://acme.cal.com"
    same_shape(body, json.loads((FIXTURES / "BOOKING_CREATED.json").read_text()))


@pytest.mark.parametrize("trigger", SUPPORTED_TRIGGERS)
async def test_every_trigger_has_the_example_shape(
    trigger: str, sandbox: RunningSandbox, receiver: Receiver
) -> None:
    """Each supported trigger arrives in the shape of Cal.com's example body."""
    async with sandbox.client() as cal:
        await subscribe(cal, receiver, "all")
    await emit(sandbox, trigger=trigger, user="bob")
    [got] = receiver.received
    assert got.headers["x-cal-signature-256"] == signature(got.raw, SECRET)
    same_shape(got.json(), json.loads((FIXTURES / f"{trigger}.json").read_text()))


async def test_fresh_ids_and_overrides(sandbox: RunningSandbox, receiver: Receiver) -> None:
    """Each event is a new booking; overrides merge into the payload."""
    async with sandbox.client() as cal:
        await subscribe(cal, receiver, "fresh", triggers=["BOOKING_CANCELLED"])
    overrides = {"cancellationReason": "Double booked", "metadata": {"source": "test"}}
    first = await emit(sandbox, trigger="BOOKING_CANCELLED", user="carol", **overrides)
    second = await emit(sandbox, trigger="BOOKING_CANCELLED", user="carol")
    one, two = first["body"]["payload"], second["body"]["payload"]
    assert one["uid"] != two["uid"]
    assert one["bookingId"] != two["bookingId"]
    assert one["cancellationReason"] == "Double booked"
    assert one["metadata"] == {"videoCallUrl": one["location"], "source": "test"}
    assert one["organizer"]["utcOffset"] == 540  # Asia/Tokyo
    assert len(receiver.received) == 2


async def test_only_active_subscribed_webhooks_of_the_org(
    sandbox: RunningSandbox, receiver: Receiver
) -> None:
    """Inactive, unsubscribed and other organizations' webhooks receive nothing."""
    async with sandbox.client() as cal:
        wanted = await subscribe(cal, receiver, "wanted", triggers=["MEETING_ENDED"])
        await subscribe(cal, receiver, "inactive", triggers=["MEETING_ENDED"], active=False)
        await subscribe(cal, receiver, "other-trigger", triggers=["BOOKING_CREATED"])
    async with sandbox.client(SECOND_API_KEY, SECOND_ORG_ID) as globex:
        await subscribe(globex, receiver, "globex", triggers=["MEETING_ENDED"])
    answer = await emit(sandbox, trigger="MEETING_ENDED", user="alice")
    assert answer["webhooks"] == [wanted]
    assert [r.path for r in receiver.received] == ["/wanted"]


async def test_no_secret_header(sandbox: RunningSandbox, receiver: Receiver) -> None:
    """Without a secret the signature header is the literal no-secret-provided."""
    async with sandbox.client() as cal:
        await subscribe(cal, receiver, "open", triggers=["BOOKING_REQUESTED"], secret=None)
    await emit(sandbox, trigger="BOOKING_REQUESTED", user="alice")
    assert receiver.received[0].headers["x-cal-signature-256"] == NO_SECRET == "no-secret-provided"


async def test_ooo_created_through_the_api_is_delivered(
    sandbox: RunningSandbox, receiver: Receiver
) -> None:
    """Creating an OOO entry through the API sends OOO_CREATED about that entry."""
    async with sandbox.client() as cal:
        await subscribe(cal, receiver, "ooo", triggers=["OOO_CREATED"])
        entry = await cal.call(
            CREATE_OOO,
            userId=102,
            start="2025-08-04T10:00:00Z",
            end="2025-08-08T10:00:00Z",
            reason="travel",
            toUserId=101,
            notes="Conference",
        )
    [delivery] = await sandbox.deliveries()
    assert delivery["trigger"] == "OOO_CREATED"
    ooo = delivery["body"]["payload"]["oooEntry"]
    assert (ooo["id"], ooo["uuid"], ooo["start"], ooo["end"]) == (
        entry["id"],
        entry["uuid"],
        "2025-08-04T00:00:00.000Z",
        "2025-08-08T23:59:59.999Z",
    )
    assert ooo["reason"] == {"emoji": "🛫", "reason": "travel"}
    assert (ooo["user"]["email"], ooo["toUser"]["email"]) == (
        "bob@acme.example",
        "alice@acme.example",
    )
    [got] = receiver.received
    assert "🛫".encode() in got.raw  # non-ASCII sent as is, as JSON.stringify does
    assert got.headers["x-cal-signature-256"] == openssl_hmac(SECRET, got.raw)


async def test_payload_template(sandbox: RunningSandbox, receiver: Receiver) -> None:
    """A JSON payloadTemplate is rendered, re-serialised and signed; other text goes as a form."""
    template = (
        '{"event": "{{triggerEvent}}", "title": "{{title}}", '
        '"who": "{{organizer.name}}", "guest": "{{attendees.0.email}}", "missing": "{{nope}}"}'
    )
    async with sandbox.client() as cal:
        await subscribe(
            cal, receiver, "json", triggers=["BOOKING_CREATED"], payloadTemplate=template
        )
        await subscribe(
            cal, receiver, "form", triggers=["BOOKING_CREATED"], payloadTemplate="uid={{uid}}&x=1"
        )
    answer = await emit(sandbox, trigger="BOOKING_CREATED", user="alice", eventType="60min")
    payload = answer["body"]["payload"]
    by_path = {r.path: r for r in receiver.received}
    rendered = by_path["/json"]
    assert rendered.headers["content-type"] == "application/json"
    assert rendered.json() == {
        "event": "BOOKING_CREATED",
        "title": payload["title"],
        "who": "Alice Anders",
        "guest": "sam@client.example",
        "missing": "",
    }
    assert rendered.headers["x-cal-signature-256"] == openssl_hmac(SECRET, rendered.raw)
    form = by_path["/form"]
    assert form.headers["content-type"] == "application/x-www-form-urlencoded"
    assert form.raw.decode() == f"uid={payload['uid']}&x=1"


def test_template_escaping_follows_handlebars() -> None:
    """{{x}} is HTML-escaped (except the quotes Cal.com restores), {{{x}}} is raw."""
    text, kind = render_template(
        "a={{v}}&b={{{v}}}&c={{n}}&d={{o}}", {"v": "<\"'&>", "n": 1.0, "o": {}}
    )
    assert kind == "application/x-www-form-urlencoded"
    assert text == 'a=&lt;"&#x27;&amp;&gt;&b=<"\'&>&c=1&d=[object Object]'


async def test_ping(sandbox: RunningSandbox, receiver: Receiver) -> None:
    """The dashboard's ping sends a signed PING to one webhook, whatever its triggers."""
    async with sandbox.client() as cal:
        webhook_id = await subscribe(cal, receiver, "ping", triggers=["OOO_CREATED"], active=False)
    response = await sandbox.admin("POST", f"/webhooks/{webhook_id}/ping")
    assert response.status_code == 200
    assert (response.json()["status"], response.json()["trigger"]) == (200, "PING")
    [got] = receiver.received
    assert got.headers["x-cal-signature-256"] == openssl_hmac(SECRET, got.raw)
    same_shape(got.json(), json.loads((FIXTURES / "PING.json").read_text()))
    missing = await sandbox.admin("POST", "/webhooks/nope/ping")
    assert missing.status_code == 404


async def test_failed_deliveries_are_recorded(sandbox: RunningSandbox, receiver: Receiver) -> None:
    """A receiver error or an unreachable URL is recorded, not retried."""
    receiver.status = 503
    async with sandbox.client() as cal:
        await subscribe(cal, receiver, "down", triggers=["BOOKING_NO_SHOW_UPDATED"])
        await cal.call(
            CREATE_WEBHOOK,
            active=True,
            subscriberUrl="http://127.0.0.1:9/unreachable",
            triggers=["BOOKING_NO_SHOW_UPDATED"],
        )
    answer = await emit(sandbox, trigger="BOOKING_NO_SHOW_UPDATED", user="alice")
    outcomes = {(d["status"], d["ok"], bool(d["error"])) for d in answer["deliveries"]}
    assert outcomes == {(503, False, False), (None, False, True)}
    assert len(receiver.received) == 1


async def test_deliveries_happen_after_the_answer(
    sandbox: RunningSandbox, receiver: Receiver
) -> None:
    """Without wait the emit answers 202 at once; the delivery log shows the result later."""
    async with sandbox.client() as cal:
        await subscribe(cal, receiver, "later", triggers=["FORM_SUBMITTED"])
    response = await sandbox.admin("POST", "/events", json={"trigger": "FORM_SUBMITTED"})
    assert response.status_code == 202
    assert "deliveries" not in response.json()
    [delivery] = await sandbox.deliveries(trigger="FORM_SUBMITTED")
    assert (delivery["done"], delivery["status"]) == (True, 200)
    body = delivery["body"]
    assert body["payload"]["teamId"] == 1
    assert body["company-size"] == body["payload"]["responses"]["company-size"]["value"]


@pytest.mark.parametrize(
    ("url", "refused"),
    [
        ("http://127.0.0.1:9/x", False),
        ("http://127.8.9.10/x", False),
        ("http://[::1]:8080/x", False),
        ("http://localhost:8080/x", False),
        ("http://intake.localhost/x", False),
        ("https://hooks.example/cal", True),
        ("http://10.0.0.5/x", True),
        ("http://0.0.0.0:80/x", True),
        ("http://169.254.169.254/latest/meta-data", True),
        ("http://127.0.0.1.nip.io/x", True),
        ("not a url", True),
    ],
)
def test_only_loopback_destinations_by_default(url: str, refused: bool) -> None:
    assert (delivery_refusal(url) is not None) == refused


async def test_deliveries_to_other_hosts_are_refused_unless_allowed(
    sandbox: RunningSandbox, receiver: Receiver
) -> None:
    """A webhook naming a non-loopback host gets no POST; the delivery records why."""
    port = free_port()
    async with sandbox.client() as cal:
        await cal.call(
            CREATE_WEBHOOK,
            subscriberUrl=f"http://0.0.0.0:{port}/hook",
            active=True,
            triggers=["MEETING_ENDED"],
        )
        await subscribe(cal, receiver, "local", triggers=["MEETING_ENDED"])
    answer = await emit(sandbox, trigger="MEETING_ENDED", user="alice")
    by_url = {d["url"]: d for d in answer["deliveries"]}
    remote = by_url[f"http://0.0.0.0:{port}/hook"]
    assert remote["error"].startswith("refused: the sandbox delivers to loopback addresses only")
    assert "--allow-remote-deliveries" in remote["error"]
    assert [r.path for r in receiver.received] == ["/local"]

    sandbox.sandbox.deliverer.allow_remote = True
    try:
        again = await emit(sandbox, trigger="MEETING_ENDED", user="alice")
    finally:
        sandbox.sandbox.deliverer.allow_remote = False
    remote = {d["url"]: d for d in again["deliveries"]}[f"http://0.0.0.0:{port}/hook"]
    assert remote["error"].startswith("ConnectError")  # it was sent (nobody listens there)
