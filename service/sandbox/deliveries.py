"""Webhook deliveries as Cal.com makes them: signed POSTs to each subscribed webhook.

Per subscriber, one ``POST`` of the compact JSON body (``JSON.stringify``: no whitespace,
non-ASCII as is) with ``Content-Type: application/json``, ``X-Cal-Signature-256`` (lowercase
hex HMAC-SHA256 of the exact body bytes keyed with the webhook's secret, or the literal
``no-secret-provided`` when it has none) and ``X-Cal-Webhook-Version: 2021-10-20``.
Redirects are not followed and nothing is retried; the outcome is recorded either way.

A webhook's ``payloadTemplate`` is rendered instead of the default body: ``{{path.to.value}}``
variables (Handlebars-escaped; ``{{{raw}}}`` unescaped) over the payload's fields plus
``triggerEvent`` and ``createdAt``. A template that is JSON is sent as re-serialised JSON,
anything else as ``application/x-www-form-urlencoded``. Block helpers are not supported.

Deliveries run in the background, after the API or admin call that caused them has
answered, as Cal.com's do; ``wait_idle`` lets tests and the admin surface wait for them.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
import structlog

from calhooks.service.calcom.webhooks import (
    NO_SECRET,
    compact_json,
    delivery_headers,
    sign,
    utc_timestamp,
)
from calhooks.service.sandbox.exposure import delivery_refusal
from calhooks.service.sandbox.state import Webhook

logger = structlog.get_logger(__name__)

JSON_TYPE = "application/json"
FORM_TYPE = "application/x-www-form-urlencoded"

_VARIABLE = re.compile(r"{{{\s*([^{}]+?)\s*}}}|{{\s*([^{}]+?)\s*}}")
_COMMENT = re.compile(r"{{!--.*?--}}|{{![^}]*}}", re.DOTALL)
_HTML_ESCAPES = str.maketrans(
    {
        "&": "&amp;",
        "<": "&lt;",
        ">": "&gt;",
        '"': "&quot;",
        "'": "&#x27;",
        "`": "&#x60;",
        "=": "&#x3D;",
    }
)
_RESPONSE_KEEP = 2000


def signature(body: bytes, secret: str | None) -> str:
    """The ``X-Cal-Signature-256`` header for ``body`` from a webhook with ``secret``."""
    return sign(body, secret.encode()) if secret else NO_SECRET


def _js_string(value: Any) -> str:
    """How JavaScript's ``String(value)`` (which Handlebars uses) prints a JSON value."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, dict):
        return "[object Object]"
    if isinstance(value, list):
        return ",".join(_js_string(item) for item in value)
    return str(value)


def _lookup(variables: Mapping[str, Any], expression: str) -> Any:
    value: Any = variables
    for part in expression.replace("[", "").replace("]", "").split("."):
        if isinstance(value, Mapping):
            value = value.get(part)
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return None
    return value


def render_template(template: str, variables: Mapping[str, Any]) -> tuple[str, str]:
    """A payloadTemplate rendered over ``variables``: ``(body text, content type)``."""

    def substitute(match: re.Match[str]) -> str:
        raw, escaped = match.group(1), match.group(2)
        text = _js_string(_lookup(variables, raw or escaped))
        return text if raw else text.translate(_HTML_ESCAPES)

    rendered = _VARIABLE.sub(substitute, _COMMENT.sub("", template)).replace("&quot;", '"')
    try:
        json.loads(template)
    except ValueError:
        return rendered, FORM_TYPE
    try:
        return compact_json(json.loads(rendered)), JSON_TYPE
    except ValueError:
        return "null", JSON_TYPE  # JSON.stringify(jsonParse(bad)) in Cal.com's sender


def encode(webhook: Webhook, body: Mapping[str, Any]) -> tuple[str, str]:
    """The exact text and content type ``webhook`` receives for ``body``."""
    if not webhook.payload_template:
        return compact_json(body), JSON_TYPE
    payload = body.get("payload")
    variables = dict(payload) if isinstance(payload, Mapping) else dict(body)
    variables.update(triggerEvent=body.get("triggerEvent"), createdAt=body.get("createdAt"))
    return render_template(webhook.payload_template, variables)


@dataclass
class Delivery:
    """One POST to one subscriber and what came of it."""

    webhook_id: str
    url: str
    trigger: str
    raw: str
    content_type: str
    signature: str
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    created_at: str = field(default_factory=utc_timestamp)
    status: int | None = None
    error: str | None = None
    response: str = ""
    duration: float = 0.0
    done: bool = False

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    def to_dict(self) -> dict[str, Any]:
        try:
            body = json.loads(self.raw) if self.content_type == JSON_TYPE else None
        except ValueError:
            body = None
        return {
            "id": self.id,
            "webhookId": self.webhook_id,
            "url": self.url,
            "trigger": self.trigger,
            "createdAt": self.created_at,
            "contentType": self.content_type,
            "signature": self.signature,
            "raw": self.raw,
            "body": body,
            "done": self.done,
            "ok": self.ok,
            "status": self.status,
            "error": self.error,
            "response": self.response,
            "duration": round(self.duration, 4),
        }


class Deliverer:
    """Sends deliveries in the background and keeps the latest ``keep`` records."""

    def __init__(
        self, *, timeout: float = 10.0, keep: int = 1000, allow_remote: bool = False
    ) -> None:
        self.timeout = timeout
        #: Deliver to any host; by default only loopback addresses (``sandbox.exposure``).
        self.allow_remote = allow_remote
        self.records: deque[Delivery] = deque(maxlen=keep)
        self._pending: set[asyncio.Task[Delivery]] = set()
        self._http: httpx.AsyncClient | None = None

    def dispatch(
        self, webhooks: Iterable[Webhook], trigger: str, body: Mapping[str, Any]
    ) -> list[asyncio.Task[Delivery]]:
        """Start one background delivery per webhook (call from the server's loop)."""
        tasks = []
        for webhook in webhooks:
            task = asyncio.get_running_loop().create_task(self.deliver(webhook, trigger, body))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)
            tasks.append(task)
        return tasks

    async def deliver(self, webhook: Webhook, trigger: str, body: Mapping[str, Any]) -> Delivery:
        text, content_type = encode(webhook, body)
        raw = text.encode()
        delivery = Delivery(
            webhook.id,
            webhook.subscriber_url,
            trigger,
            text,
            content_type,
            signature(raw, webhook.secret),
        )
        self.records.append(delivery)
        headers = {**delivery_headers(delivery.signature, content_type), "User-Agent": "node"}
        refusal = None if self.allow_remote else delivery_refusal(webhook.subscriber_url)
        if refusal is not None:
            delivery.error, delivery.done = refusal, True
            logger.warning("sandbox.delivery_refused", url=webhook.subscriber_url)
            return delivery
        started = time.perf_counter()
        try:
            response = await self._client().post(
                webhook.subscriber_url, content=raw, headers=headers
            )
        except httpx.HTTPError as exc:
            delivery.error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            logger.info("sandbox.delivery_failed", url=webhook.subscriber_url, error=delivery.error)
        else:
            delivery.status = response.status_code
            delivery.response = response.text[:_RESPONSE_KEEP]
        delivery.duration = time.perf_counter() - started
        delivery.done = True
        return delivery

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=self.timeout, follow_redirects=False)
        return self._http

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def wait_idle(self, max_wait: float = 10.0) -> bool:
        """Wait until no delivery is in flight; ``False`` if some still are after ``max_wait``."""
        deadline = asyncio.get_running_loop().time() + max_wait
        while self._pending:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                return False
            await asyncio.wait(set(self._pending), timeout=remaining)
        return True

    def clear(self) -> None:
        self.records.clear()

    async def aclose(self) -> None:
        for task in list(self._pending):
            task.cancel()
        if self._http is not None:
            await self._http.aclose()
            self._http = None
