"""Worker throughput, the shared rate limit, and accepted-to-first-call latency.

Every part runs real processes on loopback against one redis-server: ``calhooks sandbox``
(Cal.com), ``calhooks worker`` (1 or 4) and, for latency, ``calhooks serve`` (the intake).
Each event matches one rule with one step, a read (list users by the event's attendee email).

1. **drain** - N events queued at once, one worker at ``max_jobs`` 10 and 100, the sandbox
   answering after 50 ms: events/s, as a ratio of the ideal ``max_jobs / 50 ms``, and the
   worker's CPU.
2. **rate limit** - 4 workers share ``CALHOOKS_WORKER_RATE_LIMIT_PER_MINUTE`` = 120 against
   a sandbox that throttles like Cal.com (120 per 60-s window, then a 60-s block), with more
   events queued than fit in the run: the most calls the sandbox served in any 60 s (as a
   share of the limit) and how many 429s it answered.
0. **overhead** - N no-op jobs through ``WakeableWorker`` in this process (no rules, no
   Cal.com): the CPU per job of the worker runtime alone - claim, arq's start and end, leases.
   Steadier than the drains on a loaded machine, since it counts CPU, not time.
3. **latency** - signed deliveries posted to the intake at 200 events/s: from the moment
   the intake received each one (``Event.received_at``) to the moment the worker sent its
   first Cal.com call (the ``sent_at`` of the delivery log's first ``call``), p50/p99. Also
   the worker's CPU while idle.

    .venv/bin/python bench/workers.py [--events 2000] [--ratelimit-seconds 60] [--skip ...]

The machine is shared (2 cores): every part is short, and figures move from run to run.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import redis.asyncio as aioredis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from calhooks.service.core.embedded_redis import EmbeddedRedis, free_port  # noqa: E402
from calhooks.service.events import Event, job_bytes  # noqa: E402
from calhooks.service.sandbox import SANDBOX_API_KEY, SANDBOX_ORG_ID  # noqa: E402
from tests.counting import most_in_any_window  # noqa: E402
from tests.workers.processes import Process, start, stop_all  # noqa: E402

SECRET = "bench-signing-secret"  # noqa: S105 - the benchmark's own key
QUEUE = "arq:queue"
RULES = """\
rules:
  - name: bench-lookup
    on: [BOOKING_CREATED]
    steps:
      - id: attendee
        tool: cal_organizations_users_controller_get_organizations_users
        with:
          emails: ["${{ payload.attendees[0].email }}"]
"""


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Cluster:
    """Starts calhooks processes with one environment; stops them all on exit."""

    def __init__(self, redis_url: str, workdir: Path) -> None:
        self.redis_url = redis_url
        self.workdir = workdir
        self.procs: list[Process] = []
        rules = workdir / "rules.yaml"
        rules.write_text(RULES)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("CALHOOKS_")}
        self.env.update(
            {
                "CALHOOKS_REDIS_URL": redis_url,
                "CALHOOKS_API_KEY": SANDBOX_API_KEY,
                "CALHOOKS_ORG_ID": str(SANDBOX_ORG_ID),
                "CALHOOKS_RULES_FILE": str(rules),
                "CALHOOKS_WEBHOOK_SECRETS": SECRET,
                "CALHOOKS_LOG_LEVEL": "warning",
                "CALHOOKS_LOG_FORMAT": "json",
                "CALHOOKS_SPOOL_DIR": str(workdir / "spool"),
            }
        )

    def start(self, name: str, args: list[str], env: dict[str, str], ready: str) -> Process:
        port = free_port()
        command = list(args)
        if args[0] in ("sandbox", "serve"):
            command += ["--port", str(port)]
        full_env = {**self.env, **env}
        if args[0] == "worker":
            full_env["CALHOOKS_WORKER_HTTP_PORT"] = str(port)
            full_env["CALHOOKS_WORKER_NAME"] = name
        proc = start(name, command, full_env, self.workdir, port)
        self.procs.append(proc)
        proc.wait_ready(ready)
        return proc

    def sandbox(self, *args: str) -> Process:
        return self.start(
            "sandbox", ["sandbox", "--log-level", "warning", *args], {}, "/_sandbox/state"
        )

    def worker(self, name: str, sandbox: Process, **settings: Any) -> Process:
        env = {"CALHOOKS_API_URL": sandbox.url}
        env.update({f"CALHOOKS_{k.upper()}": str(v) for k, v in settings.items()})
        return self.start(name, ["worker"], env, "/readyz")

    def intake(self) -> Process:
        return self.start("intake", ["serve"], {}, "/readyz")

    def stop(self) -> None:
        stop_all(self.procs, timeout=30)


@contextmanager
def cluster(redis: EmbeddedRedis, workdir: Path) -> Iterator[Cluster]:
    running = Cluster(redis.url, workdir)
    try:
        yield running
    finally:
        running.stop()


def booking(n: int, tag: str) -> dict[str, Any]:
    """A BOOKING_CREATED body whose first attendee's email is unique to event ``n``."""
    return {
        "triggerEvent": "BOOKING_CREATED",
        "createdAt": "2031-05-01T08:00:00.000Z",
        "payload": {
            "type": "30min",
            "title": f"Bench {n}",
            "uid": f"bench-{tag}-{n}",
            "startTime": "2031-05-01T09:00:00Z",
            "endTime": "2031-05-01T09:30:00Z",
            "organizer": {"email": "alice@acme.example", "name": "Alice"},
            "attendees": [{"email": f"bench-{tag}-{n}@client.example", "name": f"Guest {n}"}],
        },
    }


async def enqueue(redis: aioredis.Redis, bodies: list[dict[str, Any]]) -> None:
    """Queue events as the intake does (same job record, score, wake token), in one pipeline."""
    async with redis.pipeline(transaction=False) as pipe:
        for body in bodies:
            raw = json.dumps(body, separators=(",", ":")).encode()
            now = time.time()
            event = Event(
                hashlib.sha256(raw).hexdigest(),
                body["triggerEvent"],
                body["createdAt"],
                body["payload"],
                body,
                now,
            )
            now_ms = int(now * 1000)
            pipe.psetex(f"arq:job:{event.id}", 86_400_000, job_bytes(event, now_ms))
            pipe.zadd(QUEUE, {event.id: now_ms})
            pipe.lpush(f"{QUEUE}:wake", 1)
            pipe.ltrim(f"{QUEUE}:wake", 0, 63)
        await pipe.execute()


def processed(workers: list[Process]) -> int:
    total = 0
    for worker in workers:
        text = httpx.get(worker.url + "/metrics", timeout=5).text
        for line in text.splitlines():
            match = re.match(
                r'calhooks_worker_events_total\{connection="env",outcome="processed"\} ([0-9.e+]+)',
                line,
            )
            if match:
                total += int(float(match[1]))
    return total


def start_spy(pid: int, output: Path) -> subprocess.Popen[bytes]:
    """py-spy recording ``pid``'s raw (collapsed) stacks to ``output`` until SIGINT."""
    return subprocess.Popen(
        [str(Path(sys.executable).parent / "py-spy"), "record", "--format", "raw",
         "--rate", "250", "--nonblocking", "--pid", str(pid), "--output", str(output)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


async def noop(_ctx: dict[str, Any], _n: int) -> None:
    """The overhead part's job: nothing."""


async def overhead(redis_server: EmbeddedRedis, events: int, max_jobs: int = 100) -> None:
    from arq.connections import RedisSettings, create_pool

    from calhooks.workers.wakeup import WakeableWorker

    settings = RedisSettings.from_dsn(redis_server.url)
    pool = await create_pool(settings)
    await pool.flushall()
    for n in range(events):
        await pool.enqueue_job("noop", n, _job_id=f"noop-{n}")
    worker = WakeableWorker(
        functions=[noop], redis_settings=settings, handle_signals=False, burst=True,
        max_jobs=max_jobs, poll_delay=0.5,
    )  # fmt: skip
    cpu_before = time.process_time()
    await worker.main()
    cpu = time.process_time() - cpu_before
    await worker.close()
    await pool.aclose()
    print(
        f"overhead max_jobs={max_jobs:<4} {worker.jobs_complete} no-op jobs:"
        f" {cpu / events * 1e6:5.0f} us of CPU per job (the worker runtime alone)"
    )


async def drain(
    redis_server: EmbeddedRedis,
    workdir: Path,
    max_jobs: int,
    events: int,
    profile: Path | None = None,
) -> None:
    latency = 0.05
    with cluster(redis_server, workdir) as run:
        sandbox = run.sandbox("--no-rate-limit", "--latency", str(latency))
        worker = run.worker(
            f"drain-{max_jobs}", sandbox, worker_max_jobs=max_jobs, worker_rate_limit_per_minute=0
        )
        redis = aioredis.Redis.from_url(redis_server.url)
        await redis.flushall()
        spy = None
        if profile is not None:
            spy = start_spy(worker.process.pid, profile / f"worker-{max_jobs}.txt")
            await asyncio.sleep(1.0)
        cpu_before = cpu_seconds(worker.process.pid)
        started = time.perf_counter()
        await enqueue(redis, [booking(n, f"drain{max_jobs}") for n in range(events)])
        while processed([worker]) < events:  # noqa: ASYNC110 - polls another process
            await asyncio.sleep(0.05)
        elapsed = time.perf_counter() - started
        cpu = cpu_seconds(worker.process.pid) - cpu_before
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(timeout=60)
        await redis.aclose()
    rate = events / elapsed
    ideal = max_jobs / latency
    print(
        f"drain   max_jobs={max_jobs:<4} {events} events in {elapsed:5.2f} s: {rate:7.1f} events/s"
        f"  = {rate / ideal:.2f}x ideal ({ideal:.0f}/s)   worker CPU {cpu / elapsed * 100:4.0f}%"
        f" = {cpu / events * 1000:.2f} ms/event"
    )


async def rate_limit(redis_server: EmbeddedRedis, workdir: Path, seconds: float) -> None:
    limit = 120
    with cluster(redis_server, workdir) as run:
        sandbox = run.sandbox("--rate-limit", str(limit), "--window", "60")
        redis = aioredis.Redis.from_url(redis_server.url)
        await redis.flushall()
        for i in range(4):
            run.worker(f"rl-{i}", sandbox, worker_rate_limit_per_minute=limit)
        await enqueue(redis, [booking(n, "rl") for n in range(limit * 3)])
        await asyncio.sleep(seconds)
        async with httpx.AsyncClient(base_url=sandbox.url + "/_sandbox") as admin:
            records = (await admin.get("/requests")).json()["requests"]
        await redis.aclose()
    api = [r for r in records if r.get("tool")]
    served = [r for r in api if r["status"] == 200]
    throttled = sum(1 for r in api if r["status"] == 429)
    arrived = [datetime.fromisoformat(r["at"].replace("Z", "+00:00")).timestamp() for r in served]
    busiest = most_in_any_window(arrived)
    print(
        f"limit   4 workers sharing {limit}/min, {seconds:.0f} s with a backlog: "
        f"{len(served)} calls served, at most {busiest} in any 60 s "
        f"({busiest / limit * 100:.1f}% of the limit), {throttled} x 429"
    )


def sign(raw: bytes) -> str:
    return hmac.new(SECRET.encode(), raw, hashlib.sha256).hexdigest()


async def latency(
    redis_server: EmbeddedRedis,
    workdir: Path,
    rate: float,
    seconds: float,
    show_worst: bool,
    direct: bool,
) -> None:
    with cluster(redis_server, workdir) as run:
        sandbox = run.sandbox("--no-rate-limit")
        redis = aioredis.Redis.from_url(redis_server.url)
        await redis.flushall()
        worker = run.worker("latency", sandbox, worker_rate_limit_per_minute=0)
        intake = run.intake()
        await asyncio.sleep(1.0)
        idle_before, idle_started = cpu_seconds(worker.process.pid), time.perf_counter()
        await asyncio.sleep(10.0)
        idle = (cpu_seconds(worker.process.pid) - idle_before) / (
            time.perf_counter() - idle_started
        )
        count = int(rate * seconds)
        bodies = [
            json.dumps(booking(n, "lat"), separators=(",", ":")).encode() for n in range(count)
        ]
        if direct:  # queue as the intake would, without it: the worker's share alone
            started = time.perf_counter()
            for n in range(count):
                delay = started + n / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                await enqueue(redis, [json.loads(bodies[n])])
            accepted = [hashlib.sha256(raw).hexdigest() for raw in bodies]
        else:
            # No pool timeout: on a loaded machine the posts queue for a connection.
            timeout = httpx.Timeout(10, pool=None)
            async with httpx.AsyncClient(base_url=intake.url, timeout=timeout) as http:
                started = time.perf_counter()
                pending = []
                for n, raw in enumerate(bodies):
                    delay = started + n / rate - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    headers = {
                        "Content-Type": "application/json",
                        "X-Cal-Signature-256": sign(raw),
                    }
                    post = http.post("/webhooks/cal", content=raw, headers=headers)
                    pending.append(asyncio.create_task(post))
                answers = await asyncio.gather(*pending)
            accepted = [
                hashlib.sha256(raw).hexdigest()
                for raw, a in zip(bodies, answers, strict=True)
                if a.status_code == 202
            ]
        while processed([worker]) < len(accepted):  # noqa: ASYNC110 - polls another process
            await asyncio.sleep(0.1)
        gaps: list[float] = []
        pickups: list[float] = []
        for event_id in accepted:
            log = [
                json.loads(x) for x in await redis.lrange(f"calhooks:eventlog:{event_id}", 0, -1)
            ]
            attempt = next(r for r in log if r["kind"] == "attempt")
            call = next(r for r in log if r["kind"] == "call")
            gaps.append(call["sent_at"] - attempt["received_at"])
            pickups.append(attempt["at"] - attempt["received_at"])
        await redis.aclose()
    if show_worst:
        worst = sorted(range(len(gaps)), key=lambda i: -gaps[i])[:15]
        print(
            "worst (index, ms to first call, ms to pickup):",
            [(i, round(gaps[i] * 1000, 1), round(pickups[i] * 1000, 1)) for i in sorted(worst)],
        )
    gaps.sort()
    p50, p99 = statistics.median(gaps), gaps[min(len(gaps) - 1, int(len(gaps) * 0.99))]
    print(
        f"latency {rate:.0f} events/s for {seconds:.0f} s ({len(accepted)} "
        f"{'queued' if direct else 'accepted'}): {'queued' if direct else 'accepted'} -> "
        f"first Cal.com call p50 {p50 * 1000:.2f} ms, p99 {p99 * 1000:.2f} ms, "
        f"max {gaps[-1] * 1000:.2f} ms; worker idle CPU {idle * 100:.2f}%"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2000, help="events per drain run")
    parser.add_argument("--ratelimit-seconds", type=float, default=65.0)
    parser.add_argument("--latency-seconds", type=float, default=5.0)
    parser.add_argument("--rate", type=float, default=200.0, help="events/s for latency")
    parser.add_argument("--worst", action="store_true", help="list the slowest events")
    parser.add_argument(
        "--direct", action="store_true", help="latency: queue events directly, not via the intake"
    )
    parser.add_argument(
        "--profile", type=Path, help="write py-spy's raw stacks of the drained worker here"
    )
    parser.add_argument(
        "--skip", nargs="*", default=[], choices=["overhead", "drain", "ratelimit", "latency"]
    )
    options = parser.parse_args()
    with EmbeddedRedis() as redis_server, tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        if "overhead" not in options.skip:
            await overhead(redis_server, options.events)
        if "drain" not in options.skip:
            await drain(redis_server, workdir, 10, options.events)
            await drain(redis_server, workdir, 100, options.events * 2, options.profile)
        if "ratelimit" not in options.skip:
            await rate_limit(redis_server, workdir, options.ratelimit_seconds)
        if "latency" not in options.skip:
            await latency(
                redis_server,
                workdir,
                options.rate,
                options.latency_seconds,
                options.worst,
                options.direct,
            )


if __name__ == "__main__":
    asyncio.run(main())
