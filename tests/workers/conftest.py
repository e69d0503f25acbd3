"""Fixtures the worker tests share."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.workers.processes import Process


@pytest.fixture
def processes() -> Iterator[list[Process]]:
    """Real processes a test starts; whatever still runs at the end gets SIGTERM (and time)."""
    running: list[Process] = []
    yield running
    for process in running:
        if process.process.poll() is None:
            process.terminate()
