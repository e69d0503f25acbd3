"""Waiting for a condition with a deadline: what tests do instead of sleeping, then asserting."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any


async def eventually(check: Callable[[], Any], within: float = 20.0, what: str = "") -> Any:
    """Poll ``check`` (sync or async) until it returns something truthy, and return that.

    Fails with ``what`` after ``within`` seconds; the deadline is generous, since the machines
    the suite runs on are shared and slow at times, and a passing check returns at once.
    """
    deadline = time.monotonic() + within
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or check}")
        await asyncio.sleep(0.02)
