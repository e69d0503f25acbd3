"""Real ``calhooks worker`` and ``calhooks serve`` processes for the end-to-end tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import redis.asyncio as aioredis

from calhooks.service.core.embedded_redis import free_port
from calhooks.service.events import event_id, job_bytes, normalise
from calhooks.service.sandbox import SANDBOX_API_KEY, SANDBOX_ORG_ID

ROOT = Path(__file__).resolve().parents[2]
STARTUP_SECONDS = 30.0


@dataclass
class Process:
    """A calhooks command running in its own process, its output in a file."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def get(self, path: str) -> httpx.Response:
        return httpx.get(self.url + path, timeout=5)

    def wait_ready(self, path: str = "/readyz", timeout: float = STARTUP_SECONDS) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited:\n{self.output()}")
            try:
                if self.get(path).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} never became ready:\n{self.output()}")
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: no cleanup, as when a node dies or the OOM killer strikes."""
        self.process.kill()
        self.process.wait(timeout=10)

    def terminate(self, timeout: float = 60.0) -> int:
        """SIGTERM, then wait: a worker may take CALHOOKS_WORKER_JOB_COMPLETION_WAIT (25 s)
        for a running event, then its shutdown, before it exits."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)


def stop_all(processes: list[Process], timeout: float = 60.0) -> None:
    """SIGTERM every one still running (last started first), then wait for each; one that
    outlives ``timeout`` is killed. For the benches, which must not fail on the way out."""
    for process in reversed(processes):
        if process.process.poll() is None:
            process.process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
    processes.clear()


def environment(
    redis_url: str, sandbox_url: str, rules_file: Path, **settings: str | float | int
) -> dict[str, str]:
    """The environment of a test worker or intake: the suite's Redis and sandbox, fast timings."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("CALHOOKS_") and key != "PYTHONPATH"
    }
    env.update(
        {
            "CALHOOKS_REDIS_URL": redis_url,
            "CALHOOKS_API_URL": sandbox_url,
            "CALHOOKS_API_KEY": SANDBOX_API_KEY,
            "CALHOOKS_ORG_ID": str(SANDBOX_ORG_ID),
            "CALHOOKS_RULES_FILE": str(rules_file),
            "CALHOOKS_LOG_FORMAT": "json",
            "CALHOOKS_WORKER_POLL_DELAY": "0.05",
            "CALHOOKS_WORKER_RETRY_BASE_DELAY": "0.2",
            "CALHOOKS_WORKER_RETRY_MAX_DELAY": "1",
            "CALHOOKS_WORKER_HEALTH_INTERVAL": "1",
            "CALHOOKS_RECONCILE_PERIOD": "0",  # opt in: its list calls would skew request counts
        }
    )
    env.update({f"CALHOOKS_{key.upper()}": str(value) for key, value in settings.items()})
    return env


def start(name: str, args: list[str], env: dict[str, str], tmp_path: Path, port: int) -> Process:
    log = tmp_path / f"{name}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "calhooks.service", *args],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return Process(name, process, log, port)


def start_worker(name: str, env: dict[str, str], tmp_path: Path) -> Process:
    port = free_port()
    worker_env = {**env, "CALHOOKS_WORKER_HTTP_PORT": str(port), "CALHOOKS_WORKER_NAME": name}
    worker = start(name, ["worker"], worker_env, tmp_path, port)
    worker.wait_ready()
    return worker


def start_intake(env: dict[str, str], tmp_path: Path) -> Process:
    port = free_port()
    intake_env = {**env, "CALHOOKS_SPOOL_DIR": str(tmp_path / "spool")}
    intake = start("intake", ["serve", "--port", str(port)], intake_env, tmp_path, port)
    intake.wait_ready()
    return intake


async def queue_event(
    redis: aioredis.Redis,
    body: dict[str, Any],
    *,
    received_at: float | None = None,
    connection: str | None = None,
) -> str:
    """Queue a delivery body as the intake does (its job record, score and wake token), as
    one of ``connection``'s (a PCID) when given."""
    raw = json.dumps(body, separators=(",", ":")).encode()
    event = normalise(
        body,
        id=event_id(raw, connection),
        received_at=received_at or time.time(),
        connection=connection,
    )
    now_ms = int(time.time() * 1000)
    async with redis.pipeline(transaction=True) as pipe:
        pipe.psetex(f"arq:job:{event.id}", 3_600_000, job_bytes(event, now_ms))
        pipe.zadd("arq:queue", {event.id: now_ms})
        pipe.lpush("arq:queue:wake", 1)
        pipe.ltrim("arq:queue:wake", 0, 63)
        await pipe.execute()
    return event.id
