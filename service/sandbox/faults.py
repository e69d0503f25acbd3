"""Fault injection: make chosen Cal.com calls slow, fail, vanish or queue, on purpose.

A ``FaultRule`` applies to every API call (the default), to one tool (``tool``) or to the
paths matching a glob (``path``, e.g. ``/v2/organizations/*/users*``). When a rule *fires*
on a call it adds ``latency`` seconds and may answer instead of Cal.com: ``status`` (429
with or without ``Retry-After`` / ``X-RateLimit-Reset-Default``, 500, 503 ...) or ``drop``
(the connection is closed with no answer at all). ``rate`` fires it on a share of calls
(reproducibly with ``seed``); ``times`` only on the next N calls, so a test can script an
exact sequence ("the next two calls to X get 500, then it recovers"). ``concurrency`` caps
how many matching calls are handled at once; the rest wait their turn, like a saturated
server (the rule records the peak it saw).

Rules are checked in the order they were added; latencies add up and the first firing rule
that answers decides the answer. Rules can be added from any thread (tests run the sandbox
in a uvicorn thread); firing happens on the server's loop.
"""

from __future__ import annotations

import asyncio
import random
import threading
import uuid
from collections.abc import AsyncIterator, Iterable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from calhooks.service.calcom.tools import OPERATIONS


class FaultRule(BaseModel):
    """One fault: where it applies, when it fires, and what it does then."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(default_factory=lambda: uuid.uuid4().hex[:12])
    tool: str | None = Field(None, description="Only calls to this tool.")
    path: str | None = Field(None, description="Only request paths matching this glob.")
    latency: float = Field(0.0, ge=0, le=600, description="Seconds added before answering.")
    status: int | None = Field(None, ge=400, le=599, description="Answer with this status.")
    drop: bool = Field(False, description="Close the connection without answering.")
    retry_after: float | None = Field(None, ge=0, description="Retry-After on the answer.")
    reset: float | None = Field(None, ge=0, description="X-RateLimit-Reset-Default on a 429.")
    rate: float = Field(1.0, ge=0, le=1, description="Share of matching calls it fires on.")
    times: int | None = Field(None, ge=1, description="Fire on the next N calls only.")
    seed: int | None = Field(None, description="Seed for `rate`, for reproducible runs.")
    concurrency: int | None = Field(None, ge=1, description="Matching calls handled at once.")

    _fired: int = PrivateAttr(0)
    _in_flight: int = PrivateAttr(0)
    _peak: int = PrivateAttr(0)
    _random: random.Random = PrivateAttr()
    _semaphore: asyncio.Semaphore | None = PrivateAttr(None)

    def model_post_init(self, context: Any, /) -> None:
        self._random = random.Random(self.seed)  # noqa: S311 - simulation, not security

    @field_validator("tool")
    @classmethod
    def _known_tool(cls, value: str | None) -> str | None:
        if value is not None and value not in OPERATIONS:
            raise ValueError(f"unknown tool {value!r}")
        return value

    @model_validator(mode="after")
    def _one_answer(self) -> Self:
        if self.drop and self.status is not None:
            raise ValueError("a rule either drops the connection or answers a status, not both")
        if not (self.latency or self.status or self.drop or self.concurrency):
            raise ValueError("a rule needs latency, status, drop or concurrency")
        return self

    @property
    def fires(self) -> bool:
        """Whether the rule does anything per call (a pure concurrency cap never fires)."""
        return bool(self.latency or self.status or self.drop)

    @property
    def remaining(self) -> int | None:
        return None if self.times is None else max(0, self.times - self._fired)

    def matches(self, tool: str | None, path: str) -> bool:
        if self.tool is not None and self.tool != tool:
            return False
        return self.path is None or fnmatchcase(path, self.path)

    def to_dict(self) -> dict[str, Any]:
        data = self.model_dump()
        data.update(
            fired=self._fired, remaining=self.remaining, inFlight=self._in_flight, peak=self._peak
        )
        return data

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one of the rule's ``concurrency`` places for the duration."""
        if self._semaphore is None:
            self._semaphore = asyncio.Semaphore(self.concurrency or 1)
        async with self._semaphore:
            self._in_flight += 1
            self._peak = max(self._peak, self._in_flight)
            try:
                yield
            finally:
                self._in_flight -= 1

    def _try_fire(self) -> bool:
        if not self.fires or self.remaining == 0:
            return False
        if self.rate < 1 and self._random.random() >= self.rate:
            return False
        self._fired += 1
        return True


@dataclass(slots=True)
class Effect:
    """What the firing rules do to one call."""

    latency: float = 0.0
    status: int | None = None
    drop: bool = False
    retry_after: float | None = None
    reset: float | None = None

    @property
    def answers(self) -> bool:
        return self.drop or self.status is not None


class FaultInjector:
    """The active rules, and their application to each API call."""

    def __init__(self, rules: Iterable[FaultRule] = ()) -> None:
        self._rules: list[FaultRule] = list(rules)
        self._lock = threading.Lock()

    @property
    def rules(self) -> list[FaultRule]:
        with self._lock:
            return list(self._rules)

    def add(self, rule: FaultRule | None = None, /, **fields: Any) -> FaultRule:
        """Add ``rule`` (or one built from ``fields``); returns it, e.g. to read its stats."""
        rule = rule or FaultRule.model_validate(fields)
        with self._lock:
            self._rules.append(rule)
        return rule

    def remove(self, rule_id: str) -> bool:
        with self._lock:
            kept = [r for r in self._rules if r.id != rule_id]
            removed = len(kept) != len(self._rules)
            self._rules = kept
        return removed

    def clear(self) -> None:
        with self._lock:
            self._rules = []

    @asynccontextmanager
    async def engage(self, tool: str | None, path: str) -> AsyncIterator[Effect]:
        """Apply the matching rules around one call: wait for caps, add latency, decide."""
        if not self._rules:
            yield Effect()
            return
        with self._lock:
            matching = [rule for rule in self._rules if rule.matches(tool, path)]
        async with AsyncExitStack() as stack:
            for rule in matching:
                if rule.concurrency:
                    await stack.enter_async_context(rule.slot())
            effect = self._decide(matching)
            if effect.latency:
                await asyncio.sleep(effect.latency)
            yield effect

    def _decide(self, matching: list[FaultRule]) -> Effect:
        effect = Effect()
        with self._lock:
            for rule in matching:
                answers = rule.drop or rule.status is not None
                if (answers and effect.answers) or not rule._try_fire():
                    continue  # an answering rule after the decided one keeps its turn
                effect.latency += rule.latency
                if answers:
                    effect.status, effect.drop = rule.status, rule.drop
                    effect.retry_after, effect.reset = rule.retry_after, rule.reset
        return effect
