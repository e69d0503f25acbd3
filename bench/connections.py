"""Many organizations on one deployment: throughput and fairness between connections.

Real processes on loopback against one redis-server: ``calhooks sandbox --orgs N`` (N
numbered organizations, each with its own API key and Cal.com's rate limit per key, 120 a
minute), ``calhooks serve`` and ``calhooks worker`` (2, ``max_jobs`` 10). Every organization
is a connection; ``calhooks webhooks apply --all-connections`` gives each its webhook and
secret. Each event matches one rule with one Cal.com call (list users by the attendee's
email), made with the event's connection's key.

1. **burst** - N connections x E events each (100 x 20), queued at once as the intake queues
   them (same script, same pace; the intake's own speed is ``bench/ingest.py``'s): events/s
   from the first queued to the last done, and per connection p50/p99 of queued -> done.
2. **steady** - the same events as signed deliveries posted to each connection's intake URL
   at a steady ``--rate`` (30 events/s), with its own secret: per connection p50/p99 of
   accepted -> done.
3. **flooded** - the same as steady, after one more connection got ``--flood`` (5,000) events
   at once (queued as the intake queues them, fast: same script, same pace): the other
   connections' p50/p99, how many of the flood's events were done meanwhile, and per key the
   most calls in any 60 s and the 429s the sandbox answered. Runs at least ``--watch``
   seconds (65) so that every key is seen over a whole minute.

``--set NAME=VALUE`` changes a setting of the intake and workers for the run, e.g.
``--set WORKER_RATE_LIMIT_HOLD=30`` (the workers then sleep up to 30 s in a worker slot
waiting for their key's rate limit, instead of booking the slot and deferring past 1 s) or
``--set CONNECTION_RATE=100 CONNECTION_BURST=15`` (a pace within the key's budget).

    .venv/bin/python bench/connections.py [--connections 100] [--events 20] [--skip burst]
        [--set NAME=VALUE ...]

"accepted" is the intake's ``received_at`` of the event, "done" the worker's ``done`` record
in the event's log. The machine is shared (2 cores): figures move from run to run.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import redis.asyncio as aioredis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from calhooks.service.calcom.client import Credentials  # noqa: E402
from calhooks.service.connections.store import ConnectionStore  # noqa: E402
from calhooks.service.core.embedded_redis import EmbeddedRedis, free_port  # noqa: E402
from calhooks.service.core.secretbox import SecretBox, generate_key  # noqa: E402
from calhooks.service.core.settings import Settings  # noqa: E402
from calhooks.service.events import event_from_body  # noqa: E402
from calhooks.service.intake.queue import EventQueue, Pacing  # noqa: E402
from calhooks.service.intake.redispipe import RedisAddress, RedisPipe  # noqa: E402
from calhooks.service.sandbox import organization_api_key, organization_key_id  # noqa: E402
from calhooks.service.subscriptions.secret_store import WebhookSecretStore  # noqa: E402
from tests.counting import most_in_any_window  # noqa: E402
from tests.workers.processes import Process, start, stop_all  # noqa: E402

QUEUE = "arq:queue"
LIMIT = 120
#: The one call each event's rule makes (what counts an event as done in the request log).
RULE_TOOL = "cal_organizations_users_controller_get_organizations_users"
RULES = f"""\
rules:
  - name: bench-lookup
    on: [BOOKING_CREATED]
    steps:
      - tool: {RULE_TOOL}
        with:
          emails: ["${{{{ payload.attendees[0].email }}}}"]
"""


@dataclass
class Org:
    """One organization and its connection: where its deliveries go, signed with what."""

    org_id: int
    pcid: str = ""
    secret: str = ""


class Deployment:
    """The sandbox, the intake and the workers, with N organizations as connections."""

    def __init__(
        self, redis_url: str, workdir: Path, orgs: int, workers: int, settings: dict[str, str]
    ) -> None:
        #: The settings the options changed (printed with the figures).
        self.settings = settings
        self.redis_url = redis_url
        self.workdir = workdir
        self.orgs_count = orgs
        self.workers_count = workers
        self.procs: list[Process] = []
        self.key = generate_key()
        self.port = free_port()
        rules = workdir / "rules.yaml"
        rules.write_text(RULES)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("CALHOOKS_")}
        self.env.update(
            {
                "CALHOOKS_REDIS_URL": redis_url,
                "CALHOOKS_ENCRYPTION_KEY": self.key,
                "CALHOOKS_PUBLIC_URL": f"http://127.0.0.1:{self.port}",
                "CALHOOKS_RULES_FILE": str(rules),
                "CALHOOKS_LOG_LEVEL": "warning",
                "CALHOOKS_LOG_FORMAT": "json",
                "CALHOOKS_SPOOL_DIR": str(workdir / "spool"),
                "CALHOOKS_WEBHOOK_SECRETS_REFRESH": "0.2",
                "CALHOOKS_RECONCILE_PERIOD": "0",
                "CALHOOKS_WORKER_JOB_COMPLETION_WAIT": "2",
                **settings,
            }
        )
        rate = int(self.env.get("CALHOOKS_CONNECTION_RATE", LIMIT))
        burst = int(self.env.get("CALHOOKS_CONNECTION_BURST", LIMIT))
        #: The intake's pacing, for events this script queues itself.
        self.pacing = Pacing(rate, burst) if rate else None
        self.orgs: list[Org] = []
        self.sandbox_url = ""

    def start(
        self, name: str, args: list[str], env: dict[str, str], port: int, ready: str
    ) -> Process:
        proc = start(name, args, {**self.env, **env}, self.workdir, port)
        self.procs.append(proc)
        proc.wait_ready(ready, timeout=60)
        return proc

    async def up(self) -> None:
        port = free_port()
        args = ["sandbox", "--port", str(port), "--orgs", str(self.orgs_count)]
        sandbox = self.start(
            "sandbox", [*args, "--log-level", "warning"], {}, port, "/_sandbox/state"
        )
        self.sandbox_url = sandbox.url
        self.env["CALHOOKS_API_URL"] = sandbox.url
        async with httpx.AsyncClient(timeout=10) as http:
            state = (await http.get(sandbox.url + "/_sandbox/state")).json()
        numbered = sorted(o["id"] for o in state["organizations"] if o["slug"].startswith("org-"))
        self.orgs = [Org(org_id) for org_id in numbered]
        redis = aioredis.Redis.from_url(self.redis_url)
        try:
            store = ConnectionStore(redis, SecretBox(self.key))
            for org in self.orgs:
                credentials = Credentials(api_key=organization_api_key(org.org_id))
                info = await store.add(
                    f"org-{org.org_id}", credentials, org_id=org.org_id, base_url=sandbox.url
                )
                org.pcid = info.pcid
            applied = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "calhooks.service",
                "webhooks",
                "apply",
                "--all-connections",
                cwd=ROOT,
                env=self.env,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
            output, _ = await applied.communicate()
            if applied.returncode != 0:
                raise RuntimeError(f"webhooks apply failed:\n{output.decode()}")
            settings = Settings(_env_file=None, redis_url=self.redis_url, encryption_key=self.key)  # type: ignore[call-arg]
            for org in self.orgs:
                store_of = WebhookSecretStore.from_settings(settings, redis, connection=org.pcid)
                current = await store_of.current()
                if current is None:
                    raise RuntimeError(f"no secret stored for org {org.org_id}")
                org.secret = current.value
        finally:
            await redis.aclose()
        # The webhooks were applied with each key: give every key a fresh window, as if they
        # had been applied long before (the workers' budget cannot count those calls).
        async with httpx.AsyncClient(timeout=10) as http:
            limit = {"limit": LIMIT, "window": 60}
            (await http.put(sandbox.url + "/_sandbox/rate-limit", json=limit)).raise_for_status()
        # Started once the connections have secrets: an intake with none is not ready.
        self.start("intake", ["serve", "--port", str(self.port)], {}, self.port, "/readyz")
        for n in range(self.workers_count):
            port = free_port()
            env = {"CALHOOKS_WORKER_HTTP_PORT": str(port), "CALHOOKS_WORKER_NAME": f"w{n}"}
            self.start(f"w{n}", ["worker"], env, port, "/readyz")

    def down(self) -> None:
        stop_all(self.procs, timeout=60)


def booking(org: Org, n: int, tag: str) -> bytes:
    body = {
        "triggerEvent": "BOOKING_CREATED",
        "createdAt": "2031-05-01T08:00:00.000Z",
        "payload": {
            "type": "30min",
            "uid": f"bench-{tag}-{org.org_id}-{n}",
            "organizer": {"email": f"admin@org-{org.org_id}.example"},
            "attendees": [{"email": f"guest-{tag}-{org.org_id}-{n}@client.example"}],
        },
    }
    return json.dumps(body, separators=(",", ":")).encode()


@dataclass
class Sent:
    org: Org
    event_id: str


async def post_all(
    intake: str, deliveries: list[tuple[Org, bytes]], rate: float | None
) -> list[Sent]:
    """Post signed deliveries to each one's connection URL (at ``rate`` a second, or as fast
    as the intake takes them with 32 in flight); the accepted ones."""
    gate = asyncio.Semaphore(32)
    timeout = httpx.Timeout(30, pool=None)
    async with httpx.AsyncClient(base_url=intake, timeout=timeout) as http:

        async def post(org: Org, raw: bytes) -> Sent:
            signature = hmac.new(org.secret.encode(), raw, hashlib.sha256).hexdigest()
            headers = {"Content-Type": "application/json", "X-Cal-Signature-256": signature}
            async with gate:
                answer = await http.post(f"/webhooks/cal/{org.pcid}", content=raw, headers=headers)
            if answer.status_code != 202:
                raise RuntimeError(f"delivery refused: {answer.status_code} {answer.text[:200]}")
            return Sent(org, str(answer.json()["id"]))

        started = time.perf_counter()
        tasks = []
        for index, (org, raw) in enumerate(deliveries):
            if rate:
                delay = started + index / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(post(org, raw)))
        answers = await asyncio.gather(*tasks)
    return list(answers)


async def timeline(redis: aioredis.Redis, event_id: str) -> tuple[float, float] | None:
    """(accepted, done) epoch seconds of a finished event, else ``None``."""
    records = [json.loads(r) for r in await redis.lrange(f"calhooks:eventlog:{event_id}", 0, -1)]
    attempt = next((r for r in records if r["kind"] == "attempt"), None)
    done = next((r for r in records if r["kind"] == "done"), None)
    if attempt is None or done is None:
        return None
    return float(attempt["received_at"]), float(done["at"])


async def wait_done(
    redis: aioredis.Redis, sent: list[Sent], within: float
) -> dict[str, tuple[float, float]]:
    found: dict[str, tuple[float, float]] = {}
    deadline = time.monotonic() + within
    while len(found) < len(sent) and time.monotonic() < deadline:
        for item in sent:
            if item.event_id not in found:
                times = await timeline(redis, item.event_id)
                if times is not None:
                    found[item.event_id] = times
        await asyncio.sleep(0.5)
    return found


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * share))]


def per_connection(sent: list[Sent], done: dict[str, tuple[float, float]]) -> str:
    """p50/p99 of accepted -> done per connection, summarised over the connections."""
    latencies: dict[int, list[float]] = {}
    for item in sent:
        if item.event_id in done:
            accepted, finished = done[item.event_id]
            latencies.setdefault(item.org.org_id, []).append(finished - accepted)
    p50s = [statistics.median(v) for v in latencies.values()]
    p99s = [percentile(v, 0.99) for v in latencies.values()]
    every = [x for v in latencies.values() for x in v]
    return (
        f"per connection p50 median {statistics.median(p50s) * 1000:.0f} ms / worst "
        f"{max(p50s) * 1000:.0f} ms; p99 median {statistics.median(p99s) * 1000:.0f} ms / "
        f"worst {max(p99s) * 1000:.0f} ms (all events: p99 {percentile(every, 0.99) * 1000:.0f} ms)"
    )


async def requests(sandbox: str) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(base_url=sandbox + "/_sandbox", timeout=30) as admin:
        records: list[dict[str, Any]] = (await admin.get("/requests")).json()["requests"]
    return records


async def queue_all(deployment: Deployment, deliveries: list[tuple[Org, bytes]]) -> list[Sent]:
    """Queue deliveries as the intake queues them (same script, same pace), 500 at a time."""
    pipe = RedisPipe(RedisAddress.from_url(deployment.redis_url))
    queue = EventQueue(pipe, queue_name=QUEUE, dedupe_window=86_400, pacing=deployment.pacing)
    sent: list[Sent] = []
    try:
        for first in range(0, len(deliveries), 500):
            batch = [
                (org, event_from_body(raw, received_at=time.time(), connection=org.pcid))
                for org, raw in deliveries[first : first + 500]
            ]
            await asyncio.gather(*(queue.enqueue(event, deadline=10) for _, event in batch))
            sent += [Sent(org, event.id) for org, event in batch]
    finally:
        await pipe.aclose()
    return sent


async def burst(deployment: Deployment, redis: aioredis.Redis, events: int) -> None:
    tag = f"burst{time.time_ns()}"
    deliveries = [(org, booking(org, n, tag)) for n in range(events) for org in deployment.orgs]
    started = time.time()
    sent = await queue_all(deployment, deliveries)
    queued = time.time() - started
    done = await wait_done(redis, sent, within=600)
    first = min(accepted for accepted, _ in done.values())
    last = max(finished for _, finished in done.values())
    print(
        f"burst    {len(deployment.orgs)} connections x {events} events queued in {queued:.1f} s,"
        f" {len(done)}/{len(sent)} done in {last - first:.1f} s: "
        f"{len(done) / (last - first):.0f} events/s"
    )
    print(f"         {per_connection(sent, done)}")


async def steady(
    deployment: Deployment,
    redis: aioredis.Redis,
    events: int,
    rate: float,
    flood: int,
    watch: float,
) -> None:
    orgs = deployment.orgs
    flooded, others = (orgs[0], orgs[1:]) if flood else (None, orgs)
    tag = f"steady{time.time_ns()}"  # bodies of their own: a later part's are not duplicates
    started = time.time()
    if flooded is not None:
        await queue_all(deployment, [(flooded, booking(flooded, n, tag)) for n in range(flood)])
        took = time.time() - started
        print(f"flood    {flood} events queued for org {flooded.org_id} in {took:.1f} s")
    deliveries = [(org, booking(org, n, tag)) for n in range(events) for org in others]
    sent = await post_all(f"http://127.0.0.1:{deployment.port}", deliveries, rate)
    done = await wait_done(redis, sent, within=600)
    label = "flooded " if flood else "steady  "
    if deployment.settings:
        label += f"({' '.join(f'{k}={v}' for k, v in deployment.settings.items())}) "
    print(
        f"{label} {len(others)} connections x {events} events at {rate:.0f}/s: "
        f"{len(done)}/{len(sent)} done"
    )
    print(f"         {per_connection(sent, done)}")
    if flooded is None:
        return
    remaining = watch - (time.time() - started)
    if remaining > 0:
        await asyncio.sleep(remaining)
    records = [r for r in await requests(deployment.sandbox_url) if r.get("tool")]
    by_key: dict[str, list[float]] = {}
    for r in records:
        if r["status"] == 200 and r["credential"]:
            at = datetime.fromisoformat(r["at"].replace("Z", "+00:00")).timestamp()
            by_key.setdefault(r["credential"], []).append(at)
    throttled = Counter(r["credential"] for r in records if r["status"] == 429)
    flood_key = organization_key_id(flooded.org_id)
    # The flood's events done: its rule's calls (the key's other calls, such as the webhook
    # apply's, count toward its limit below but are not events).
    flood_done = sum(
        1
        for r in records
        if r["status"] == 200 and r["credential"] == flood_key and r["tool"] == RULE_TOOL
    )
    busiest = {key: most_in_any_window(times) for key, times in by_key.items()}
    others_busiest = max((v for k, v in busiest.items() if k != flood_key), default=0)
    print(
        f"         flood: {flood_done} of {flood} done in "
        f"{time.time() - started:.0f} s; most calls in any 60 s: flooded key "
        f"{busiest.get(flood_key, 0)}, any other key {others_busiest} (limit {LIMIT}); "
        f"429s: {sum(throttled.values())}"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=100)
    parser.add_argument("--events", type=int, default=20, help="events per connection")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rate", type=float, default=30.0, help="events/s, steady parts")
    parser.add_argument("--flood", type=int, default=5000)
    parser.add_argument("--watch", type=float, default=65.0, help="seconds of the flooded part")
    parser.add_argument("--skip", nargs="*", default=[], choices=["burst", "steady", "flooded"])
    parser.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="NAME=VALUE",
        help="intake and worker settings, e.g. CONNECTION_BURST=15 WORKER_RATE_LIMIT_HOLD=30",
    )
    options = parser.parse_args()
    settings = {}
    for pair in options.set:
        name, _, value = pair.partition("=")
        settings["CALHOOKS_" + name.upper().removeprefix("CALHOOKS_")] = value
    with EmbeddedRedis() as redis_server, tempfile.TemporaryDirectory() as tmp:
        # One more organization than connections measured: the flooded one.
        deployment = Deployment(
            redis_server.url, Path(tmp), options.connections + 1, options.workers, settings
        )
        redis = aioredis.Redis.from_url(redis_server.url)
        try:
            await deployment.up()
            measured = deployment.orgs
            deployment.orgs = measured[1:]
            if "burst" not in options.skip:
                await burst(deployment, redis, options.events)
            if "steady" not in options.skip:
                await steady(deployment, redis, options.events, options.rate, 0, 0)
            deployment.orgs = measured
            if "flooded" not in options.skip:
                await steady(
                    deployment, redis, options.events, options.rate, options.flood, options.watch
                )
        finally:
            await redis.aclose()
            deployment.down()


if __name__ == "__main__":
    asyncio.run(main())
