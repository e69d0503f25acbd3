"""Idle memory of the two long-running processes: ``calhooks serve`` and ``calhooks worker``.

Each is started as deployed (the ``calhooks`` console script, the example rules, one
webhook secret) against a redis-server of its own, waited on until ready, left idle for a
few seconds, and its resident set (``VmRSS``) and peak (``VmHWM``) read from ``/proc``.
The web process is also measured as ``python -m calhooks.service`` (the container's
command: serve without the CLI's command modules), which shows what the CLI adds.
``python -X importtime`` of the same entry points shows which module costs what.

    .venv/bin/python bench/memory.py [--idle 3]

Targets: serve < 60 MB, worker < 80 MB.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from calhooks.service.core.embedded_redis import EmbeddedRedis, free_port  # noqa: E402
from calhooks.service.sandbox import SANDBOX_API_KEY, SANDBOX_ORG_ID  # noqa: E402

TARGETS_MB = {"serve": 60.0, "module": 60.0, "worker": 80.0}
LABELS = {
    "serve": "calhooks serve",
    "module": "python -m calhooks.service",
    "worker": "calhooks worker",
}


def status_mb(pid: int, field: str) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} for {pid}")


def wait_ready(url: str, process: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} not ready")


def measure(command: str, redis_url: str, workdir: Path, idle: float) -> tuple[float, float]:
    """``command``: ``serve``, ``worker`` (console script) or ``module`` (serve, no CLI)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALHOOKS_")}
    env.update(
        {
            "CALHOOKS_REDIS_URL": redis_url,
            "CALHOOKS_API_KEY": SANDBOX_API_KEY,
            "CALHOOKS_ORG_ID": str(SANDBOX_ORG_ID),
            "CALHOOKS_API_URL": "http://127.0.0.1:9",  # never called while idle
            "CALHOOKS_RULES_FILE": str(ROOT / "examples" / "rules.yaml"),
            "CALHOOKS_WEBHOOK_SECRETS": "bench-signing-secret",
            "CALHOOKS_LOG_LEVEL": "warning",
            "CALHOOKS_SPOOL_DIR": str(workdir / "spool"),
            "CALHOOKS_WORKER_HTTP_PORT": str(port),
        }
    )
    script = str(Path(sys.executable).parent / "calhooks")
    if command == "module":
        env["CALHOOKS_PORT"] = str(port)
        args = [sys.executable, "-m", "calhooks.service"]
    else:
        args = [script, command] + (["--port", str(port)] if command == "serve" else [])
    log = (workdir / f"{command}.log").open("wb")
    process = subprocess.Popen(args, cwd=workdir, env=env, stdout=log, stderr=log)
    try:
        wait_ready(f"http://127.0.0.1:{port}/readyz", process)
        time.sleep(idle)
        return status_mb(process.pid, "VmRSS"), status_mb(process.pid, "VmHWM")
    finally:
        process.terminate()
        process.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idle", type=float, default=3.0, help="seconds idle before reading")
    parser.add_argument("--runs", type=int, default=2)
    options = parser.parse_args()
    with EmbeddedRedis() as redis, tempfile.TemporaryDirectory() as tmp:
        for command in ("serve", "module", "worker"):
            readings = [
                measure(command, redis.url, Path(tmp), options.idle) for _ in range(options.runs)
            ]
            rss = min(r for r, _ in readings)
            peak = min(p for _, p in readings)
            target = TARGETS_MB[command]
            verdict = "met" if rss < target else "NOT met"
            print(
                f"{LABELS[command]:<27} idle RSS {rss:5.1f} MB (peak {peak:5.1f} MB) over"
                f" {options.runs} runs; target < {target:.0f} MB: {verdict}"
            )


if __name__ == "__main__":
    main()
