"""`calhooks dev`: one command runs the whole loop, and Ctrl-C stops all of it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from calhooks.service.core.embedded_redis import free_port
from calhooks.service.sandbox import SANDBOX_API_KEY

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
LIST_OOO = "/v2/organizations/1/users/101/ooo"


def wait_for(predicate: Callable[[], bool], within: float, what: str, output: Path) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}:\n{output.read_text()}")
        time.sleep(0.1)


def redis_answers(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        try:
            sock.connect(str(path))
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False


def test_dev_runs_the_loop_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    """A time-off booking emitted by dev's sandbox becomes an OOO entry; SIGINT ends it all."""
    sandbox_port, port, worker_port = free_port(), free_port(), free_port()
    probe_port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALHOOKS_")}
    env["CALHOOKS_DATA_DIR"] = str(tmp_path / "data")
    output = tmp_path / "dev.log"
    with output.open("wb") as out:
        dev = subprocess.Popen(
            [sys.executable, "-m", "calhooks.service", "dev", "--sandbox-port", str(sandbox_port),
             "--port", str(port), "--worker-port", str(worker_port),
             "--probe-port", str(probe_port)],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        wait_for(lambda: b"calhooks dev is running" in output.read_bytes(), 60, "dev", output)
        banner = output.read_text()
        assert (
            f"calhooks sandbox emit BOOKING_CREATED --user alice --event-type time-off --url http://127.0.0.1:{sandbox_port}"
            in banner
        )
        # The intake's probes answer on --probe-port, and only there.
        assert httpx.get(f"http://127.0.0.1:{probe_port}/readyz").status_code == 200
        assert httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 404
        sandbox = f"http://127.0.0.1:{sandbox_port}"
        emitted = httpx.post(
            f"{sandbox}/_sandbox/events",
            json={
                "trigger": "BOOKING_CREATED",
                "user": "alice",
                "eventType": "time-off",
                "wait": True,
            },
            timeout=30,
        ).json()
        assert emitted["deliveries"][0]["status"] == 202
        uid = emitted["body"]["payload"]["uid"]
        headers = {"Authorization": f"Bearer {SANDBOX_API_KEY}"}

        def entry_exists() -> bool:
            entries = httpx.get(sandbox + LIST_OOO, headers=headers, timeout=5).json()["data"]
            return any(uid in (entry.get("notes") or "") for entry in entries)

        wait_for(entry_exists, 30, "the OOO entry", output)
    finally:
        dev.send_signal(signal.SIGINT)
        code = dev.wait(timeout=30)
    assert code == 0, output.read_text()
    assert "calhooks dev stopped." in output.read_text()
    assert not redis_answers(tmp_path / "data" / "redis" / "redis.sock")


ALL_INTERFACES = "0.0.0.0"  # noqa: S104 - what the refusal is about


def test_dev_refuses_a_non_loopback_host_without_the_flag() -> None:
    from typer.testing import CliRunner

    from calhooks.service.cli.main import app

    result = CliRunner().invoke(app, ["dev", "--host", ALL_INTERFACES])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: refusing to bind the sandbox to 0.0.0.0")
