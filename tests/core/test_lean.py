"""``calhooks.service.core.lean``: rich and PyJWT stay out of the processes, and still work."""

from __future__ import annotations

import subprocess
import sys

import pytest


def run(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    return done.stdout.strip()


@pytest.mark.parametrize(
    "entry", ["calhooks.service.app", "calhooks.service.cli.serve", "calhooks.workers.bootstrap"]
)
def test_long_running_processes_load_neither_rich_nor_pyjwt(entry: str) -> None:
    """The web process and the worker import structlog and redis-py without their extras."""
    loaded = run(
        f"import sys, calhooks.service.cli, {entry}\n"
        "print(sorted({m.partition('.')[0] for m in sys.modules"
        " if m.startswith(('rich', 'jwt.', 'cryptography.hazmat'))}))"
    )
    assert loaded == "[]"


def test_pyjwt_is_imported_on_first_use() -> None:
    """redis-py's token module still reaches the real PyJWT when it calls it."""
    out = run(
        "import calhooks.service.cli, sys\n"
        "import redis.auth.token as token\n"
        "before = 'jwt.api_jwt' in sys.modules\n"
        "encoded = token.jwt.encode({'sub': 'x'}, 'k' * 32, algorithm='HS256')\n"
        "print(before, token.jwt.decode(encoded, 'k' * 32, algorithms=['HS256'])['sub'],"
        " type(sys.modules['jwt'].PyJWT).__name__)"
    )
    assert out == "False x type"


def test_rich_stays_importable_and_structlog_renders_without_it() -> None:
    """Only structlog's own import misses rich; the console renderer prints plain tracebacks."""
    out = run(
        "import calhooks.service.cli, structlog, sys\n"
        "print(structlog.dev.rich is None, 'rich' in sys.modules)\n"
        "import rich.console\n"
        "print(rich.console.Console.__name__)"
    )
    assert out == "True False\nConsole"
