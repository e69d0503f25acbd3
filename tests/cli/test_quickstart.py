"""The quick start as a new user runs it: `calhooks dev`, then the commands its banner prints,
pasted as printed into a fresh shell that has not got calhooks on its PATH.

Also: `calhooks dev --orgs 3` (three organizations, two of them connections); a restart on the
same ports works at once (the port check ignores TIME_WAIT), the
embedded Redis stops with the loop, and the README shows the commands the banner prints.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from calhooks.service.core.embedded_redis import free_port

ROOT = Path(__file__).resolve().parents[2]
CALHOOKS = Path(os.path.abspath(sys.executable)).parent / "calhooks"
DEADLINE = 60.0
#: Where the time-off rule creates dave's (Globex's admin) out-of-office entry.
GLOBEX_OOO = "/v2/organizations/2/users/201/ooo"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CALHOOKS.exists(), reason="needs the calhooks console script"),
]


@dataclass
class DevLoop:
    process: subprocess.Popen[bytes]
    stderr: Path
    home: Path

    def text(self) -> str:
        return self.stderr.read_text(errors="replace")

    def banner(self) -> str:
        deadline = time.monotonic() + DEADLINE
        while "Ctrl-C stops everything" not in self.text():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"calhooks dev did not start:\n{self.text()}")
            time.sleep(0.1)
        return self.text()

    def stop(self) -> int:
        self.process.send_signal(signal.SIGINT)
        return self.process.wait(timeout=DEADLINE)


def start_dev(home: Path, ports: list[int], name: str, *options: str) -> DevLoop:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALHOOKS_")}
    env["HOME"] = str(home)
    stderr = home / f"{name}.err"
    sandbox, intake, worker = ports
    command = [str(CALHOOKS), "dev", "--sandbox-port", str(sandbox), "--port", str(intake)]
    process = subprocess.Popen(
        [*command, "--worker-port", str(worker), *options],
        cwd=home,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=stderr.open("wb"),
    )
    return DevLoop(process, stderr, home)


@pytest.fixture
def ports() -> list[int]:
    return [free_port(), free_port(), free_port()]


@pytest.fixture
def home() -> Iterator[Path]:
    # A short path: the embedded Redis listens on a unix socket below it (108-byte limit).
    with tempfile.TemporaryDirectory(prefix="ch-") as directory:
        yield Path(directory)


@pytest.fixture
def dev(home: Path, ports: list[int]) -> Iterator[DevLoop]:
    loop = start_dev(home, ports, "first")
    yield loop
    if loop.process.poll() is None:
        # Ctrl-C, as a user stops it: `calhooks dev` then stops its embedded Redis too (a
        # SIGKILL would leave that redis-server running after the test).
        try:
            loop.stop()
        except subprocess.TimeoutExpired:
            loop.process.kill()
            loop.process.wait()


def printed_commands(banner: str) -> tuple[str, list[str]]:
    """The banner's export line and the commands under "Try it from another terminal"."""
    block = banner.split("Try it from another terminal", 1)[1].split("\nEdit the rules", 1)[0]
    lines = [line[2:] for line in block.splitlines()[1:] if re.match(r"^  \S", line)]
    assert lines[0].startswith("export ")
    return lines[0], lines[1:]


def shell(export: str, command: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``command`` pasted into a fresh shell after the export line (no calhooks on PATH)."""
    env = {"HOME": str(cwd), "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
    return subprocess.run(
        ["bash", "-c", f"{export}\n{command}"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        check=False,
    )


def until(check: Callable[[], subprocess.CompletedProcess[str] | None]) -> str:
    """Run ``check`` until it returns a result (a condition with a deadline, no sleeps)."""
    deadline = time.monotonic() + DEADLINE
    while True:
        result = check()
        if result is not None:
            return result.stdout
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.2)


def redis_answers(socket_path: Path) -> bool:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(1)
            sock.connect(str(socket_path))
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def test_the_printed_commands_work_as_printed(dev: DevLoop, home: Path, ports: list[int]) -> None:
    """Each command the banner prints runs as printed from another shell and does what it says."""
    export, commands = printed_commands(dev.banner())
    assert shell("", "command -v calhooks", home).stdout == ""  # not on a fresh shell's PATH
    other = home / "elsewhere"
    other.mkdir()
    emit, tools, events, cancel, dlq, plan = commands

    created = shell(export, emit, other)
    assert created.returncode == 0, created.stderr
    found = re.search(r" 202  event ([0-9a-f]{64})  booking uid (\S+)$", created.stdout.strip())
    assert found, created.stdout
    event_id, uid = found.groups()
    assert len(created.stdout.strip().splitlines()) == 1

    def ooo_made() -> subprocess.CompletedProcess[str] | None:
        result = shell(export, tools, other)
        assert result.returncode == 0, result.stderr
        return result if '"userId": 101' in result.stdout else None

    until(ooo_made)

    def rule_done() -> subprocess.CompletedProcess[str] | None:
        result = shell(export, events.replace("EVENT_ID", event_id), other)
        return result if "time-off-creates-ooo: done" in result.stdout else None

    shown = until(rule_done)
    assert "not time-off-cancel-deletes-ooo: runs on BOOKING_CANCELLED" in shown

    cancelled = shell(export, cancel.replace("UID", uid), other)
    assert cancelled.returncode == 0, cancelled.stderr
    assert f"booking uid {uid}" in cancelled.stdout

    def ooo_gone() -> subprocess.CompletedProcess[str] | None:
        result = shell(export, tools, other)
        return result if result.stdout.strip() == "[]" else None

    until(ooo_gone)
    assert shell(export, dlq, other).stdout.strip() == "The dead-letter queue is empty."
    planned = shell(export, plan, other)
    assert planned.returncode == 0, planned.stderr
    assert "no changes" in planned.stdout

    socket_path = home / ".local/share/calhooks/dev/redis/redis.sock"
    assert redis_answers(socket_path)
    assert dev.stop() == 0
    assert not redis_answers(socket_path), "the embedded Redis outlived calhooks dev"

    again = start_dev(home, ports, "second")  # at once, on the same ports
    try:
        assert "calhooks dev is running" in again.banner()
    finally:
        assert again.stop() == 0


def test_the_readme_shows_the_printed_commands(dev: DevLoop) -> None:
    """The README's quick start shows the commands the banner prints, and the export line."""
    _, commands = printed_commands(dev.banner())
    readme = (ROOT / "README.md").read_text()
    quick = readme.split("## Quick start", 1)[1].split("## Documentation", 1)[0]
    shown = re.findall(r"^calhooks .*?(?=\s+#|$)", quick, re.M)
    assert shown, "the README's quick start shows no calhooks command"
    for command in shown:
        assert any(printed.startswith(command.strip()) for printed in commands), command
    assert "export" in quick


def test_dev_with_three_organizations_each_with_its_key_and_webhook(
    home: Path, ports: list[int]
) -> None:
    """`calhooks dev --orgs 3`: Acme (the environment's), Globex and Acme Labs (connections).
    The banner lists the connections and their URLs; Globex's booking reaches Globex's URL
    and its rule runs with Globex's key; every organization's webhook is in place."""
    loop = start_dev(home, ports, "orgs", "--orgs", "3")
    try:
        banner = loop.banner()
        listed = re.findall(r"^    (\S+) +org (\d+) +(http://\S+)$", banner, re.M)
        assert [(name, org) for name, org, _ in listed] == [("globex", "2"), ("acme-labs", "3")]
        urls = {name: url for name, _, url in listed}
        assert urls["globex"] != urls["acme-labs"]
        export, commands = printed_commands(banner)
        [globex] = [c for c in commands if "--org-id 2" in c]

        emitted = shell(export, globex, home)
        assert emitted.returncode == 0, emitted.stderr
        assert f"-> {urls['globex']}?" in emitted.stdout
        assert " 202  event " in emitted.stdout

        sandbox = f"http://127.0.0.1:{ports[0]}/_sandbox/requests"

        def made_with_globex_key() -> subprocess.CompletedProcess[str] | None:
            records = httpx.get(sandbox, timeout=10).json()["requests"]
            made = [r for r in records if r["method"] == "POST" and r["path"] == GLOBEX_OOO]
            if not made:
                return None
            assert [r["credential"] for r in made] == ["key-globex-admin"]
            return subprocess.CompletedProcess([], 0, "made", "")

        until(made_with_globex_key)
        planned = shell(export, "calhooks webhooks plan --all-connections", home)
        assert planned.returncode == 0, planned.stderr
        assert planned.stdout.count("no changes") == 2, planned.stdout
        listed_connections = shell(export, "calhooks connections list", home)
        assert "globex" in listed_connections.stdout
        assert "acme-labs" in listed_connections.stdout
    finally:
        assert loop.stop() == 0
