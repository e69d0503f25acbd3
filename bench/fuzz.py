"""Fuzzed requests at a real ``calhooks serve``: the intake and ``/cal-organizations`` (MCP).

Starts Redis, the sandbox (Cal.com, for the MCP tools) and one intake on loopback, then
sends ``--requests`` requests, half at ``/webhooks/cal`` and half at ``/cal-organizations``,
``--concurrency`` at a time, built from a seeded generator: random bytes, random JSON,
nesting up to 1100 deep, bodies up to 1.2 MiB, bodies signed right (reaching the queue) or
wrongly, strange content types and methods, JSON-RPC with random methods, tools and
arguments, batches, bad and good bearer tokens.

Prints: answers by status, every 5xx (and every request left without an answer for
``ANSWER_DEADLINE`` s) with the kind of request that got it, and the intake's RSS at the
start, every 2000 requests, and the end. Loopback only; bounded by ``--requests``.

    .venv/bin/python bench/fuzz.py [--requests 10000] [--concurrency 16] [--seed 1]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from calhooks.service.core.embedded_redis import EmbeddedRedis, free_port  # noqa: E402
from calhooks.service.sandbox import SANDBOX_API_KEY, SANDBOX_ORG_ID  # noqa: E402

SECRET = "whsec_fuzz_secret"  # noqa: S105 - the run's own key
TOKEN = "fuzz-mcp-token-0123456789abcdef"  # noqa: S105 - the run's own key
#: Seconds one request may wait for its answer; past it, it counts as "no answer".
ANSWER_DEADLINE = 10.0
TRIGGERS = ["BOOKING_CREATED", "BOOKING_CANCELLED", "MEETING_ENDED", "FORM_SUBMITTED", "PING"]


def sign(raw: bytes) -> str:
    return hmac.new(SECRET.encode(), raw, hashlib.sha256).hexdigest()


def random_json(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(8 if depth < 6 else 5)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([True, False])
    if kind == 2:
        return rng.choice([0, -1, 2**63, 2**70, 1e308, -1e-308, rng.random()])
    if kind == 3:
        return "".join(chr(rng.randrange(0x20, 0x2FFF)) for _ in range(rng.randrange(40)))
    if kind == 4:
        return rng.choice(["", "\u0000", "\ud7ff", "é" * 50, "${{ payload }}", "<script>"])
    if kind in (5, 6):
        return {
            rng.choice(["uid", "payload", "triggerEvent", "a", "é", ""]): random_json(
                rng, depth + 1
            )
            for _ in range(rng.randrange(5))
        }
    return [random_json(rng, depth + 1) for _ in range(rng.randrange(5))]


def nested(depth: int) -> bytes:
    return b'{"triggerEvent":"BOOKING_CREATED","payload":' + b"[" * depth + b"]" * depth + b"}"


def intake_request(rng: random.Random) -> tuple[str, str, dict[str, str], bytes]:
    """(kind, method, headers, body) for ``/webhooks/cal``."""
    kind = rng.choice(
        ["bytes", "json", "signed-json", "signed-delivery", "nested", "signed-nested", "big",
         "bad-signature", "method", "content-type"]
    )  # fmt: skip
    headers = {"Content-Type": "application/json"}
    method = "POST"
    if kind == "bytes":
        body = rng.randbytes(rng.randrange(2000))
    elif kind in ("json", "signed-json", "bad-signature"):
        body = json.dumps(random_json(rng)).encode()
    elif kind == "signed-delivery":
        delivery = {
            "triggerEvent": rng.choice([*TRIGGERS, "X" * rng.randrange(1, 200)]),
            "createdAt": rng.choice(["2031-01-01T00:00:00Z", 5, None]),
            "payload": random_json(rng) if rng.random() < 0.3 else {"uid": str(rng.random())},
        }
        body = json.dumps(delivery).encode()
    elif kind in ("nested", "signed-nested"):
        body = nested(rng.choice([100, 500, 1000, 1020, 1100]))
    elif kind == "big":
        body = (
            b'{"triggerEvent":"PING","payload":{"x":"'
            + b"a" * rng.choice([1_000_000, 1_048_000, 1_200_000])
            + b'"}}'
        )
    elif kind == "method":
        method = rng.choice(["GET", "PUT", "DELETE", "PATCH", "OPTIONS"])
        body = b"{}"
    else:
        headers["Content-Type"] = rng.choice(
            ["text/plain", "application/x-www-form-urlencoded", ""]
        )
        body = b"triggerEvent=PING"
    if kind.startswith("signed"):
        headers["X-Cal-Signature-256"] = sign(body)
    elif kind == "bad-signature":
        headers["X-Cal-Signature-256"] = rng.choice(["", "00", "zz" * 32, sign(body)[::-1]])
    return kind, method, headers, body


def mcp_request(rng: random.Random) -> tuple[str, str, dict[str, str], bytes]:
    """(kind, method, headers, body) for ``/cal-organizations``."""
    kind = rng.choice(
        ["no-token", "bad-token", "garbage", "rpc", "tools-list", "tools-call", "batch",
         "initialize", "method"]
    )  # fmt: skip
    headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
    if kind != "no-token":
        headers["Authorization"] = f"Bearer {'nope' if kind == 'bad-token' else TOKEN}"
    method = "POST"
    message: Any
    if kind == "garbage":
        body = rng.randbytes(rng.randrange(500))
        return kind, method, headers, body
    if kind == "tools-call":
        name = rng.choice(
            ["cal_organizations_users_controller_get_organizations_users", "nope", "", "x" * 300]
        )
        message = {
            "jsonrpc": "2.0",
            "id": rng.randrange(1000),
            "method": "tools/call",
            "params": {"name": name, "arguments": random_json(rng)},
        }
    elif kind == "tools-list":
        message = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": random_json(rng)}
    elif kind == "initialize":
        message = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {"protocolVersion": random_json(rng), "capabilities": random_json(rng)},
        }
    elif kind == "batch":
        message = [{"jsonrpc": "2.0", "id": n, "method": "tools/list"} for n in range(3)]
    elif kind == "method":
        method = rng.choice(["GET", "DELETE", "PUT"])
        message = {}
    else:
        message = {
            "jsonrpc": rng.choice(["2.0", "1.0", None]),
            "id": random_json(rng),
            "method": rng.choice(["ping", "tools/list", "resources/list", "x", 5]),
            "params": random_json(rng),
        }
    return kind, method, headers, json.dumps(message).encode()


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "service", *args], cwd=ROOT, env=env, stdout=out, stderr=out
        )


def wait_ready(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url} exited")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} never became ready")


async def fuzz(base: str, pid: int, requests: int, concurrency: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    statuses: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    rss = [("start", rss_kib(pid))]
    queue: asyncio.Queue[tuple[str, str, str, dict[str, str], bytes] | None] = asyncio.Queue(
        maxsize=concurrency * 2
    )

    async def sender(http: httpx.AsyncClient) -> None:
        while (item := await queue.get()) is not None:
            target, kind, method, headers, body = item
            try:
                async with asyncio.timeout(ANSWER_DEADLINE):
                    answer = await http.request(method, target, headers=headers, content=body)
                statuses[f"{target} {answer.status_code}"] += 1
                if answer.status_code >= 500:
                    errors[f"{target} {kind} -> {answer.status_code}"] += 1
            except Exception as error:  # a sender must survive whatever one request does
                errors[f"{target} {kind} -> {type(error).__name__}"] += 1

    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        senders = [asyncio.create_task(sender(http)) for _ in range(concurrency)]
        for n in range(requests):
            if n % 2:
                kind, method, headers, body = mcp_request(rng)
                await queue.put(("/cal-organizations", kind, method, headers, body))
            else:
                kind, method, headers, body = intake_request(rng)
                await queue.put(("/webhooks/cal", kind, method, headers, body))
            if n and n % 2000 == 0:
                rss.append((str(n), rss_kib(pid)))
        for _ in senders:
            await queue.put(None)
        await asyncio.gather(*senders)
    rss.append(("end", rss_kib(pid)))
    fives = sum(n for key, n in statuses.items() if key.split()[-1].startswith("5"))
    return {
        "requests": requests,
        "statuses": dict(sorted(statuses.items())),
        "5xx": fives,
        "errors": dict(errors),
        "rss_kib": rss,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="calhooks-fuzz-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALHOOKS_")}
    with EmbeddedRedis(directory=workdir / "redis") as redis:
        sandbox_port, intake_port = free_port(), free_port()
        sandbox = start(
            ["sandbox", "--port", str(sandbox_port), "--no-rate-limit", "--log-level", "warning"],
            env,
            workdir / "sandbox.log",
        )
        env.update(
            {
                "CALHOOKS_REDIS_URL": redis.url,
                "CALHOOKS_API_URL": f"http://127.0.0.1:{sandbox_port}",
                "CALHOOKS_API_KEY": SANDBOX_API_KEY,
                "CALHOOKS_ORG_ID": str(SANDBOX_ORG_ID),
                "CALHOOKS_WEBHOOK_SECRETS": SECRET,
                "CALHOOKS_MCP_TOKEN": TOKEN,
                "CALHOOKS_LOG_LEVEL": "warning",
                "CALHOOKS_SPOOL_DIR": str(workdir / "spool"),
                "CALHOOKS_DATA_DIR": str(workdir / "data"),
            }
        )
        intake = start(["serve", "--port", str(intake_port)], env, workdir / "intake.log")
        try:
            wait_ready(f"http://127.0.0.1:{sandbox_port}/_sandbox/state", sandbox)
            wait_ready(f"http://127.0.0.1:{intake_port}/livez", intake)
            base = f"http://127.0.0.1:{intake_port}"
            report = asyncio.run(fuzz(base, intake.pid, args.requests, args.concurrency, args.seed))
            report["intake_alive"] = intake.poll() is None
            report["workdir"] = str(workdir)
        finally:
            for process in (intake, sandbox):
                process.terminate()
                process.wait(timeout=30)
    print(json.dumps(report, indent=2))
    return 0 if report["5xx"] == 0 and report["intake_alive"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
