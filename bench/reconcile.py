"""Reconciliation of a large organization: calls per pass and passes to a full snapshot.

The sandbox (served on loopback, without Cal.com's rate limit so seeding is quick) gets
``--members`` new users (each one a membership) and as many OOO entries; then reconciler
passes run with the workers' budget (``--per-minute`` x share x ``--period`` / 60 list calls
per pass, for each of ``--shares`` in turn) against a real redis-server until every kind
has its baseline, and once more. Printed: calls per pass, passes and wall time to the first full
snapshot, and the steady-state pass (calls, seconds) - the figures docs/reconciliation.md
quotes.

    .venv/bin/python bench/reconcile.py [--members 5000] [--per-minute 120] [--shares 0.1,0.02]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

import httpx
import redis.asyncio as aioredis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from calhooks.service.calcom.client import CalcomClient, Credentials  # noqa: E402
from calhooks.service.core.embedded_redis import EmbeddedRedis  # noqa: E402
from calhooks.service.sandbox import SANDBOX_API_KEY, SANDBOX_ORG_ID, create_app  # noqa: E402
from calhooks.workers.reconcile.periodic import budget  # noqa: E402
from calhooks.workers.reconcile.reconciler import Reconciler  # noqa: E402
from tests.servers import serve_app  # noqa: E402


async def seed(url: str, members: int) -> None:
    headers = {"Authorization": f"Bearer {SANDBOX_API_KEY}"}
    base = f"{url}/v2/organizations/{SANDBOX_ORG_ID}"
    async with httpx.AsyncClient(headers=headers, timeout=60) as http:
        gate = asyncio.Semaphore(16)

        async def one(n: int) -> None:
            async with gate:
                made = await http.post(f"{base}/users", json={"email": f"m{n}@acme.example"})
                made.raise_for_status()
                user = made.json()["data"]["id"]
                ooo = await http.post(
                    f"{base}/users/{user}/ooo",
                    json={"start": "2031-01-05T00:00:00.000Z", "end": "2031-01-06T23:59:59.999Z"},
                )
                ooo.raise_for_status()

        await asyncio.gather(*(one(n) for n in range(members)))


async def measure(url: str, redis_url: str, calls: int | None) -> None:
    redis = aioredis.Redis.from_url(redis_url)
    await redis.flushall()
    client = CalcomClient(
        base_url=url, credentials=Credentials(api_key=SANDBOX_API_KEY), org_id=SANDBOX_ORG_ID
    )
    reconciler = Reconciler(
        redis,
        client,
        org_id=SANDBOX_ORG_ID,
        queue_name="arq:queue",
        dedupe_window=3600,
        budget=calls,
    )
    passes, spent, started = 0, [], time.perf_counter()
    baselined: set[str] = set()
    wanted = {kind.name for kind in reconciler.kinds}
    while not wanted <= baselined:
        report = await reconciler.run()
        passes += 1
        spent.append(report.calls)
        baselined.update(report.baselined)
    first = time.perf_counter() - started
    print(f"budget per pass          {calls if calls is not None else 'none'} calls")
    print(f"passes to a full snapshot {passes} (calls per pass: {spent})")
    print(f"calls to a full snapshot  {sum(spent)}")
    print(f"wall time (sandbox)       {first:.2f} s")
    started = time.perf_counter()
    steady = await reconciler.run()
    print(
        f"next pass                 {steady.calls} calls, {len(steady.events)} events,"
        f" {time.perf_counter() - started:.2f} s, complete: {', '.join(steady.complete)}"
    )
    memory = await redis.info("memory")
    print(f"Redis memory              {memory['used_memory_human']}")
    await client.aclose()
    await redis.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=5000)
    parser.add_argument("--per-minute", type=int, default=120)
    parser.add_argument(
        "--shares", default="0.1,0.02", help="Shares of the rate limit to measure, in turn."
    )
    parser.add_argument("--period", type=float, default=300.0)
    args = parser.parse_args()
    with EmbeddedRedis() as redis_server, serve_app(create_app(rate_limit=None)) as url:
        started = time.perf_counter()
        asyncio.run(seed(url, args.members))
        print(
            f"seeded {args.members} members + OOO entries in {time.perf_counter() - started:.1f} s"
        )
        for share in (float(part) for part in args.shares.split(",")):
            print(f"-- share {share:.0%} of {args.per_minute}/min, period {args.period:.0f} s")
            calls = budget(args.per_minute, share, args.period)
            asyncio.run(measure(url, redis_server.url, calls))


if __name__ == "__main__":
    main()
