"""Wake a worker the moment a job is queued, instead of waiting for its next poll.

arq's ``Worker`` looks for due jobs every ``poll_delay`` seconds: the default (0.5 s) puts up to
half a second between the intake accepting an event and a worker starting it, and a tiny
poll delay burns CPU on an idle worker. The intake therefore pushes a token to
``<queue_name>:wake`` after each enqueue (``LPUSH`` + ``LTRIM 0 63``), and ``WakeableWorker``:

* keeps one ``BLPOP`` on that list outstanding (on its own pooled connection) while it has a
  free slot, and polls as soon as a token arrives;
* polls as soon as a running job finishes if due jobs were left for want of room;
* hands a token back when it woke but was full, so another worker can take the job;
* still polls every ``poll_delay`` seconds, which catches deferred jobs (retries) coming due
  and any token lost to a trim or a crash.

It also claims jobs in batches: arq's poll reads the due jobs (``ZRANGEBYSCORE``) and then
makes four round trips per job (``WATCH`` its in-progress key, ``EXISTS``, ``ZSCORE``, then
``MULTI``/``PSETEX``/``EXEC``); here one Lua script reads the due jobs and claims as many as
the worker has room for, atomically, in one round trip - the same checks (not in progress
elsewhere, still queued, due) and the same in-progress key, so arq workers of either kind
can share a queue. The same script does arq's start of each job it claims (read the job,
count the try, take it out of the abort set), and a job's end is one script too
(``calhooks.workers.jobstart``): a job costs the worker runtime two round trips fewer.

How jobs are run, retried and finished is arq's own code: ``Worker.main``'s loop and
``_poll_iteration`` are replaced (their bodies follow arq 0.28's), and ``run_job`` runs as
``jobstart.run_started_job``, arq 0.28's body after its opening transaction;
``pyproject.toml`` pins arq below 0.29 and ``tests/workers/test_arq_upstream.py`` pins the
digests of the methods replaced.

Two more things arq's ``Worker`` does not do:

* **Leases** (``calhooks.workers.leases``): the in-progress key of a claimed job holds this
  worker's token and lives ``CALHOOKS_WORKER_LEASE`` seconds (arq's: the job timeout + 10 s),
  renewed while the job runs; a killed worker's jobs are claimed again one lease after its
  death. A job whose lease was lost is stopped (another worker has it), and finishing a job
  deletes its in-progress key only while it still holds this worker's token.
* **Redis outages** of any length: the pool is opened without a connection test, the probe
  server starts first, and any Redis error in the loop (connection refused, a timeout - every
  command has ``CALHOOKS_WORKER_REDIS_TIMEOUT``) makes the worker wait for Redis with a short
  back-off (at most ``OUTAGE_MAX_PAUSE``) instead of exiting; ``/livez`` stays 200 meanwhile,
  ``/readyz`` is 503, and the first poll after Redis answers takes jobs again.

``arq calhooks.workers.WorkerSettings`` (arq's own CLI) builds a plain ``arq.Worker`` and so polls
without waking, holds in-progress keys for the job timeout and exits when Redis is away;
``calhooks worker`` runs this class.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
import time
import uuid
from typing import Any

import structlog
from arq.connections import ArqRedis, RedisSettings, log_redis_info
from arq.constants import (
    abort_jobs_ss,
    in_progress_key_prefix,
    job_key_prefix,
    result_key_prefix,
    retry_key_prefix,
)
from arq.utils import timestamp_ms, to_ms
from arq.worker import Worker
from redis.asyncio.sentinel import Sentinel
from redis.commands.core import AsyncScript

from calhooks.service.events import WAKE_LIST_LENGTH, wake_key
from calhooks.workers.jobstart import FINISH_JOB, START_JOB_LUA, Started, run_started_job
from calhooks.workers.leases import REDIS_AWAY, RELEASE_IF_MINE, LeaseKeeper
from calhooks.workers.redistyped import blpop

logger = logging.getLogger("calhooks.worker")
log = structlog.get_logger("calhooks.workers.wakeup")

#: Longest pause between two tries to reach Redis during an outage (seconds).
OUTAGE_MAX_PAUSE = 0.5
#: Default lease of a claimed job when none is given (seconds).
DEFAULT_LEASE = 10.0


# KEYS[1] queue, KEYS[2] arq's abort set. ARGV: now (ms), in-progress TTL (ms), in-progress key
# prefix, most to claim, most due jobs to look at, this worker's token (the in-progress keys'
# value), then START_JOB_LUA's (abort jobs "1"/"0", job and retry key prefixes).
# Returns {{id, score, job, try, aborted, id, ...}, due jobs seen}.
_CLAIM = (
    """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[5])
local room = tonumber(ARGV[4])
local claimed = {}
local taken = 0
for _, id in ipairs(due) do
  if taken >= room then break end
  local progress = ARGV[3] .. id
  if redis.call('EXISTS', progress) == 0 then
    redis.call('PSETEX', progress, ARGV[2], ARGV[6])
    taken = taken + 1
    claimed[#claimed + 1] = id
    claimed[#claimed + 1] = redis.call('ZSCORE', KEYS[1], id)
"""
    + START_JOB_LUA
    + """
  end
end
return {claimed, #due}
"""
)


class WakeableWorker(Worker):
    """An arq ``Worker`` that waits on the wake list, with its poll delay as a fallback."""

    def __init__(
        self,
        *args: Any,
        listen_timeout: float = 10.0,
        lease: float = DEFAULT_LEASE,
        redis_timeout: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.wake_key = wake_key(self.queue_name)
        self.redis_timeout = redis_timeout
        # A BLPOP must come back before the socket's own timeout would call it a failure.
        if redis_timeout is not None:
            listen_timeout = min(listen_timeout, max(0.1, redis_timeout / 2))
        self.listen_timeout = listen_timeout
        self.lease = lease
        self.in_progress_timeout_s = lease
        self.token = uuid.uuid4().hex
        self.leases: LeaseKeeper | None = None
        self.outages = 0
        self.redis_away_since: float | None = None
        self.last_iteration: float = 0.0
        self.wakeups = 0
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._woken_by_token = False
        self._claim: AsyncScript | None = None
        self._finish: AsyncScript | None = None
        self._backlog = False

    @property
    def full(self) -> bool:
        return self.job_counter >= self.max_jobs

    def _release_sem_dec_counter_on_complete(self) -> None:
        was_full = self.full
        super()._release_sem_dec_counter_on_complete()
        self._room.set()
        if was_full or self._backlog:
            self._wake.set()

    async def _poll_iteration(self) -> None:
        """arq's poll, with the due jobs read and claimed by one script (see the docstring)."""
        room = self.max_jobs - self.job_counter
        if self.burst and self.max_burst_jobs >= 0:
            room = min(room, self.max_burst_jobs - self._jobs_started())
        if self.allow_pick_jobs and room > 0:
            await self._claim_due(room)
        if self.allow_abort_jobs:
            await self._cancel_aborted_jobs()
        for job_id, task in list(self.tasks.items()):
            if task.done():
                del self.tasks[job_id]
                task.result()  # an error in arq's run_job must not pass silently
        await self.heart_beat()

    async def _claim_due(self, room: int) -> None:
        if self._claim is None:
            self._claim = self.pool.register_script(_CLAIM)
        claimed, due = await self._claim(
            keys=[self.queue_name, abort_jobs_ss],
            args=[
                timestamp_ms(),
                int(self.in_progress_timeout_s * 1000),
                in_progress_key_prefix,
                room,
                self.queue_read_limit,
                self.token,
                "1" if self.allow_abort_jobs else "0",
                job_key_prefix,
                retry_key_prefix,
            ],
        )
        # Due jobs were left for want of room: poll again as soon as a slot frees.
        self._backlog = len(claimed) // 5 < int(due)
        for at in range(0, len(claimed), 5):
            raw_id, raw_score, job, job_try, aborted = claimed[at : at + 5]
            await self.sem.acquire()
            self.job_counter += 1
            job_id = raw_id.decode()
            progress = in_progress_key_prefix + job_id
            if self.leases is not None:
                self.leases.hold(progress, self.token)
            started = Started(job, int(job_try), bool(aborted))
            task = self.loop.create_task(
                run_started_job(self, job_id, int(float(raw_score)), started)
            )
            task.add_done_callback(functools.partial(self._job_left, progress))
            self.tasks[job_id] = task

    def _job_left(self, progress: str, _task: object = None) -> None:
        if self.leases is not None:
            self.leases.drop(progress)
        self._release_sem_dec_counter_on_complete()

    def _lease_lost(self, key: str) -> None:
        """A running job's in-progress key lapsed or was taken: stop it (arq re-queues it)."""
        if not key.startswith(in_progress_key_prefix):
            return
        job_id = key.removeprefix(in_progress_key_prefix)
        task = self.job_tasks.get(job_id)
        if task is not None and not task.done():
            log.warning("worker.job_lease_lost", job_id=job_id)
            task.cancel()

    def _releasing(self, job_id: str) -> None:
        """Stop renewing the job's lease before its end deletes the key: a renewal racing
        with that write would otherwise report the lease lost."""
        if self.leases is not None:
            self.leases.drop(in_progress_key_prefix + job_id)

    def _delete_in_progress(self, pipe: Any, job_id: str) -> None:
        """Add to ``pipe``: delete the job's in-progress key if it still holds our token."""
        pipe.eval(RELEASE_IF_MINE, 1, in_progress_key_prefix + job_id, self.token)

    async def finish_job(
        self,
        job_id: str,
        finish: bool,
        result_data: bytes | None,
        result_timeout_s: float | None,
        keep_result_forever: bool,
        incr_score: int | None,
        keep_in_progress: float | None,
    ) -> None:
        """arq's ``finish_job`` as one script (``jobstart.FINISH_JOB``), deleting the
        in-progress key only while it is this worker's."""
        self._releasing(job_id)
        if self._finish is None:
            self._finish = self.pool.register_script(FINISH_JOB)
        if finish and result_data:
            expire = None if keep_result_forever else result_timeout_s
            result_px = "" if expire is None else str(to_ms(expire))
        else:
            result_data, result_px = b"", ""
        await self._finish(
            keys=[
                in_progress_key_prefix + job_id,
                result_key_prefix + job_id,
                retry_key_prefix + job_id,
                job_key_prefix + job_id,
                abort_jobs_ss,
                self.queue_name,
            ],
            args=[
                self.token,
                "" if keep_in_progress is None else to_ms(keep_in_progress),
                "1" if finish else "0",
                result_data,
                result_px,
                incr_score or "",
                job_id,
            ],
        )

    async def finish_failed_job(self, job_id: str, result_data: bytes | None) -> None:
        """arq's ``finish_failed_job``, with the same care for the in-progress key."""
        self._releasing(job_id)
        async with self.pool.pipeline(transaction=True) as tr:
            tr.delete(retry_key_prefix + job_id, job_key_prefix + job_id)
            self._delete_in_progress(tr, job_id)
            tr.zrem(abort_jobs_ss, job_id)
            tr.zrem(self.queue_name, job_id)
            keep_result = self.keep_result_forever or self.keep_result_s > 0
            if result_data is not None and keep_result:
                expire = 0 if self.keep_result_forever else self.keep_result_s
                tr.set(result_key_prefix + job_id, result_data, px=to_ms(expire))
            await tr.execute()

    async def _listen(self) -> None:
        """Wait on the wake list while there is room for another job."""
        while True:
            await self._room.wait()
            try:
                token = await blpop(self.pool, self.wake_key, self.listen_timeout)
            except REDIS_AWAY:
                # The main loop reports the outage and polls as soon as Redis is back.
                await asyncio.sleep(OUTAGE_MAX_PAUSE)
                continue
            if token is not None:
                self.wakeups += 1
                self._woken_by_token = True
                self._wake.set()

    async def _give_back_token(self) -> None:
        async with self.pool.pipeline(transaction=False) as pipe:
            pipe.lpush(self.wake_key, 1)
            pipe.ltrim(self.wake_key, 0, WAKE_LIST_LENGTH - 1)
            await pipe.execute()

    async def _idle(self) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.poll_delay_s):
                await self._wake.wait()

    def _open_pool(self) -> ArqRedis:
        """arq's pool for ``redis_settings``, with socket timeouts and no connection test
        (``create_pool`` pings, and gives up after ``conn_retries``)."""
        settings = self.redis_settings or RedisSettings()
        timeouts: dict[str, Any] = {
            "socket_connect_timeout": settings.conn_timeout,
            "socket_timeout": self.redis_timeout,
        }
        common: dict[str, Any] = {
            "db": settings.database,
            "username": settings.username,
            "password": settings.password,
            "encoding": "utf8",
        }
        pool: ArqRedis
        if settings.sentinel:
            sentinel = Sentinel(  # type: ignore[no-untyped-call]
                settings.host, ssl=settings.ssl, **timeouts, **common
            )
            pool = sentinel.master_for(settings.sentinel_master, redis_class=ArqRedis)
        else:
            pool = ArqRedis(
                host=settings.host,
                port=settings.port,
                unix_socket_path=settings.unix_socket_path,
                ssl=settings.ssl,
                ssl_keyfile=settings.ssl_keyfile,
                ssl_certfile=settings.ssl_certfile,
                ssl_cert_reqs=settings.ssl_cert_reqs,
                ssl_ca_certs=settings.ssl_ca_certs,
                ssl_ca_data=settings.ssl_ca_data,
                ssl_check_hostname=settings.ssl_check_hostname,
                max_connections=settings.max_connections,
                **timeouts,
                **common,
            )
        pool.job_serializer = self.job_serializer
        pool.job_deserializer = self.job_deserializer
        pool.default_queue_name = self.queue_name
        pool.expires_extra_ms = self.expires_extra_ms
        return pool

    def _stamp(self) -> None:
        self.last_iteration = asyncio.get_running_loop().time()

    async def _wait_for_redis(self, error: BaseException | None) -> None:
        """Return once Redis answers a PING, trying again every ``OUTAGE_MAX_PAUSE`` at most."""
        pause = 0.05
        if error is not None:
            self.outages += 1
            self.redis_away_since = time.monotonic()
            log.warning("worker.redis_away", error=f"{type(error).__name__}: {error}")
        while True:
            self._stamp()
            try:
                async with asyncio.timeout(max(1.0, self.redis_timeout or 5.0)):
                    await self.pool.ping()
            except REDIS_AWAY:
                await asyncio.sleep(pause)
                pause = min(pause * 2, OUTAGE_MAX_PAUSE)
                continue
            if self.redis_away_since is not None:
                away = time.monotonic() - self.redis_away_since
                log.info("worker.redis_back", seconds_away=round(away, 3))
                self.redis_away_since = None
            return

    async def main(self) -> None:
        if self._pool is None:
            self._pool = self._open_pool()
        logger.info(
            "Starting worker for %d functions: %s", len(self.functions), ", ".join(self.functions)
        )
        self.leases = LeaseKeeper(self.pool, lease=self.lease, on_lost=self._lease_lost)
        self.ctx["redis"] = self.pool
        self.ctx["worker"] = self
        self.ctx["leases"] = self.leases
        if self.on_startup:
            await self.on_startup(self.ctx)
        try:
            await log_redis_info(self.pool, logger.info)
        except REDIS_AWAY as exc:
            await self._wait_for_redis(exc)
        self.leases.start()
        log.info("worker.leasing", claims_as=self.token, lease=self.lease)
        listener = asyncio.create_task(self._listen(), name="calhooks-wake-listener")
        try:
            while True:
                self._stamp()
                self._wake.clear()
                woken, self._woken_by_token = self._woken_by_token, False
                try:
                    await self._poll_iteration()
                    if self.full:
                        self._room.clear()
                        if woken:
                            await self._give_back_token()
                    else:
                        self._room.set()
                    if self.burst and await self._burst_done():
                        return
                except REDIS_AWAY as exc:
                    await self._wait_for_redis(exc)
                    continue
                await self._idle()
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener
            await self.leases.stop()

    async def close(self) -> None:
        """arq's ``Worker.close``, closing the pool with ``aclose`` (``close`` is deprecated)."""
        if not self._handle_signals:
            self.handle_sig(signal.SIGUSR1)
        if not self._pool:
            return
        # Jobs cancelled by the shutdown end in CancelledError; arq re-runs them elsewhere.
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)
        with contextlib.suppress(*REDIS_AWAY):
            await self.pool.delete(self.health_check_key)
        if self.on_shutdown:
            await self.on_shutdown(self.ctx)
        await self.pool.aclose(close_connection_pool=True)
        self._pool = None

    async def _burst_done(self) -> bool:
        """arq's burst-mode exit test: stop once the queue is empty and jobs have finished."""
        if 0 <= self.max_burst_jobs <= self._jobs_started():
            await asyncio.gather(*self.tasks.values())
            return True
        if await self.pool.zcard(self.queue_name) == 0:
            await asyncio.gather(*self.tasks.values())
            return True
        return False
