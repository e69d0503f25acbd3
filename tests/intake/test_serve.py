"""`calhooks serve` / `python -m calhooks.service`: uvicorn options, and a graceful SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from calhooks.service.cli.main import COMMANDS
from calhooks.service.cli.serve import server_options
from calhooks.service.core.embedded_redis import EmbeddedRedis, free_port
from calhooks.service.core.settings import Settings
from tests.intake.conftest import PATH, SECRET, booking, signature

ROOT = Path(__file__).resolve().parents[2]


def test_serve_is_a_calhooks_command() -> None:
    """`calhooks serve` is registered on the command line."""
    assert "serve" in COMMANDS
    assert COMMANDS["serve"].load("serve").name == "serve"


def test_uvicorn_options() -> None:
    """Proxy headers from trusted proxies only, limits, graceful shutdown, no access log."""
    options = server_options(
        Settings(_env_file=None, forwarded_allow_ips="10.0.0.0/8", shutdown_timeout=12)
    )
    assert options["proxy_headers"] is True
    assert options["forwarded_allow_ips"] == "10.0.0.0/8"
    assert options["timeout_graceful_shutdown"] == 12
    assert options["timeout_keep_alive"] > 60  # outlives load balancers' idle connections
    assert options["limit_concurrency"] > 0
    assert (options["server_header"], options["access_log"]) == (False, False)


@pytest.fixture
def python_m_service(
    tmp_path: Path, redis_server: EmbeddedRedis
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`python -m calhooks.service` with no arguments, configured by the environment only."""
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("CALHOOKS_")},
        "CALHOOKS_PORT": str(port),
        "CALHOOKS_REDIS_URL": redis_server.url,
        "CALHOOKS_WEBHOOK_SECRETS": SECRET,
        "CALHOOKS_DATA_DIR": str(tmp_path / "data"),
        "CALHOOKS_LOG_FORMAT": "json",
    }
    log = (tmp_path / "serve.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "calhooks.service"],
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(ROOT)},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(url + "/livez").status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert process.poll() is None, (tmp_path / "serve.log").read_text()
        assert time.monotonic() < deadline, "python -m calhooks.service did not start"
        time.sleep(0.1)
    yield url, process
    if process.poll() is None:
        process.kill()
        process.wait()
    log.close()


def test_python_m_service_serves_and_finishes_in_flight_requests_on_sigterm(
    python_m_service: tuple[str, subprocess.Popen[bytes]],
) -> None:
    """A delivery half-sent when SIGTERM arrives is still answered 202; then a clean exit."""
    url, process = python_m_service
    body = booking("in-flight")
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            f"POST {PATH} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
            f"X-Cal-Signature-256: {signature(body)}\r\n\r\n".encode()
            + body[:50]
        )
        time.sleep(0.3)
        process.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        sock.sendall(body[50:])
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 202"), answer
    assert process.wait(timeout=30) == 0


def test_calhooks_serve_answers_probes_on_the_probe_port_only(serve_process: Any) -> None:
    """CALHOOKS_PROBE_PORT: one server listens on both ports; probes and metrics there only."""
    probe_port = free_port()
    probes = f"http://127.0.0.1:{probe_port}"
    url, process = serve_process(ready_url=probes, CALHOOKS_PROBE_PORT=str(probe_port))
    for path in ("/livez", "/readyz", "/metrics"):
        assert httpx.get(probes + path).status_code == 200, path
        assert httpx.get(url + path).status_code == 404, path
    body = booking("public-port")
    answer = httpx.post(url + PATH, content=body, headers={"x-cal-signature-256": signature(body)})
    assert answer.status_code == 202
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0
