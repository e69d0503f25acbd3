"""No credential at rest in clear: a rule creating a managed organization (its API key),
webhooks (their secret) and a delegation credential (its private key) leaves none of them
in Redis nor in any CLI output, while its later steps still get them in clear."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from typer.testing import CliRunner

from calhooks.service.calcom import TOOLS
from calhooks.service.calcom.sealing import SEALED, Sealer
from calhooks.service.cli.main import app
from calhooks.service.core.embedded_redis import EmbeddedRedis
from calhooks.service.core.secretbox import SecretBox, generate_key
from calhooks.service.core.settings import get_settings
from calhooks.workers.deadletter import DeadLetterQueue
from calhooks.workers.eventlog import CallLog, EventLog
from calhooks.workers.gates import GateChain
from calhooks.workers.jobs import Processor
from calhooks.workers.ledger import ExactlyOnce, Ledger, StepKey
from calhooks.workers.ordering import BookingOrder
from calhooks.workers.retries import RetryPolicy
from calhooks.workers.rules import parse_rules
from tests.sandbox.server import RunningSandbox
from tests.workers.helpers import end_now
from tests.workers.test_jobs import FakeEvent

runner = CliRunner()

HOOK_SECRET = "whsec_planted_in_the_rule_7f3a9c"
PRIVATE_KEY = "-----BEGIN PRIVATE KEY-----\nPLANTEDprivKEY9b1e\n-----END PRIVATE KEY-----\n"
EVENT_ID = "5e" * 32

RULES = f"""
rules:
  - name: provision
    on: BOOKING_CREATED
    steps:
      - id: branch
        tool: cal_organizations_controller_create_organization
        with:
          name: "Branch ${{{{ payload.uid }}}}"
      - id: hook
        tool: cal_organizations_webhooks_controller_create_organization_webhook
        with:
          active: true
          subscriberUrl: https://hooks.example/cal
          triggers: [BOOKING_CREATED]
          secret: "{HOOK_SECRET}"
      - id: hooks
        tool: cal_organizations_webhooks_controller_get_all_organization_webhooks
      - id: twin
        tool: cal_organizations_webhooks_controller_create_organization_webhook
        with:
          active: true
          subscriberUrl: https://hooks.example/twin
          triggers: [BOOKING_CREATED]
          secret: ${{{{ steps.hook.secret }}}}
      - id: credential
        tool: cal_organizations_delegation_credential_controller_update_delegation_credential
        with:
          credentialId: no-such-credential
          serviceAccountKey:
            private_key: {json.dumps(PRIVATE_KEY)}
            client_email: calendar@acme-project.iam.gserviceaccount.com
            client_id: "104857600000000000001"
"""


@pytest.fixture
def redis_url(redis_server: EmbeddedRedis, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("CALHOOKS_REDIS_URL", redis_server.url)
    get_settings.cache_clear()
    yield redis_server.url
    get_settings.cache_clear()


async def _run_rule(url: str, sandbox: RunningSandbox, sealer: Sealer) -> None:
    redis = aioredis.Redis.from_url(url)
    await redis.flushall()
    try:
        async with sandbox.client(gate=GateChain(CallLog())) as client:
            processor = Processor(
                rules=lambda: parse_rules(RULES, env={"org_id": 1}),
                client=client,
                ledger=Ledger(redis, ttl=600),
                dead_letters=DeadLetterQueue(redis),
                eventlog=EventLog(redis, ttl=600),
                order=BookingOrder(redis, wait=0.0, lock_wait=0.05),
                policy=RetryPolicy(3, 10.0, 100.0),
                job_timeout=30,
                worker_name="test-worker",
                sealer=sealer,
            )
            event = FakeEvent(EVENT_ID, "BOOKING_CREATED", {"uid": "bk-seal"}, time.time())
            await processor.process(event)
    finally:
        await redis.aclose()


async def _dump_everything(url: str) -> bytes:
    """Every key's DUMP and every value read by type, concatenated."""
    redis = aioredis.Redis.from_url(url)
    parts: list[bytes] = []
    try:
        async for key in redis.scan_iter(count=1000):
            parts.append(key)
            parts.append(await redis.dump(key) or b"")
            kind = (await redis.type(key)).decode()
            if kind == "string":
                parts.append(await redis.get(key) or b"")
            elif kind == "hash":
                for field, value in (await redis.hgetall(key)).items():
                    parts += [field, value]
            elif kind == "list":
                parts += await redis.lrange(key, 0, -1)
            elif kind == "zset":
                parts += [member for member, _ in await redis.zrange(key, 0, -1, withscores=True)]
            elif kind == "set":
                parts += list(await redis.smembers(key))
    finally:
        await redis.aclose()
    return b"\n".join(parts)


@pytest.mark.parametrize("keyed", [True, False], ids=["sealed", "dropped"])
def test_no_credential_reaches_redis_or_the_cli(
    keyed: bool, sandbox: RunningSandbox, redis_url: str
) -> None:
    seeded = set(sandbox.store.api_keys)
    sealer = Sealer(SecretBox(generate_key()) if keyed else None)
    asyncio.run(_run_rule(redis_url, sandbox, sealer))

    # The rule ran: the managed org got a key, and the later step got the secret in clear.
    new_keys = set(sandbox.store.api_keys) - seeded
    assert len(new_keys) == 1
    twins = [h for h in sandbox.store.webhooks.values() if h.subscriber_url.endswith("/twin")]
    assert [h.secret for h in twins] == [HOOK_SECRET]
    planted = [*new_keys, HOOK_SECRET, "PLANTEDprivKEY9b1e"]

    dump = asyncio.run(_dump_everything(redis_url))
    assert b"provision" in dump  # the dump does hold the event's records
    for value in planted:
        assert value.encode() not in dump, value

    shown = runner.invoke(app, ["events", "show", EVENT_ID, "--json"])
    assert shown.exit_code == 0, shown.output
    listed = runner.invoke(app, ["dlq", "list"])
    assert listed.exit_code == 0, listed.output
    entry = listed.stdout.split()[0]
    dead = runner.invoke(app, ["dlq", "show", entry])
    assert dead.exit_code == 0, dead.output
    assert "serviceAccountKey" in dead.stdout
    outputs = [shown.output, runner.invoke(app, ["events", "show", EVENT_ID]).output]
    outputs += [listed.output, dead.output]
    for output in outputs:
        for value in planted:
            assert value not in output, value
    steps = json.loads(shown.stdout)["steps"]
    branch = next(step for key, step in steps.items() if '"branch"' in key)
    if keyed:
        assert set(branch["output"]["apiKey"]) == {SEALED}
    else:
        assert branch["output"]["apiKey"] == "[REDACTED]"


async def test_a_recorded_output_is_unsealed_for_the_steps_that_reuse_it(
    sandbox: RunningSandbox, redis_client: aioredis.Redis
) -> None:
    tool = TOOLS["cal_organizations_controller_create_organization"]
    ledger = Ledger(redis_client, ttl=600)
    sealer = Sealer(SecretBox(generate_key()))
    key = StepKey("r", "branch")
    async with sandbox.client() as client:
        once = ExactlyOnce(ledger, client, sealer=sealer)
        first = await ledger.begin("ev")
        output, how = await once.run(first, key, tool, {}, lambda: client.call(tool, name="Branch"))
        await end_now(ledger, first)
        again = await ledger.begin("ev")
        reused, reused_how = await once.run(again, key, tool, {}, _never)
    assert (how, reused_how) == ("called", "recorded")
    assert output["apiKey"].startswith("cal_")
    assert reused == output
    stored = await ledger.load("ev")
    assert output["apiKey"] not in json.dumps(stored.steps[key.field].output)


async def _never() -> Any:
    raise AssertionError("a recorded step must not call Cal.com again")


def test_the_registry_marks_every_credential_field() -> None:
    outputs = {name: tool.secret_outputs for name, tool in TOOLS.items() if tool.secret_outputs}
    inputs = {name: tool.secret_inputs for name, tool in TOOLS.items() if tool.secret_inputs}
    hooks = "cal_organizations_webhooks_controller_"
    assert outputs == {
        "cal_organizations_controller_create_organization": (("apiKey",),),
        hooks + "create_organization_webhook": (("secret",),),
        hooks + "delete_webhook": (("secret",),),
        hooks + "get_all_organization_webhooks": (("*", "secret"),),
        hooks + "get_organization_webhook": (("secret",),),
        hooks + "update_org_webhook": (("secret",),),
    }
    credential = "cal_organizations_delegation_credential_controller_"
    assert inputs == {
        credential + "create_delegation_credential": (("serviceAccountKey", "private_key"),),
        credential + "update_delegation_credential": (("serviceAccountKey", "private_key"),),
        hooks + "create_organization_webhook": (("secret",),),
        hooks + "update_org_webhook": (("secret",),),
    }
