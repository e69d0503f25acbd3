"""Cal.com calls per effect: a burst of time-off bookings under Cal.com's rate limit, with
and without the workers' read cache (``cache: 10m`` on the organizer lookup).

Real processes on loopback: ``calhooks sandbox`` throttling like Cal.com (120 requests per
window per API key, then a block), two ``calhooks worker`` sharing the limit
(``CALHOOKS_WORKER_RATE_LIMIT_PER_MINUTE`` = 120) and the example rules
(``examples/rules.yaml``; its time-off rule looks the organizer up, then creates the
out-of-office entry). 500 time-off bookings from 50 organizers are queued at once and the
run lasts until every one has its entry.

**Time scale.** At 120 per minute the uncached run alone would take over eight minutes, so
the sandbox's window and the workers' are shortened by ``--scale`` (10 by default: 120
requests per 6 s; the workers' limit is per minute, so it is set to 120 x scale). Rates are
reported per *Cal.com minute* (real seconds x scale / 60), what they would be against
Cal.com; the ratios do not depend on the scale.

Three runs, one after the other on the same sandbox: ``no cache`` (the organizer step without
``cache:``), ``cache, cold`` (with it, cache empty), ``cache, warm`` (another 500 bookings by
the same organizers, cache as the cold run left it).

    .venv/bin/python bench/calls.py [--bookings 500] [--organizers 50] [--scale 10]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import redis.asyncio as aioredis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from calhooks.service.core.embedded_redis import EmbeddedRedis  # noqa: E402
from calhooks.service.sandbox import SANDBOX_API_KEY, SANDBOX_ORG_ID  # noqa: E402

_spec = importlib.util.spec_from_file_location("bench_workers", ROOT / "bench" / "workers.py")
if _spec is None or _spec.loader is None:
    raise ImportError("bench/workers.py not found")
harness = importlib.util.module_from_spec(_spec)
sys.modules["bench_workers"] = harness
_spec.loader.exec_module(harness)

LIMIT = 120
CREATE_OOO = "cal_organizations_users_ooocontroller_create_organization_user_ooo"
CACHE_LINE = "        cache: 10m\n"


def rules_file(workdir: Path, cached: bool) -> Path:
    text = (ROOT / "examples" / "rules.yaml").read_text()
    if not cached:
        text = text.replace(CACHE_LINE, "")
    path = workdir / ("rules-cached.yaml" if cached else "rules-plain.yaml")
    path.write_text(text)
    return path


def organizer(n: int) -> str:
    return f"organizer-{n:03d}@acme.example"


def time_off(n: int, organizers: int, tag: str) -> dict[str, Any]:
    """Booking ``n``: organizer ``n % organizers``, a day of its own (entries never overlap)."""
    start = datetime(2031, 1, 1, tzinfo=UTC) + timedelta(days=n)
    return {
        "triggerEvent": "BOOKING_CREATED",
        "createdAt": "2030-12-01T08:00:00.000Z",
        "payload": {
            "type": "time-off",
            "title": f"Time off {n}",
            "uid": f"calls-{tag}-{n}",
            "startTime": start.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "endTime": (start + timedelta(hours=8)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "organizer": {"email": organizer(n % organizers), "name": f"Organizer {n}"},
            "attendees": [{"email": f"guest-{n}@client.example", "name": f"Guest {n}"}],
        },
    }


async def seed_organizers(sandbox_url: str, organizers: int) -> None:
    async with httpx.AsyncClient(
        base_url=sandbox_url, headers={"Authorization": f"Bearer {SANDBOX_API_KEY}"}, timeout=30
    ) as http:
        for n in range(organizers):
            answer = await http.post(
                f"/v2/organizations/{SANDBOX_ORG_ID}/users",
                json={
                    "email": organizer(n),
                    "name": f"Organizer {n}",
                    "organizationRole": "MEMBER",
                },
            )
            answer.raise_for_status()


async def api_records(sandbox_url: str) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(base_url=sandbox_url + "/_sandbox", timeout=30) as admin:
        records: list[dict[str, Any]] = (await admin.get("/requests")).json()["requests"]
    return [r for r in records if r.get("tool")]


async def one_run(
    label: str,
    redis: aioredis.Redis,
    workers: list[Any],
    sandbox_url: str,
    bookings: list[dict[str, Any]],
    scale: float,
) -> tuple[float, float]:
    async with httpx.AsyncClient(base_url=sandbox_url + "/_sandbox", timeout=30) as admin:
        (await admin.delete("/requests")).raise_for_status()
    done_before = harness.processed(workers)
    started = time.perf_counter()
    await harness.enqueue(redis, bookings)
    while harness.processed(workers) - done_before < len(bookings):  # noqa: ASYNC110
        await asyncio.sleep(0.2)
    elapsed = time.perf_counter() - started
    records = await api_records(sandbox_url)
    served = [r for r in records if r["status"] is not None and r["status"] < 400]
    effects = sum(1 for r in served if r["tool"] == CREATE_OOO)
    throttled = sum(1 for r in records if r["status"] == 429)
    calcom_minutes = elapsed * scale / 60
    per_minute = effects / calcom_minutes
    per_effect = len(served) / max(effects, 1)
    print(
        f"{label:<12} {effects:4d} effects in {elapsed:6.1f} s ({calcom_minutes:5.2f} Cal.com min):"
        f" {per_minute:6.1f} effects/min, {len(served):4d} calls = {per_effect:.2f} calls/effect,"
        f" {throttled} x 429"
    )
    return per_minute, per_effect


async def measure(
    redis_server: EmbeddedRedis, workdir: Path, cached: bool, options: argparse.Namespace
) -> list[tuple[float, float]]:
    window = 60.0 / options.scale
    results = []
    with harness.cluster(redis_server, workdir) as run:
        sandbox = run.sandbox("--no-rate-limit")
        await seed_organizers(sandbox.url, options.organizers)
        async with httpx.AsyncClient(base_url=sandbox.url + "/_sandbox", timeout=30) as admin:
            (
                await admin.put("/rate-limit", json={"limit": LIMIT, "window": window})
            ).raise_for_status()
        redis = aioredis.Redis.from_url(redis_server.url)
        await redis.flushall()
        rules = rules_file(workdir, cached)
        workers = [
            run.worker(
                f"calls-{'cache' if cached else 'plain'}-{i}",
                sandbox,
                rules_file=rules,
                # 120 per (scaled) window: the workers count their limit per minute.
                worker_rate_limit_per_minute=int(LIMIT * options.scale),
                worker_rate_limit_window=window,
            )
            for i in range(options.workers)
        ]
        runs = [("no cache", "plain")] if not cached else [("cache, cold", "cold")]
        if cached:
            runs.append(("cache, warm", "warm"))
        for offset, (label, tag) in enumerate(runs):
            first = offset * options.bookings
            bookings = [
                time_off(n, options.organizers, tag) for n in range(first, first + options.bookings)
            ]
            results.append(
                await one_run(label, redis, workers, sandbox.url, bookings, options.scale)
            )
        await redis.aclose()
    return results


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bookings", type=int, default=500)
    parser.add_argument("--organizers", type=int, default=50)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--scale", type=float, default=10.0, help="Cal.com minutes per 60/scale s")
    options = parser.parse_args()
    print(
        f"{options.bookings} time-off bookings from {options.organizers} organizers,"
        f" {options.workers} workers, {LIMIT} requests per {60 / options.scale:g} s"
        f" (time scale x{options.scale:g}: rates below are per Cal.com minute)"
    )
    with EmbeddedRedis() as redis_server, tempfile.TemporaryDirectory() as tmp:
        [(plain_rate, plain_calls)] = await measure(redis_server, Path(tmp), False, options)
        (cold_rate, cold_calls), (warm_rate, warm_calls) = await measure(
            redis_server, Path(tmp), True, options
        )
    print(
        f"cache vs none: {cold_rate / plain_rate:.2f}x effects/min cold,"
        f" {warm_rate / plain_rate:.2f}x warm (target >= 1.8x);"
        f" calls/effect {plain_calls:.2f} -> {cold_calls:.2f} cold, {warm_calls:.2f} warm"
        f" (target <= 1.1 once warm)"
    )


if __name__ == "__main__":
    asyncio.run(main())
