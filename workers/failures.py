"""What went wrong in a rule: the error that decides retry or dead letter, and where.

The rules engine raises ``RuleFailed`` chained to the cause: a tool call's error (which the
processor wraps in ``StepFailure`` to keep the call), or a value it could not evaluate or
validate. ``deciding_error`` walks that chain for the error ``workers.retries`` classifies
(transient or permanent) and the step a dead letter names; ``deferral_in`` finds a ``Defer``
(an event waiting its turn, not a failure).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from calhooks.workers.retries import Defer
from calhooks.workers.rules import RuleFailed, StepCall


@dataclass(frozen=True, slots=True)
class FailedAt:
    """Where a rule failed, for its dead letter."""

    step: str
    index: int | None
    tool: str | None
    params: Mapping[str, Any] | None


class StepFailure(Exception):
    """A tool call failed; carries the call so a dead letter can name it."""

    def __init__(self, call: StepCall, error: BaseException) -> None:
        self.call = call
        self.error = error
        super().__init__(f"{call.rule}/{call.step}: {error}")


def error_chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and what caused it, outermost first (each error once)."""
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def deciding_error(exc: BaseException) -> tuple[BaseException, FailedAt | None]:
    """The error that decides retry or not, and where in the rule it happened.

    The rules engine raises ``RuleFailed`` chained to what went wrong: a tool call's error
    (wrapped here in ``StepFailure``), or a value it could not evaluate or validate.
    """
    chain = error_chain(exc)
    for seen in chain:
        if isinstance(seen, StepFailure):
            call = seen.call
            return seen.error, FailedAt(call.step, call.index, call.tool, call.params)
    for seen in chain:
        if isinstance(seen, RuleFailed):
            outcomes = seen.result.outcomes
            last = outcomes[-1] if outcomes and outcomes[-1].status == "failed" else None
            where = FailedAt(
                seen.step,
                seen.index,
                last.tool if last else None,
                last.params if last else None,
            )
            return seen.__cause__ or seen, where
    return exc, None


def deferral_in(exc: BaseException) -> Defer | None:
    """The ``Defer`` somewhere in ``exc``'s chain: not a failure, a wait."""
    return next((seen for seen in error_chain(exc) if isinstance(seen, Defer)), None)
