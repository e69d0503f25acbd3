"""Typed awaits for the redis.asyncio commands the workers use.

redis-py types hash and list commands as ``Awaitable[T] | T`` (one signature for its sync and
async clients), which ``mypy --strict`` will not await. These wrappers narrow them once.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, cast

import redis.asyncio as aioredis


async def hgetall(redis: aioredis.Redis, key: str) -> dict[bytes, bytes]:
    return await cast(Awaitable[dict[bytes, bytes]], redis.hgetall(key))


async def hget(redis: aioredis.Redis, key: str, field: str) -> bytes | None:
    return await cast(Awaitable[bytes | None], redis.hget(key, field))


async def hset(redis: aioredis.Redis, key: str, mapping: dict[str, Any]) -> int:
    return await cast(Awaitable[int], redis.hset(key, mapping=mapping))


async def hdel(redis: aioredis.Redis, key: str, *fields: str) -> int:
    return await cast(Awaitable[int], redis.hdel(key, *fields))


async def lrange(redis: aioredis.Redis, key: str, start: int, end: int) -> list[bytes]:
    return await cast(Awaitable[list[bytes]], redis.lrange(key, start, end))


async def blpop(redis: aioredis.Redis, key: str, seconds: float) -> list[bytes] | None:
    """BLPOP with a fractional timeout (Redis >= 6), which redis-py types as an int."""
    reply = redis.blpop([key], timeout=seconds)  # type: ignore[arg-type]
    return await cast(Awaitable[list[bytes] | None], reply)


async def hincrby(redis: aioredis.Redis, key: str, field: str, amount: int = 1) -> int:
    return await cast(Awaitable[int], redis.hincrby(key, field, amount))
