"""Small helpers the worker tests share."""

from __future__ import annotations

from calhooks.workers.ledger import EventState, Ledger


async def end_now(ledger: Ledger, state: EventState) -> None:
    """``Ledger.end`` in a pipeline of its own (the workers end inside the attempt's last write)."""
    async with ledger.redis.pipeline(transaction=False) as pipe:
        ledger.end(state, pipe)
        await pipe.execute()
