"""arq's private methods that ``workers/wakeup.py`` overrides or copies, pinned to arq 0.28.

``WakeableWorker`` replaces ``main`` and ``_poll_iteration``, hooks
``_release_sem_dec_counter_on_complete`` and ``finish_failed_job`` (its job leases), replaces
``finish_job`` by one script, and its claim script follows ``start_jobs`` and does
``run_job``'s opening transaction; ``workers/jobstart.py`` runs the rest of ``run_job``
(a copy of arq's body after that transaction). A new arq
release that changes any of them must be read before calhooks runs on it: this test fails
with the method's name, and the fix is to review ``workers/wakeup.py`` against the new code,
then record the new digest here.
"""

from __future__ import annotations

import hashlib
import inspect

import arq
import arq.worker
import pytest

#: sha256 (first 16 hex digits) of each method's source in arq 0.28.0.
PINNED = {
    "main": "45ca1591c9717466",
    "_poll_iteration": "f8d39d823a0a59f2",
    "_release_sem_dec_counter_on_complete": "0ed101482e942c33",
    "start_jobs": "b45797cfa40bed7f",
    "close": "5bcc9cb356680829",
    "finish_job": "903f09c92830d3fd",
    "finish_failed_job": "3e16087f318a7acf",
    "run_job": "589a19059ff84ee7",
}


def digest(name: str) -> str:
    source = inspect.getsource(getattr(arq.worker.Worker, name))
    return hashlib.sha256(source.encode()).hexdigest()[:16]


@pytest.mark.parametrize("name", sorted(PINNED))
def test_overridden_arq_method_is_unchanged(name: str) -> None:
    """The arq method WakeableWorker relies on is the one its code was written against."""
    assert digest(name) == PINNED[name], (
        f"arq {arq.VERSION} changed Worker.{name}: review workers/wakeup.py against it, then "
        "update PINNED in this test"
    )
