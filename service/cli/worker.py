"""``calhooks worker``: run an arq worker that processes queued events with the rules.

It wakes as soon as the intake queues an event (``calhooks.workers.wakeup``), serves ``/livez``,
``/readyz`` and ``/metrics`` on ``CALHOOKS_WORKER_HTTP_PORT``, and on SIGTERM stops taking
jobs and gives running ones ``CALHOOKS_WORKER_JOB_COMPLETION_WAIT`` seconds before they are
handed back to the queue. ``arq calhooks.workers.WorkerSettings`` runs the same jobs with arq's
own CLI
(polling, no wake-up).
"""

from __future__ import annotations

from typing import Annotated

import typer

from calhooks.service.cli.output import fail


def worker(
    burst: Annotated[
        bool, typer.Option("--burst", help="Exit once the queue is empty (batch runs, tests).")
    ] = False,
    max_jobs: Annotated[
        int | None, typer.Option(help="Events at once (default CALHOOKS_WORKER_MAX_JOBS).")
    ] = None,
) -> None:
    """Run a worker: process queued events with the rules.

    Until stopped; SIGTERM/SIGINT let running events finish.
    """
    from redis.exceptions import RedisError

    from calhooks.service.core.logs import configure_from_settings
    from calhooks.service.core.settings import get_settings
    from calhooks.workers.bootstrap import use_fast_event_loop, wakeable_options
    from calhooks.workers.rules import RulesError
    from calhooks.workers.rulesource import RulesSource
    from calhooks.workers.wakeup import WakeableWorker

    settings = get_settings()
    try:
        RulesSource.from_settings(settings)  # the file's problems, before anything starts
    except RulesError as exc:
        fail(f"CALHOOKS_RULES_FILE {settings.rules_file}: {exc}")
    configure_from_settings()
    use_fast_event_loop()
    options = wakeable_options(settings, burst=burst)
    if max_jobs is not None:
        options["max_jobs"] = max_jobs
    options["ctx"]["logging_configured"] = True
    try:
        WakeableWorker(**options).run()
    except (RedisError, OSError) as exc:
        fail(f"cannot reach Redis: {exc}")
