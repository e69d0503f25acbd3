"""``cache:`` on a rule step: a duration, only on reads (GET tools), passed on with each call."""

from __future__ import annotations

from typing import Any

import pytest

from calhooks.workers.rules import EventContext, StepCall, run_rule
from tests.rules.helpers import FakeEvent, problems, rules

USERS = "cal_organizations_users_controller_get_organizations_users"
CREATE_OOO = "cal_organizations_users_ooocontroller_create_organization_user_ooo"


def one_step(extra: str, tool: str = USERS, with_: str = '{emails: ["a@acme.example"]}') -> str:
    return f"""
    version: 1
    env: {{org_id: 1}}
    rules:
      - name: r
        on: BOOKING_CREATED
        steps:
          - id: s
            tool: {tool}
            with: {with_}
            {extra}
    """


@pytest.mark.parametrize(
    ("text", "seconds"), [("90s", 90), ("10m", 600), ("1h", 3600), ("1d", 86400)]
)
def test_a_duration_becomes_seconds(text: str, seconds: float) -> None:
    [rule] = rules(one_step(f"cache: {text}")).rules
    assert rule.steps[0].cache == seconds


def test_without_cache_a_step_is_never_cached() -> None:
    [rule] = rules(one_step("")).rules
    assert rule.steps[0].cache is None


@pytest.mark.parametrize("value", ["10", "10 minutes", "0s", "2d", "true", "-5m"])
def test_anything_but_a_duration_up_to_a_day_is_refused(value: str) -> None:
    [problem] = problems(one_step(f"cache: {value}"))
    assert "'cache' must be a duration such as 30s, 10m or 1h" in problem.message


def test_only_reads_can_be_cached() -> None:
    with_ = '{userId: 1, start: "2031-01-01T00:00:00Z", end: "2031-01-02T00:00:00Z"}'
    [problem] = problems(one_step("cache: 10m", CREATE_OOO, with_))
    assert problem.message == (f"cache: {CREATE_OOO} is a POST, and only reads (GET) can be cached")


def test_cache_does_not_apply_to_a_log_step() -> None:
    text = """
    version: 1
    rules:
      - name: r
        on: BOOKING_CREATED
        steps:
          - log: hello
            cache: 10m
    """
    [problem] = problems(text)
    assert problem.message == "'cache' does not apply to a log step"


async def test_the_call_carries_the_duration() -> None:
    [rule] = rules(one_step("cache: 10m")).rules
    seen: list[StepCall] = []

    async def invoke(call: StepCall) -> Any:
        seen.append(call)
        return []

    event = FakeEvent("e1", "BOOKING_CREATED", None, {})
    await run_rule(rule, EventContext.of(event, {"org_id": 1}), invoke)
    assert [(c.tool, c.cache) for c in seen] == [(USERS, 600.0)]
