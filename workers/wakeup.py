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
can share a queue.

Everything else - how jobs are run, retried and finished, and the shutdown signals - is
arq's own code: only ``Worker.main``'s loop and ``_poll_iteration`` are replaced (their
bodies follow arq 0.28's; ``pyproject.toml`` pins arq below 0.29 for that reason).

``arq calhooks.workers.WorkerSettings`` (arq's own CLI) builds a plain ``arq.Worker`` and so polls
without waking; ``calhooks worker`` runs this class.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from typing import Any

import redis.exceptions
from arq.connections import create_pool, log_redis_info
from arq.constants import in_progress_key_prefix
from arq.utils import timestamp_ms
from arq.worker import Worker
from redis.commands.core import AsyncScript

from calhooks.service.events import WAKE_LIST_LENGTH, wake_key
from calhooks.workers.redistyped import blpop

logger = logging.getLogger("calhooks.worker")


# KEYS[1] queue. ARGV: now (ms), in-progress TTL (ms), in-progress key prefix, most to
# claim, most due jobs to look at. Returns {{id, score, id, score, ...}, due jobs seen}.
_CLAIM = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[5])
local room = tonumber(ARGV[4])
local claimed = {}
for _, id in ipairs(due) do
  if #claimed >= room * 2 then break end
  local progress = ARGV[3] .. id
  if redis.call('EXISTS', progress) == 0 then
    redis.call('PSETEX', progress, ARGV[2], '1')
    claimed[#claimed + 1] = id
    claimed[#claimed + 1] = redis.call('ZSCORE', KEYS[1], id)
  end
end
return {claimed, #due}
"""


class WakeableWorker(Worker):
    """An arq ``Worker`` that waits on the wake list, with its poll delay as a fallback."""

    def __init__(self, *args: Any, listen_timeout: float = 10.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.wake_key = wake_key(self.queue_name)
        self.listen_timeout = listen_timeout
        self.last_iteration: float = 0.0
        self.wakeups = 0
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._woken_by_token = False
        self._claim: AsyncScript | None = None
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
            keys=[self.queue_name],
            args=[
                timestamp_ms(),
                int(self.in_progress_timeout_s * 1000),
                in_progress_key_prefix,
                room,
                self.queue_read_limit,
            ],
        )
        # Due jobs were left for want of room: poll again as soon as a slot frees.
        self._backlog = len(claimed) // 2 < int(due)
        for raw_id, raw_score in zip(claimed[::2], claimed[1::2], strict=True):
            await self.sem.acquire()
            self.job_counter += 1
            job_id = raw_id.decode()
            task = self.loop.create_task(self.run_job(job_id, int(float(raw_score))))
            task.add_done_callback(lambda _: self._release_sem_dec_counter_on_complete())
            self.tasks[job_id] = task

    async def _listen(self) -> None:
        """Wait on the wake list while there is room for another job."""
        while True:
            await self._room.wait()
            try:
                token = await blpop(self.pool, self.wake_key, self.listen_timeout)
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError):
                logger.warning(
                    "worker.wake_list_unavailable: polling every %.3fs", self.poll_delay_s
                )
                await asyncio.sleep(max(self.poll_delay_s, 1.0))
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

    async def main(self) -> None:
        if self._pool is None:
            self._pool = await create_pool(
                self.redis_settings,
                job_deserializer=self.job_deserializer,
                job_serializer=self.job_serializer,
                default_queue_name=self.queue_name,
                expires_extra_ms=self.expires_extra_ms,
            )
        logger.info(
            "Starting worker for %d functions: %s", len(self.functions), ", ".join(self.functions)
        )
        await log_redis_info(self.pool, logger.info)
        self.ctx["redis"] = self.pool
        self.ctx["worker"] = self
        if self.on_startup:
            await self.on_startup(self.ctx)
        listener = asyncio.create_task(self._listen(), name="calhooks-wake-listener")
        try:
            while True:
                self.last_iteration = asyncio.get_running_loop().time()
                self._wake.clear()
                woken, self._woken_by_token = self._woken_by_token, False
                await self._poll_iteration()
                if self.full:
                    self._room.clear()
                    if woken:
                        await self._give_back_token()
                else:
                    self._room.set()
                if self.burst and await self._burst_done():
                    return
                await self._idle()
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener

    async def close(self) -> None:
        """arq's ``Worker.close``, closing the pool with ``aclose`` (``close`` is deprecated)."""
        if not self._handle_signals:
            self.handle_sig(signal.SIGUSR1)
        if not self._pool:
            return
        # Jobs cancelled by the shutdown end in CancelledError; arq re-runs them elsewhere.
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)
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
