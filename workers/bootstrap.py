"""How a worker process is put together: arq's ``WorkerSettings`` and the worker's runtime.

``calhooks worker`` runs ``WakeableWorker(**wakeable_options(settings))``; arq's own CLI,
``arq calhooks.workers.WorkerSettings``, builds a plain ``arq.Worker`` from the same options (it
then
polls every ``CALHOOKS_WORKER_POLL_DELAY`` instead of waking on enqueue). ``WorkerSettings``
is made on first access, from the environment, so importing this module starts nothing.

On startup the worker builds its ``Runtime``: the environment organization's Cal.com client
and the connections' (``workers.clients``: each behind its key's shared rate limit and the
call metrics), the rules, the ledger, dead-letter queue, event log and booking order on the
worker's own Redis connection, the probe server and the periodic reconciliation of the
environment's organization and every connection (``workers.reconcile.periodic``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypedDict

import httpx
import structlog
from arq.connections import RedisSettings
from arq.worker import Function, func
from typing_extensions import Unpack

from calhooks.service.calcom.client import CalcomClient
from calhooks.service.calcom.sealing import Sealer
from calhooks.service.connections.store import ConnectionStore, ConnectionStoreError
from calhooks.service.core.redisconn import arq_redis_settings
from calhooks.service.core.settings import Settings, get_settings
from calhooks.workers import metrics
from calhooks.workers.clients import Organizations
from calhooks.workers.deadletter import DeadLetterQueue
from calhooks.workers.eventlog import EventLog
from calhooks.workers.health import Liveness, Metrics, ProbeServer, Readiness
from calhooks.workers.jobs import EventLike, Processor, process_event
from calhooks.workers.ledger import Ledger
from calhooks.workers.ordering import BookingOrder
from calhooks.workers.ratelimit import SharedRateLimit
from calhooks.workers.readcache import ReadCache
from calhooks.workers.retries import RetryPolicy
from calhooks.workers.transport import http_client

logger = structlog.get_logger(__name__)

#: arq's own limit on runs of a job; the workers count attempts themselves (deferrals are
#: not attempts), so arq's must never be the one that stops a job (it would leave no trace).
ARQ_MAX_TRIES = 1_000_000
#: arq's timeout is a backstop past the workers' own per-attempt deadline.
ARQ_TIMEOUT_MARGIN = 10.0


def use_fast_event_loop() -> bool:
    """Run on uvloop where it is installed (with uvicorn[standard]): a worker spends much of
    its CPU in the event loop and socket calls, which uvloop makes about a quarter cheaper."""
    try:
        import uvloop
    except ImportError:
        return False
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return True


class _PerJobLines(logging.Filter):
    """Drops arq's two INFO lines per job (start, result): ``event.done`` says more."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno > logging.INFO or not str(record.msg).startswith("%6.2fs")


def quiet_arq_job_lines() -> None:
    logger = logging.getLogger("arq.worker")
    if not any(isinstance(f, _PerJobLines) for f in logger.filters):
        logger.addFilter(_PerJobLines())


def worker_name(settings: Settings) -> str:
    return settings.worker_name or f"{socket.gethostname()}-{os.getpid()}"


def _job_serializers() -> tuple[Callable[[Any], bytes], Callable[[bytes], Any]]:
    from calhooks.service.events import deserialize_job, serialize_job

    return serialize_job, deserialize_job


def job_function(settings: Settings) -> Function:
    return func(
        process_event,
        name="process_event",
        max_tries=ARQ_MAX_TRIES,
        timeout=settings.worker_job_timeout + ARQ_TIMEOUT_MARGIN,
    )


class WorkerOptions(TypedDict, total=False):
    """The ``arq.Worker.__init__`` keyword arguments calhooks sets (arq 0.28's names and types)."""

    functions: list[Function]
    queue_name: str
    redis_settings: RedisSettings
    on_startup: Callable[[dict[str, Any]], Awaitable[None]]
    on_shutdown: Callable[[dict[str, Any]], Awaitable[None]]
    max_jobs: int
    job_timeout: float
    poll_delay: float
    max_tries: int
    job_completion_wait: int
    health_check_interval: float
    health_check_key: str
    job_serializer: Callable[[Any], bytes]
    job_deserializer: Callable[[bytes], Any]
    ctx: dict[str, Any]
    burst: bool
    handle_signals: bool


def worker_options(settings: Settings, **overrides: Unpack[WorkerOptions]) -> WorkerOptions:
    """Keyword arguments for ``arq.Worker`` (and ``WakeableWorker``)."""
    serialize, deserialize = _job_serializers()
    options: WorkerOptions = {
        "functions": [job_function(settings)],
        "queue_name": settings.queue_name,
        "redis_settings": dataclasses.replace(
            arq_redis_settings(settings),
            conn_timeout=settings.worker_redis_timeout,  # type: ignore[arg-type]
        ),
        "on_startup": startup,
        "on_shutdown": shutdown,
        "max_jobs": settings.worker_max_jobs,
        "job_timeout": settings.worker_job_timeout + ARQ_TIMEOUT_MARGIN,
        "poll_delay": settings.worker_poll_delay,
        "max_tries": ARQ_MAX_TRIES,
        "job_completion_wait": settings.worker_job_completion_wait,
        "health_check_interval": settings.worker_health_interval,
        "health_check_key": f"{settings.queue_name}:health-check:{worker_name(settings)}",
        "job_serializer": serialize,
        "job_deserializer": deserialize,
        "ctx": {"settings": settings},
    }
    options.update(overrides)
    return options


class WakeableOptions(WorkerOptions, total=False):
    """``WakeableWorker``'s own keyword arguments, beside arq's."""

    lease: float
    redis_timeout: float


def wakeable_options(settings: Settings, **overrides: Unpack[WakeableOptions]) -> WakeableOptions:
    """Keyword arguments for ``WakeableWorker``: ``worker_options`` plus its leases and timeouts."""
    options: WakeableOptions = {
        **worker_options(settings),
        "lease": settings.worker_lease,
        "redis_timeout": settings.worker_redis_timeout,
    }
    options.update(overrides)
    return options


def __getattr__(name: str) -> Any:
    """``WorkerSettings`` for ``arq calhooks.workers.WorkerSettings``, built on first access."""
    if name == "WorkerSettings":
        return type("WorkerSettings", (), dict(worker_options(get_settings())))
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass
class Runtime:
    """Everything a worker process shares between its jobs (``ctx["calhooks"]``)."""

    settings: Settings
    name: str
    client: CalcomClient
    processor: Processor
    parse_event: Callable[[dict[str, Any]], EventLike]
    organizations: Organizations | None = None
    http: httpx.AsyncClient | None = None
    probes: ProbeServer | None = None
    stopping: bool = False
    ticker: asyncio.Task[None] | None = None
    janitor: asyncio.Task[None] | None = None
    reconciler: asyncio.Task[None] | None = None
    last_tick: float = 0.0


def _parse_event(data: dict[str, Any]) -> EventLike:
    from calhooks.service.events import Event

    event: EventLike = Event.from_dict(data)
    return event


async def _tick(runtime: Runtime) -> None:
    """Proves the event loop turns, for workers without their own loop stamp (arq's CLI)."""
    loop = asyncio.get_running_loop()
    while True:
        runtime.last_tick = loop.time()
        await asyncio.sleep(1.0)


#: Seconds between two trims of the dead-letter queue by each worker.
DEAD_LETTER_TRIM_INTERVAL = 60.0


def dead_letter_queue(redis: Any, settings: Settings) -> DeadLetterQueue:
    return DeadLetterQueue(
        redis,
        max_entries=settings.worker_dead_letter_max,
        max_age=settings.worker_dead_letter_max_age,
        record_ttl=settings.worker_record_ttl,
    )


async def _trim_dead_letters(dead_letters: DeadLetterQueue) -> None:
    """Keeps the dead-letter queue within its age bound when nothing new is added."""
    while True:
        try:
            dropped = await dead_letters.trim()
        except Exception as exc:  # Redis away: the worker's loop reports it; try later
            logger.debug("dlq.trim_failed", error=type(exc).__name__)
        else:
            if dropped:
                logger.info("dlq.trimmed", dropped=len(dropped))
        await asyncio.sleep(DEAD_LETTER_TRIM_INTERVAL)


def _probe_routes(runtime: Runtime, ctx: dict[str, Any]) -> ProbeServer:
    settings = runtime.settings
    redis = ctx["redis"]
    worker = ctx.get("worker")
    dead_letters = DeadLetterQueue(redis)

    def last_turn() -> float:
        stamp = float(getattr(worker, "last_iteration", 0.0) or 0.0)
        return max(stamp, runtime.last_tick)

    def taking_jobs() -> bool:
        return not runtime.stopping and bool(getattr(worker, "allow_pick_jobs", True))

    async def refresh() -> None:
        ready = await redis.zcount(settings.queue_name, "-inf", int(time.time() * 1000))
        metrics.READY_JOBS.set(ready)
        metrics.DEAD_LETTERS.set(await dead_letters.count())

    return ProbeServer(
        {
            "/livez": Liveness(last_turn, stale_after=max(30.0, 10 * settings.worker_poll_delay)),
            "/readyz": Readiness(redis.ping, taking_jobs),
            "/metrics": Metrics(refresh, metrics.render),
        },
        host=settings.worker_http_host,
        port=settings.worker_http_port,
    )


async def startup(ctx: dict[str, Any]) -> None:
    """arq ``on_startup``: build the ``Runtime`` and start the probe server."""
    from calhooks.service.core.logs import configure_from_settings
    from calhooks.workers.rulesource import RulesSource

    settings: Settings = ctx.get("settings") or get_settings()
    if not ctx.get("logging_configured"):
        configure_from_settings()
    quiet_arq_job_lines()
    redis = ctx["redis"]
    name = worker_name(settings)
    rate_limit_wait = min(30.0, settings.worker_job_timeout / 4)

    def limiter(bucket: str) -> SharedRateLimit:
        return SharedRateLimit(
            redis,
            bucket,
            per_minute=settings.worker_rate_limit_per_minute,
            window=settings.worker_rate_limit_window,
            max_wait=rate_limit_wait,
            hold=settings.worker_rate_limit_hold,
        )

    # aiohttp under httpx (workers.transport); the pool holds a connection per running event.
    http = http_client(
        timeout=httpx.Timeout(settings.api_timeout, connect=settings.api_connect_timeout),
        max_connections=max(settings.api_max_connections, settings.worker_max_jobs),
    )
    client = CalcomClient.from_settings(settings, http=http)
    metrics.LABELS.limit = settings.metrics_connections
    store: ConnectionStore | None = None
    store_problem = None
    try:
        store = ConnectionStore.from_settings(settings, redis)
    except ConnectionStoreError as exc:  # no CALHOOKS_ENCRYPTION_KEY: no connection to read
        store_problem = str(exc)
    # Gives the environment's client its gate: its key's rate limit, metrics, call records.
    organizations = Organizations(client, limiter=limiter, store=store, store_problem=store_problem)
    rules = RulesSource.from_settings(settings)
    ledger = Ledger(redis, ttl=settings.worker_record_ttl)
    dead_letters = dead_letter_queue(redis, settings)
    processor = Processor(
        rules=rules.current,
        client=client,
        ledger=ledger,
        dead_letters=dead_letters,
        eventlog=EventLog(redis, ttl=settings.worker_record_ttl),
        order=BookingOrder(
            redis,
            wait=settings.worker_ordering_wait,
            lease=settings.worker_job_timeout + ARQ_TIMEOUT_MARGIN + 10,
            ttl=settings.worker_record_ttl,
            leases=ctx.get("leases"),
        ),
        policy=RetryPolicy(
            settings.worker_max_tries,
            settings.worker_retry_base_delay,
            settings.worker_retry_max_delay,
        ),
        job_timeout=settings.worker_job_timeout,
        worker_name=name,
        sealer=Sealer.from_settings(settings),
        step_settle=2 * settings.api_timeout,
        # A cached read's leader may wait for the rate limit, then for Cal.com: the others
        # wait as long before calling themselves.
        cache=ReadCache(redis, wait=rate_limit_wait + settings.api_timeout),
        organizations=organizations,
    )
    runtime = Runtime(
        settings, name, client, processor, _parse_event, http=http, organizations=organizations
    )
    runtime.ticker = asyncio.create_task(_tick(runtime), name="calhooks-worker-tick")
    runtime.janitor = asyncio.create_task(
        _trim_dead_letters(dead_letters), name="calhooks-dlq-trim"
    )
    if settings.reconcile_period > 0 and (settings.org_id is not None or store is not None):
        from calhooks.workers.reconcile import periodic

        runtime.reconciler = periodic.start(settings, redis, organizations, holder=name)
    if settings.worker_http_port:
        runtime.probes = _probe_routes(runtime, ctx)
        await runtime.probes.start()
    ctx["calhooks"] = runtime
    # Everything loaded so far (tools registry, rules, modules) lives as long as the process:
    # keep it out of the garbage collector's way, so collections stay short under load.
    gc.collect()
    gc.freeze()
    logger.info(
        "worker.started",
        worker=name,
        queue=settings.queue_name,
        max_jobs=settings.worker_max_jobs,
        rules=rules.describe(),
        rate_limit_per_minute=settings.worker_rate_limit_per_minute,
        connections=store is not None,
        http_port=runtime.probes.port if runtime.probes else None,
    )


async def shutdown(ctx: dict[str, Any]) -> None:
    """arq ``on_shutdown``: stop the probe server and close the Cal.com client."""
    runtime: Runtime | None = ctx.get("calhooks")
    if runtime is None:
        return
    runtime.stopping = True
    if runtime.probes is not None:
        await runtime.probes.stop()
    for task in (runtime.ticker, runtime.janitor, runtime.reconciler):
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    if runtime.organizations is not None:
        await runtime.organizations.aclose()
    await runtime.client.aclose()
    if runtime.http is not None:
        await runtime.http.aclose()
    logger.info("worker.stopped", worker=runtime.name)
