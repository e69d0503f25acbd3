"""The webhooks page against the sandbox Cal.com: plan, secret status, and a test delivery."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
import redis
from cryptography.fernet import Fernet

from calhooks.service.app import create_app
from calhooks.service.core.embedded_redis import EmbeddedRedis, free_port
from calhooks.service.sandbox import SANDBOX_API_KEY, SANDBOX_ORG_ID
from tests.console.conftest import OPERATOR, console_settings
from tests.sandbox.server import RunningSandbox
from tests.servers import serve_app

SECRET = "whsec-console-tests"


def csrf_of(html: str) -> str:
    return html.split('name="csrf" value="', 1)[1].split('"', 1)[0]


@pytest.mark.slow
def test_test_delivery_reaches_the_intake_signed(
    tmp_path: Path, redis_server: EmbeddedRedis, sandbox: RunningSandbox
) -> None:
    port = free_port("127.0.0.1")
    public = f"http://127.0.0.1:{port}"
    settings = console_settings(
        tmp_path, redis_server.url, api_url=sandbox.url, public_url=public,
        api_key=SANDBOX_API_KEY, org_id=SANDBOX_ORG_ID,
        encryption_key=Fernet.generate_key().decode(),
    )  # fmt: skip
    # The webhook calhooks would own (its URL carries ?calhooks=<deployment>), signing with
    # the secret the intake knows.
    created = httpx.post(
        f"{sandbox.url}/v2/organizations/{SANDBOX_ORG_ID}/webhooks",
        headers={"Authorization": f"Bearer {SANDBOX_API_KEY}"},
        json={"active": True, "subscriberUrl": f"{public}/webhooks/cal?calhooks=default",
              "triggers": ["BOOKING_CREATED"], "secret": SECRET},
    )  # fmt: skip
    assert created.status_code in (200, 201), created.text
    last_apply = {
        "at": 1_700_000_000, "secret_created": False, "secret_id": "s1",
        "done": [{"action": "update", "webhook": "wh-1", "note": None}],
    }  # fmt: skip
    with redis.Redis.from_url(redis_server.url) as plain:
        plain.set("calhooks:webhooks:default:last_apply", json.dumps(last_apply))
    with (
        serve_app(create_app(settings, redis_url=redis_server.url), port=port) as url,
        httpx.Client(base_url=url, follow_redirects=True) as client,
    ):
        form = client.get("/console/sign-in")
        signed_in = client.post(
            "/console/sign-in",
            data={"name": OPERATOR[0], "password": OPERATOR[1], "csrf": csrf_of(form.text)},
        )
        assert signed_in.status_code == 200
        page = client.get("/console/webhooks")
        assert "Plan against Cal.com" in page.text
        assert SECRET not in page.text
        assert "updated webhook <code>wh-1</code>" in page.text
        answer = client.post("/console/webhooks/test", data={"csrf": csrf_of(page.text)})
        assert answer.status_code == 200
        assert "verified: the intake accepted the signed PING" in answer.text, answer.text[
            answer.text.index("Test delivery") :
        ]
        assert SECRET not in answer.text
