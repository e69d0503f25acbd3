"""Fixtures of the intake's tests: settings, signed deliveries, the app served by uvicorn."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from calhooks.service.core.embedded_redis import EmbeddedRedis, free_port
from calhooks.service.core.settings import Settings
from tests.servers import serve_app

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "webhooks"
SECRET = "whsec-current-secret"
OLD_SECRET = "whsec-previous-secret"
PATH = "/webhooks/cal"


def signature(body: bytes, secret: str = SECRET) -> str:
    """X-Cal-Signature-256 as Cal.com computes it, independently of the code under test."""
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def compact(document: Any) -> bytes:
    """A body as Cal.com sends it: ``JSON.stringify`` output, no whitespace."""
    return json.dumps(document, separators=(",", ":")).encode()


def fixture_body(trigger: str) -> bytes:
    return compact(json.loads((FIXTURES / f"{trigger}.json").read_text()))


def booking(uid: str = "uid-1", trigger: str = "BOOKING_CREATED", **payload: Any) -> bytes:
    """A small distinct booking delivery."""
    return compact(
        {
            "triggerEvent": trigger,
            "createdAt": "2025-10-10T09:12:44.301Z",
            "payload": {"uid": uid, "bookingId": 7, **payload},
        }
    )


def make_settings(tmp_path: Path, redis_url: str, **overrides: Any) -> Settings:
    """Settings that read nothing from the environment or a .env file."""
    values: dict[str, Any] = {
        "redis_url": redis_url,
        "webhook_secrets": SECRET,
        "data_dir": tmp_path / "data",
        "spool_dir": tmp_path / "spool",
        "webhook_secrets_refresh": 0.05,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)


@dataclass
class Served:
    """An intake served by uvicorn on a loopback port."""

    url: str
    app: Starlette
    probe_url: str = ""  # where /livez, /readyz, /metrics answer (url unless apart)

    @property
    def intake(self) -> Any:
        """The app's ``calhooks.service.app.Intake``."""
        return self.app.state.intake

    def get(self, path: str) -> httpx.Response:
        """GET ``path``; the probe paths go to the probe port when the intake has one."""
        base = self.probe_url if path in ("/livez", "/readyz", "/metrics") else self.url
        return httpx.get((base or self.url) + path, timeout=10)

    def metric(self, sample: str) -> float:
        """The value of one sample on /metrics, e.g. ``calhooks_intake_redis_up``."""
        for line in self.get("/metrics").text.splitlines():
            name, _, value = line.rpartition(" ")
            if name == sample:
                return float(value)
        raise AssertionError(f"no sample {sample} on /metrics")

    def post(self, body: bytes, sig: str | None = None, **headers: str) -> httpx.Response:
        """POST ``body`` signed with SECRET (or with ``sig``; ``""`` sends no signature)."""
        sent = {"content-type": "application/json", **headers}
        if sig is None:
            sent["x-cal-signature-256"] = signature(body)
        elif sig:
            sent["x-cal-signature-256"] = sig
        return httpx.post(self.url + PATH, content=body, headers=sent, timeout=10)


@pytest.fixture
def serve(tmp_path: Path, redis_server: EmbeddedRedis) -> Iterator[Any]:
    """``serve(**settings)``: start an intake (on the suite's Redis unless told otherwise)."""
    from calhooks.service.app import create_app

    with_stack: list[Any] = []

    def start(
        redis_url: str | None = None,
        drain_interval: float = 0.05,
        app_options: dict[str, Any] | None = None,
        **overrides: Any,
    ) -> Served:
        settings = make_settings(tmp_path, redis_url or redis_server.url, **overrides)
        app = create_app(settings, drain_interval=drain_interval, **(app_options or {}))
        context = serve_app(app, probe_port=settings.probe_port)
        url = context.__enter__()
        with_stack.append(context)
        probe_url = f"http://127.0.0.1:{settings.probe_port}" if settings.probe_port else ""
        return Served(url, app, probe_url)

    yield start
    for context in reversed(with_stack):
        context.__exit__(None, None, None)


@pytest.fixture
def serve_process(tmp_path: Path, redis_server: EmbeddedRedis) -> Iterator[Any]:
    """``serve_process(**env)``: `calhooks serve` in a process of its own, configured by the
    environment (the suite's Redis, SECRET); returns its URL and process once ready."""
    started: list[subprocess.Popen[bytes]] = []

    def start(ready_url: str = "", **env: str) -> tuple[str, subprocess.Popen[bytes]]:
        port = free_port()
        environment = {
            **{k: v for k, v in os.environ.items() if not k.startswith("CALHOOKS_")},
            "CALHOOKS_PORT": str(port),
            "CALHOOKS_REDIS_URL": redis_server.url,
            "CALHOOKS_WEBHOOK_SECRETS": SECRET,
            "CALHOOKS_DATA_DIR": str(tmp_path / "data"),
            "CALHOOKS_LOG_LEVEL": "error",
            **env,
        }
        process = subprocess.Popen(
            [str(Path(sys.executable).parent / "calhooks"), "serve"],
            env=environment, cwd=tmp_path,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        started.append(process)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get((ready_url or url) + "/readyz").status_code == 200:
                    return url, process
            except httpx.TransportError:
                pass
            assert process.poll() is None, "calhooks serve exited"
            assert time.monotonic() < deadline, "calhooks serve never became ready"
            time.sleep(0.1)

    yield start
    for process in started:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


async def command(client: Any, *args: Any) -> Any:
    """Any Redis command through redis-py, its reply as is (redis-py's types are too loose)."""
    return await client.execute_command(*args)
