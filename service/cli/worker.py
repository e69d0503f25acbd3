"""``calhooks worker``: run an arq worker that processes queued events with the rules.

It wakes as soon as the intake queues an event (``calhooks.workers.wakeup``), serves ``/livez``,
``/readyz`` and ``/metrics`` on ``CALHOOKS_WORKER_HTTP_PORT``, and on SIGTERM stops taking
jobs and gives running ones ``CALHOOKS_WORKER_JOB_COMPLETION_WAIT`` seconds before they are
handed back to the queue. ``arq calhooks.workers.WorkerSettings`` runs the same jobs with arq's
own CLI
(polling, no wake-up).
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from calhooks.service.core.logs import configure_from_settings
from calhooks.service.core.settings import get_settings

app = typer.Typer(help="Run a worker: process queued events with the rules.")


@app.callback(invoke_without_command=True)
def worker(
    burst: Annotated[
        bool, typer.Option("--burst", help="Exit once the queue is empty (batch runs, tests).")
    ] = False,
    max_jobs: Annotated[
        int | None, typer.Option(help="Events at once (default CALHOOKS_WORKER_MAX_JOBS).")
    ] = None,
) -> None:
    """Process queued events until stopped (SIGTERM/SIGINT drain gracefully)."""
    from calhooks.workers.bootstrap import use_fast_event_loop, wakeable_options
    from calhooks.workers.wakeup import WakeableWorker

    settings = get_settings()
    configure_from_settings()
    use_fast_event_loop()
    overrides: dict[str, Any] = {"burst": burst}
    if max_jobs is not None:
        overrides["max_jobs"] = max_jobs
    options = wakeable_options(settings, **overrides)
    options["ctx"]["logging_configured"] = True
    WakeableWorker(**options).run()
