"""How many requests a second the sandbox Cal.com serves, bare and with 50 ms of latency.

Starts ``calhooks sandbox`` in its own process (throttling off), then keeps
``--concurrency`` requests in flight for ``--seconds`` from an httpx client: a read (list
users) and a validated write (create then delete a webhook). Prints requests/s and latency
percentiles; with injected latency, the overhead column is the median minus that latency.
A Python client saturates long before the sandbox does, so when ``wrk`` is installed the
read is also measured with it at 50 connections (the sandbox's own capacity).

    .venv/bin/python bench/sandbox_throughput.py [--seconds 3] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from calhooks.service.core.embedded_redis import free_port  # noqa: E402
from calhooks.service.sandbox import SANDBOX_API_KEY  # noqa: E402

Operation = Callable[[httpx.AsyncClient], Awaitable[int]]


@contextmanager
def sandbox(latency: float) -> Iterator[str]:
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "calhooks.service",
        "sandbox",
        "--port",
        str(port),
        "--no-rate-limit",
    ]
    process = subprocess.Popen(
        [*command, "--latency", str(latency), "--log-level", "warning"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        while True:
            try:
                httpx.get(f"{url}/_sandbox/state").raise_for_status()
                break
            except httpx.TransportError:
                if process.poll() is not None:
                    raise RuntimeError("the sandbox exited") from None
                time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


async def read(http: httpx.AsyncClient) -> int:
    response = await http.get("/v2/organizations/1/users", params={"take": "10"})
    response.raise_for_status()
    return 1


async def write(http: httpx.AsyncClient) -> int:
    created = await http.post(
        "/v2/organizations/1/webhooks",
        json={
            "active": True,
            "subscriberUrl": f"https://hooks.example/{time.perf_counter_ns()}",
            "triggers": ["BOOKING_CREATED"],
        },
    )
    created.raise_for_status()
    deleted = await http.delete(f"/v2/organizations/1/webhooks/{created.json()['data']['id']}")
    deleted.raise_for_status()
    return 2


async def drive(
    operation: Operation, url: str, seconds: float, workers: int
) -> tuple[int, list[float]]:
    timings: list[float] = []
    requests = 0
    deadline = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=workers, max_keepalive_connections=workers)
    headers = {"Authorization": f"Bearer {SANDBOX_API_KEY}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits) as http:

        async def worker() -> None:
            nonlocal requests
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                sent = await operation(http)
                timings.append(time.perf_counter() - started)
                requests += sent

        await asyncio.gather(*(worker() for _ in range(workers)))
    return requests, timings


def measure_with_wrk(url: str, seconds: float) -> float | None:
    """Requests/s ``wrk`` gets from the read at 50 connections, or ``None`` without wrk."""
    wrk = shutil.which("wrk")
    if wrk is None:
        return None
    done = subprocess.run(
        [
            wrk,
            "-t2",
            "-c50",
            f"-d{max(1, round(seconds))}s",
            "-H",
            f"Authorization: Bearer {SANDBOX_API_KEY}",
            f"{url}/v2/organizations/1/users?take=10",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    found = re.search(r"Requests/sec:\s+([\d.]+)", done.stdout)
    return float(found.group(1)) if found else None


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    print(f"{'operation':<26} {'req/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'overhead ms':>12}")
    for latency in (0.0, 0.05):
        with sandbox(latency) as url:
            for name, operation in (("read", read), ("create+delete", write)):
                count, timings = asyncio.run(drive(operation, url, args.seconds, args.concurrency))
                ordered = sorted(timings)
                p50 = statistics.median(ordered) * 1000
                p95 = ordered[max(0, int(len(ordered) * 0.95) - 1)] * 1000
                overhead = p50 - latency * 1000 * (2 if operation is write else 1)
                label = f"{name} (+{latency * 1000:.0f} ms)"
                rate = count / args.seconds
                print(f"{label:<26} {rate:8.0f} {p50:8.1f} {p95:8.1f} {overhead:12.1f}")
            wrk_rate = measure_with_wrk(url, args.seconds)
            if wrk_rate is not None:
                label = f"read, wrk -c50 (+{latency * 1000:.0f} ms)"
                ideal = f"  ({wrk_rate * latency / 50:.0%} of 50 / latency)" if latency else ""
                print(f"{label:<26} {wrk_rate:8.0f}{ideal}")


if __name__ == "__main__":
    main()
