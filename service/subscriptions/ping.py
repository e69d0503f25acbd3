"""``calhooks webhooks test``: a PING delivery to the intake, and whether it was verified.

Cal.com's API v2 has no test-delivery endpoint - its PING comes only from the dashboard's
"Ping test" button (FACTS §5). So:

* against the sandbox Cal.com (recognised by its ``/_sandbox/state``), the sandbox is asked
  to ping the webhook (``POST /_sandbox/webhooks/{id}/ping``): the delivery goes exactly as
  Cal.com would send it, signed with the secret the webhook holds there;
* otherwise, calhooks sends the same PING body itself to the webhook's subscriber URL,
  signed as Cal.com signs (HMAC-SHA256 of the body, hex) with calhooks' current secret.

Either way the intake's answer is the verdict: it answers 2xx only after the signature
matched one of its secrets, 401 when none did.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import httpx

from calhooks.service.calcom.webhooks import compact_json, delivery_headers, ping_body, sign
from calhooks.service.subscriptions.errors import PingError
from calhooks.service.subscriptions.secret_store import StoredSecret

Route = Literal["sandbox", "direct"]
_RESPONSE_SHOWN = 300


@dataclass(frozen=True, slots=True)
class PingOutcome:
    """One test delivery: how it was sent, where, and what the intake answered."""

    route: Route
    url: str
    webhook_id: str | None
    status: int | None
    error: str | None = None
    response: str = ""

    @property
    def verified(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    def verdict(self) -> str:
        answer = self.response.strip()[:_RESPONSE_SHOWN]
        if self.status is None:
            return f"not delivered: {self.error or 'no answer'}"
        if self.verified:
            return f"verified: the intake accepted the signed PING (HTTP {self.status})"
        if self.status == 401:
            return f"rejected: the intake did not verify the signature (HTTP 401) {answer}".rstrip()
        return f"not verified: the intake answered HTTP {self.status} {answer}".rstrip()

    def to_dict(self) -> dict[str, Any]:
        return {
            "route": self.route,
            "url": self.url,
            "webhookId": self.webhook_id,
            "status": self.status,
            "error": self.error,
            "response": self.response[:_RESPONSE_SHOWN],
            "verified": self.verified,
            "verdict": self.verdict(),
        }


async def is_sandbox(http: httpx.AsyncClient, api_url: str) -> bool:
    """Whether ``api_url`` is the sandbox Cal.com (it answers ``GET /_sandbox/state``)."""
    try:
        response = await http.get(f"{api_url.rstrip('/')}/_sandbox/state")
        return response.status_code == 200 and "organizations" in response.json()
    except (httpx.HTTPError, ValueError):
        return False


async def sandbox_ping(http: httpx.AsyncClient, api_url: str, webhook_id: str) -> PingOutcome:
    """Ask the sandbox to send its PING to ``webhook_id``, as Cal.com's dashboard does."""
    try:
        response = await http.post(f"{api_url.rstrip('/')}/_sandbox/webhooks/{webhook_id}/ping")
    except httpx.HTTPError as exc:
        raise PingError(f"cannot reach the sandbox at {api_url}: {exc}") from exc
    try:
        data = response.json()
    except ValueError:
        data = {}
    if response.status_code != 200:
        raise PingError(f"the sandbox refused the ping: {data.get('error') or response.text}")
    return PingOutcome(
        "sandbox",
        str(data.get("url", "")),
        webhook_id,
        data.get("status"),
        data.get("error"),
        str(data.get("response") or ""),
    )


async def direct_ping(
    http: httpx.AsyncClient, url: str, secret: StoredSecret, *, webhook_id: str | None = None
) -> PingOutcome:
    """Send a PING signed with ``secret`` to ``url`` ourselves, exactly as Cal.com would."""
    raw = compact_json(ping_body(datetime.now(UTC))).encode()
    headers = delivery_headers(sign(raw, secret.value.encode()))
    try:
        response = await http.post(url, content=raw, headers=headers)
    except httpx.HTTPError as exc:
        reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        return PingOutcome("direct", url, webhook_id, None, reason)
    return PingOutcome("direct", url, webhook_id, response.status_code, None, response.text)
