"""arq's job start and end, each one Redis round trip: the start rides on the claim script.

arq's ``Worker.run_job`` opens every job with a transaction of its own (``GET`` the job,
``INCR`` + ``EXPIRE`` its retry counter, ``ZREM`` it from the abort set) and
``Worker.finish_job`` closes it with another (``MULTI``, six commands, ``EXEC``). The claim
script of ``workers/wakeup.py`` already takes each job in Lua; it now also does the start's
reads and writes for every job it claims, in the same order and with the same keys, and
hands back what arq's transaction would have (:class:`Started`). The end is one Lua script,
:data:`FINISH_JOB`, doing what arq's ``finish_job`` does (the in-progress key deleted only
while it holds this worker's token, as before).

:func:`run_started_job` is arq 0.28's ``Worker.run_job`` from its first line after that
transaction: the same checks (expired, undeserializable, aborted before start, unknown
function, too many tries), the same context, logging (on arq's ``arq.worker`` logger),
timeout, retry and result handling. ``tests/workers/test_arq_upstream.py`` pins the digest
of ``run_job`` and ``finish_job``: a new arq release changing them fails that test, and this
module is reviewed against the new code before the digest is updated. Profiled effect:
docs/performance.md, "Workers: where an event's CPU goes".
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from arq.constants import keep_cronjob_progress, retry_key_prefix
from arq.jobs import SerializationError, deserialize_job_raw, serialize_result
from arq.utils import args_to_string, ms_to_datetime, timestamp_ms, truncate
from arq.worker import JobExecutionFailed, Retry, RetryJob, no_result

if TYPE_CHECKING:
    from arq.cron import CronJob
    from arq.worker import Function, Worker

logger = logging.getLogger("arq.worker")

#: arq's retry counter lifetime (``run_job``'s ``EXPIRE``, seconds).
RETRY_KEY_TTL = 88400

#: arq's ``run_job`` transaction for one claimed job, inside the claim script
#: (``workers/wakeup.py``): ``id`` is the job's id, KEYS[2] the abort set, ARGV[7] "1" when
#: the worker aborts jobs (``allow_abort_jobs``), ARGV[8] and ARGV[9] the job and retry key
#: prefixes. Appends the job (``false`` if gone), its try and whether it was aborted.
START_JOB_LUA = f"""
local job = redis.call('GET', ARGV[8] .. id)
local tries = redis.call('INCR', ARGV[9] .. id)
redis.call('EXPIRE', ARGV[9] .. id, {RETRY_KEY_TTL})
local aborted = 0
if ARGV[7] == '1' then aborted = redis.call('ZREM', KEYS[2], id) end
claimed[#claimed + 1] = job
claimed[#claimed + 1] = tries
claimed[#claimed + 1] = aborted
"""

#: arq's ``finish_job`` as one script. KEYS: in-progress, result, retry, job, abort set,
#: queue. ARGV: this worker's token, keep-in-progress (ms, "" to delete the key if it is
#: ours), finish ("1"/"0"), result ("" for none), result lifetime (ms, "" for none),
#: score increment ("" for none), job id.
FINISH_JOB = """
if ARGV[2] == '' then
  if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
else
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
if ARGV[3] == '1' then
  if ARGV[4] ~= '' then
    if ARGV[5] == '' then
      redis.call('SET', KEYS[2], ARGV[4])
    else
      redis.call('SET', KEYS[2], ARGV[4], 'PX', ARGV[5])
    end
  end
  redis.call('DEL', KEYS[3], KEYS[4])
  redis.call('ZREM', KEYS[5], ARGV[7])
  redis.call('ZREM', KEYS[6], ARGV[7])
elseif ARGV[6] ~= '' and ARGV[6] ~= '0' then
  redis.call('ZINCRBY', KEYS[6], ARGV[6], ARGV[7])
end
return 1
"""


@dataclass(frozen=True)
class Started:
    """What arq's start-of-job transaction returns, read by the claim script."""

    job: bytes | None
    job_try: int
    aborted: bool


async def run_started_job(worker: Worker, job_id: str, score: int, started: Started) -> None:
    """arq 0.28's ``Worker.run_job`` after its opening transaction (see the docstring)."""
    self = worker  # arq's code, kept line for line below, says ``self``
    start_ms = timestamp_ms()
    v, job_try, abort_job = started.job, started.job_try, started.aborted
    if not self.allow_abort_jobs:
        abort_job = False

    function_name, enqueue_time_ms = "<unknown>", 0
    args: tuple[Any, ...] = ()
    kwargs: dict[Any, Any] = {}

    async def job_failed(exc: BaseException) -> None:
        self.jobs_failed += 1
        result_data_ = serialize_result(
            function=function_name,
            args=args,
            kwargs=kwargs,
            job_try=job_try,
            enqueue_time_ms=enqueue_time_ms,
            success=False,
            result=exc,
            start_ms=start_ms,
            finished_ms=timestamp_ms(),
            ref=f"{job_id}:{function_name}",
            serializer=self.job_serializer,
            queue_name=self.queue_name,
            job_id=job_id,
        )
        await asyncio.shield(self.finish_failed_job(job_id, result_data_))

    if not v:
        logger.warning("job %s expired", job_id)
        return await job_failed(JobExecutionFailed("job expired"))

    try:
        function_name, args, kwargs, enqueue_job_try, enqueue_time_ms = deserialize_job_raw(
            v, deserializer=self.job_deserializer
        )
    except SerializationError as e:
        logger.exception("deserializing job %s failed", job_id)
        return await job_failed(e)

    if abort_job:
        t = (timestamp_ms() - enqueue_time_ms) / 1000
        logger.info("%6.2fs ⊘ %s:%s aborted before start", t, job_id, function_name)
        return await job_failed(asyncio.CancelledError())

    try:
        function: Function | CronJob = self.functions[function_name]
    except KeyError:
        logger.warning("job %s, function %r not found", job_id, function_name)
        return await job_failed(JobExecutionFailed(f"function {function_name!r} not found"))

    if hasattr(function, "next_run"):
        # cron_job
        ref = function_name
        keep_in_progress: float | None = keep_cronjob_progress
    else:
        ref = f"{job_id}:{function_name}"
        keep_in_progress = None

    if enqueue_job_try and enqueue_job_try > job_try:
        job_try = enqueue_job_try
        await self.pool.setex(retry_key_prefix + job_id, RETRY_KEY_TTL, str(job_try))

    max_tries = self.max_tries if function.max_tries is None else function.max_tries
    if job_try > max_tries:
        t = (timestamp_ms() - enqueue_time_ms) / 1000
        logger.warning("%6.2fs ! %s max retries %d exceeded", t, ref, max_tries)
        self.jobs_failed += 1
        result_data = serialize_result(
            function_name,
            args,
            kwargs,
            job_try,
            enqueue_time_ms,
            False,
            JobExecutionFailed(f"max {max_tries} retries exceeded"),
            start_ms,
            timestamp_ms(),
            ref,
            self.queue_name,
            job_id=job_id,
            serializer=self.job_serializer,
        )
        return await asyncio.shield(self.finish_failed_job(job_id, result_data))

    result: Any = no_result
    exc_extra = None
    finish = False
    timeout_s = self.job_timeout_s if function.timeout_s is None else function.timeout_s
    incr_score: int | None = None
    job_ctx = {
        "job_id": job_id,
        "job_try": job_try,
        "enqueue_time": ms_to_datetime(enqueue_time_ms),
        "score": score,
    }
    ctx = {**self.ctx, **job_ctx}

    if self.on_job_start:
        await self.on_job_start(ctx)

    start_ms = timestamp_ms()
    success = False
    try:
        s = args_to_string(args, kwargs)
        extra = f" try={job_try}" if job_try > 1 else ""
        if (start_ms - score) > 1200:
            extra += f" delayed={(start_ms - score) / 1000:0.2f}s"
        logger.info("%6.2fs → %s(%s)%s", (start_ms - enqueue_time_ms) / 1000, ref, s, extra)
        self.job_tasks[job_id] = task = self.loop.create_task(
            function.coroutine(ctx, *args, **kwargs)
        )

        # run repr(result) and extra inside try/except as they can raise exceptions
        try:
            result = await asyncio.wait_for(task, timeout_s)
        except (Exception, asyncio.CancelledError) as e:
            exc_extra = getattr(e, "extra", None)
            if callable(exc_extra):
                exc_extra = exc_extra()
            raise
        else:
            result_str = "" if result is None or not self.log_results else truncate(repr(result))
        finally:
            del self.job_tasks[job_id]

    except (Exception, asyncio.CancelledError) as e:
        finished_ms = timestamp_ms()
        t = (finished_ms - start_ms) / 1000
        if self.retry_jobs and isinstance(e, Retry):
            incr_score = e.defer_score
            logger.info("%6.2fs ↻ %s retrying job in %0.2fs", t, ref, (e.defer_score or 0) / 1000)
            if e.defer_score:
                incr_score = e.defer_score + (timestamp_ms() - score)
            self.jobs_retried += 1
        elif job_id in self.aborting_tasks and isinstance(e, asyncio.CancelledError):
            logger.info("%6.2fs ⊘ %s aborted", t, ref)
            result = e
            finish = True
            self.aborting_tasks.remove(job_id)
            self.jobs_failed += 1
        elif self.retry_jobs and isinstance(e, asyncio.CancelledError | RetryJob):
            logger.info("%6.2fs ↻ %s cancelled, will be run again", t, ref)
            self.jobs_retried += 1
        else:
            logger.exception(
                "%6.2fs ! %s failed, %s: %s",
                t,
                ref,
                e.__class__.__name__,
                e,
                extra={"extra": exc_extra},
            )
            result = e
            finish = True
            self.jobs_failed += 1
    else:
        success = True
        finished_ms = timestamp_ms()
        logger.info("%6.2fs ← %s ● %s", (finished_ms - start_ms) / 1000, ref, result_str)
        finish = True
        self.jobs_complete += 1

    keep_result_forever = (
        self.keep_result_forever
        if function.keep_result_forever is None
        else function.keep_result_forever
    )
    result_timeout_s = (
        self.keep_result_s if function.keep_result_s is None else function.keep_result_s
    )
    result_data = None
    if result is not no_result and (keep_result_forever or result_timeout_s > 0):
        result_data = serialize_result(
            function_name,
            args,
            kwargs,
            job_try,
            enqueue_time_ms,
            success,
            result,
            start_ms,
            finished_ms,
            ref,
            self.queue_name,
            job_id=job_id,
            serializer=self.job_serializer,
        )

    if self.on_job_end:
        await self.on_job_end(ctx)

    await asyncio.shield(
        self.finish_job(
            job_id,
            finish,
            result_data,
            result_timeout_s,
            keep_result_forever,
            incr_score,
            keep_in_progress,
        )
    )

    if self.after_job_end:
        await self.after_job_end(ctx)
