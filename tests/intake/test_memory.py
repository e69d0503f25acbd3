"""Bounded memory: the read budget, the body deadline, and defaults from the memory limit."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from calhooks.service.core import resources
from calhooks.service.core.settings import Settings
from calhooks.service.intake.readbudget import ReadBudget
from tests.intake.conftest import PATH, booking, signature

MiB = 1024 * 1024
BOGUS = "0" * 64  # a well-formed signature that matches nothing: the body must be read


def test_the_budget_keeps_a_quarter_for_small_bodies() -> None:
    """Large bodies may hold three quarters of the budget; small ones all of it."""
    budget = ReadBudget(1000)
    assert budget.take(700, small=False)
    assert not budget.take(60, small=False)
    assert budget.take(250, small=True)
    assert not budget.take(51, small=True)
    budget.give(700)
    assert budget.take(500, small=False)
    assert budget.used == 750


def test_memory_limit_comes_from_the_cgroup(tmp_path: Path) -> None:
    """cgroup v2 `max` and v1's huge number mean no limit; a number is the limit."""
    v2, v1 = tmp_path / "memory.max", tmp_path / "memory.limit_in_bytes"
    assert resources.memory_limit((v2, v1)) is None  # neither file
    v1.write_text("9223372036854771712\n")
    assert resources.memory_limit((v2, v1)) is None
    v1.write_text("268435456\n")
    assert resources.memory_limit((v2, v1)) == 256 * MiB
    v2.write_text("max\n")
    assert resources.memory_limit((v2, v1)) is None
    v2.write_text("536870912\n")
    assert resources.memory_limit((v2, v1)) == 512 * MiB


def test_the_read_budget_defaults_to_an_eighth_of_the_memory() -> None:
    """512 MiB (the web pod's limit) gives 64 MiB; never less than four largest bodies."""
    assert Settings(_env_file=None, memory_limit=512 * MiB).effective_read_budget() == 64 * MiB
    small = Settings(_env_file=None, memory_limit=16 * MiB, max_body_bytes=1 * MiB)
    assert small.effective_read_budget() == 4 * MiB
    explicit = Settings(_env_file=None, memory_limit=512 * MiB, read_budget_bytes=3 * MiB)
    assert explicit.effective_read_budget() == 3 * MiB
    assert Settings(_env_file=None).effective_memory_limit() == (
        resources.memory_limit() or resources.DEFAULT_MEMORY
    )


def raw_post_head(url: str, length: int, signature_value: str = BOGUS) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=30)
    sock.sendall(
        f"POST {PATH} HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n"
        f"X-Cal-Signature-256: {signature_value}\r\nContent-Type: application/json\r\n\r\n".encode()
    )
    return sock


def test_a_body_slower_than_the_deadline_gets_408(serve: Any) -> None:
    """Headers, then part of the body, then nothing: 408 once the deadline passes."""
    served = serve(body_read_timeout=0.5)
    with raw_post_head(served.url, 1000) as sock:
        sock.sendall(b'{"triggerEvent":')
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert b'"error": "timeout"' in answer
    assert served.metric('calhooks_intake_deliveries_total{outcome="too_slow"}') >= 1


def test_past_the_budget_large_bodies_get_503_and_small_ones_still_pass(serve: Any) -> None:
    """Bodies held open fill the large share of the budget: the next large one gets 503 with
    Retry-After, while a signed delivery (small) is still accepted."""
    served = serve(read_budget_bytes=256 * 1024)
    held = []
    try:
        for _ in range(3):  # 3 x 60 KiB held, out of a 192 KiB large share
            sock = raw_post_head(served.url, 100_000)
            sock.sendall(b"x" * 60 * 1024)
            held.append(sock)
        deadline = time.monotonic() + 20
        while served.intake.endpoint.budget.used < 3 * 60 * 1024:
            assert time.monotonic() < deadline, "the held bodies were never read"
            time.sleep(0.02)
        with raw_post_head(served.url, 100_000) as sock:
            sock.sendall(b"x" * 60 * 1024)
            answer = sock.recv(65536)
        assert answer.startswith(b"HTTP/1.1 503"), answer
        assert b"retry-after: 2" in answer
        assert served.post(booking("small-and-signed")).status_code == 202
    finally:
        for sock in held:
            sock.close()


def peak_rss(pid: int) -> int:
    """The process' high-water resident set (VmHWM), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


async def slow_unsigned_body(url: str, rounds: int, outcomes: list[int]) -> None:
    """Send 1 MiB bodies with a signature that matches nothing, 64 KiB at a time, slowly;
    start again when refused, ``rounds`` times."""
    host, port = url.removeprefix("http://").split(":")
    chunk = b"x" * 64 * 1024
    for _ in range(rounds):
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(
            f"POST {PATH} HTTP/1.1\r\nHost: x\r\nContent-Length: {MiB}\r\n"
            f"X-Cal-Signature-256: {BOGUS}\r\n\r\n".encode()
        )
        try:
            for _ in range(MiB // len(chunk)):
                writer.write(chunk)
                await writer.drain()
                await asyncio.sleep(0.2)  # 1 MiB in ~3 s: slow, not a firehose
            status = await asyncio.wait_for(reader.readline(), 60)
        except OSError:  # answered and closed mid-body; the answer may be lost to the reset
            status = b""
        outcomes.append(int(status.split()[1]) if status.startswith(b"HTTP/1.1") else 0)
        writer.close()


@pytest.mark.slow
def test_a_flood_of_slow_unsigned_bodies_keeps_memory_bounded(serve_process: Any) -> None:
    """120 slow 1 MiB bodies at once (~120 MiB if buffered) against a 192 MiB process: peak
    RSS stays under the limit, some get 503, and every signed delivery meanwhile gets 202."""
    limit = 192 * MiB
    url, process = serve_process(CALHOOKS_MEMORY_LIMIT=str(limit))
    flood_outcomes: list[int] = []
    delivered: list[int] = []

    async def run() -> None:
        flood = [
            asyncio.create_task(slow_unsigned_body(url, 2, flood_outcomes)) for _ in range(120)
        ]
        async with httpx.AsyncClient(timeout=30) as http:
            while not all(task.done() for task in flood) and len(delivered) < 40:
                body = booking(f"during-flood-{len(delivered)}")
                answer = await http.post(
                    url + PATH, content=body, headers={"x-cal-signature-256": signature(body)}
                )
                delivered.append(answer.status_code)
                await asyncio.sleep(0.05)
        await asyncio.gather(*flood)

    asyncio.run(run())
    peak = peak_rss(process.pid)
    assert peak < limit, f"peak RSS {peak / MiB:.0f} MiB over the {limit / MiB:.0f} MiB limit"
    # 0: reset after the answer; 408: a sender slower than the deadline on a loaded machine
    assert set(flood_outcomes) <= {0, 401, 408, 503}, flood_outcomes
    metrics = httpx.get(url + "/metrics").text
    overloaded = 'calhooks_intake_deliveries_total{outcome="overloaded"}'
    assert float(metrics.split(overloaded)[1].split()[0]) > 0  # the budget was reached
    assert delivered
    assert set(delivered) == {202}, delivered
    print(f"peak RSS {peak / MiB:.0f} MiB; flood answers {sorted(set(flood_outcomes))}")
