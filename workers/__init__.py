"""calhooks reactions: arq workers that run the rules against Cal.com.

``arq calhooks.workers.WorkerSettings`` runs them with arq's own CLI; ``WorkerSettings`` is
built on first access (from the environment), so importing this package starts nothing.
The worker's entry point is ``calhooks.workers.bootstrap``.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "WorkerSettings":
        from calhooks.workers import bootstrap

        return bootstrap.WorkerSettings
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
