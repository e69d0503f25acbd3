"""Shared helpers of the rules tests: events built from real delivery bodies, a recording
``invoke``, and short ways to load rules from text."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from calhooks.workers.rules import RulesError, RuleSet, StepCall, parse_rules
from calhooks.workers.rules.model import Problem

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "webhooks"
EXAMPLES = ROOT / "examples"


@dataclass(frozen=True)
class FakeEvent:
    """The fields of ``calhooks.service.events.Event`` the rules read."""

    id: str
    trigger: str
    created_at: str | None
    payload: dict[str, Any]
    received_at: float = 1_900_000_000.0
    source: str = "webhook"


def event_from(body: Mapping[str, Any], event_id: str = "e1") -> FakeEvent:
    """An event as the intake normalises a delivery: the envelope's payload, or a flat body."""
    payload = body.get("payload")
    if isinstance(payload, dict):
        created = body.get("createdAt")
        return FakeEvent(event_id, body["triggerEvent"], created, payload)
    flat = {key: value for key, value in body.items() if key != "triggerEvent"}
    return FakeEvent(event_id, body["triggerEvent"], None, flat)


def fixture_body(trigger: str) -> dict[str, Any]:
    body: dict[str, Any] = json.loads((FIXTURES / f"{trigger}.json").read_text())
    return body


def fixture_event(trigger: str) -> FakeEvent:
    """Cal.com's example delivery for ``trigger`` (tests/fixtures/webhooks)."""
    return event_from(fixture_body(trigger), f"fixture-{trigger}")


def example_event(name: str) -> FakeEvent:
    """One of examples/events/*.json."""
    return event_from(json.loads((EXAMPLES / "events" / f"{name}.json").read_text()), name)


def rules(text: str, env: Mapping[str, Any] | None = None) -> RuleSet:
    return parse_rules(textwrap.dedent(text), source="rules.yaml", env=env)


def problems(text: str, env: Mapping[str, Any] | None = None) -> list[Problem]:
    """The problems loading ``text`` reports (fails the test if it loads)."""
    try:
        rules(text, env)
    except RulesError as error:
        return list(error.problems)
    raise AssertionError("the rules loaded without a problem")


Answer = Callable[[StepCall], Any]


class Recorder:
    """An ``invoke`` that records each call and answers from ``answers`` (tool -> value or
    function of the call); unknown tools answer ``None``."""

    def __init__(self, answers: Mapping[str, Any] | None = None) -> None:
        self.answers = dict(answers or {})
        self.calls: list[StepCall] = []

    async def __call__(self, call: StepCall) -> Any:
        self.calls.append(call)
        answer = self.answers.get(call.tool)
        if callable(answer):
            return answer(call)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    def tools(self) -> list[str]:
        return [call.tool for call in self.calls]
