"""A rule cannot stall a worker: expressions get a cost budget checked before they run, and a
``for_each`` an item limit; going over fails the rule with a reason naming the setting."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from calhooks.workers.rules import RuleFailed, StepCall
from calhooks.workers.rules.evaluation import BudgetExceeded, estimated_cost, largest_collection
from calhooks.workers.rules.expressions import compile_expression
from calhooks.workers.rules.runner import ForEachLimitExceeded, Limits
from tests.rules.helpers import FakeEvent, rules

NESTED = "payload.items.exists(a, payload.items.exists(b, a.n == b.n + 100000))"


def big_event(items: int = 3000) -> FakeEvent:
    return FakeEvent("e-big", "BOOKING_CREATED", None, {"items": [{"n": i} for i in range(items)]})


async def no_call(call: StepCall) -> Any:
    raise AssertionError(f"no tool may be called: {call}")


@pytest.mark.parametrize(
    ("source", "depth"),
    [
        ("size(payload.items) > 0", 0),
        ("payload.items.exists(a, a.n == 1)", 1),
        (NESTED, 2),
        ("payload.items.exists(a, a.n in payload.other)", 2),
        ("payload.items.map(a, a.n).filter(n, n > 1)", 1),
        ('payload.title == "all in one (exists(x))"', 0),
        ('payload.items.all(a, a.name.contains("in"))', 1),
        ("payload.items.exists(a, sets.contains(a.tags, payload.tags))", 2),
    ],
)
def test_comprehension_depth(source: str, depth: int) -> None:
    assert compile_expression(source).depth == depth


def test_the_estimate_is_the_largest_collection_to_the_power_of_the_depth() -> None:
    payload = big_event().payload
    sizes = {"payload": largest_collection(payload)}
    assert sizes == {"payload": 3000}
    assert estimated_cost(compile_expression(NESTED), sizes) == 9_000_000
    assert estimated_cost(compile_expression("payload.items.exists(a, a.n == 1)"), sizes) == 3000
    assert estimated_cost(compile_expression("env.x == 1"), sizes) == 1  # reads no payload


async def test_a_nested_exists_over_3000_items_fails_its_rule_without_running() -> None:
    ruleset = rules(
        f"""
        rules:
          - name: heavy
            on: BOOKING_CREATED
            steps:
              - log: found
                when: {NESTED}
        """
    )
    with pytest.raises(RuleFailed) as failed:
        await ruleset.run(ruleset.rules[0], big_event(), no_call)
    assert isinstance(failed.value.__cause__, BudgetExceeded)
    assert "9,000,000" in str(failed.value)
    assert "CALHOOKS_RULES_COST_LIMIT" in str(failed.value)


async def test_the_same_expression_over_a_small_list_runs() -> None:
    ruleset = rules(
        f"""
        rules:
          - name: light
            on: BOOKING_CREATED
            steps:
              - log: found
                when: {NESTED.replace("100000", "0")}
        """
    )
    result = await ruleset.run(ruleset.rules[0], big_event(items=50), no_call)
    assert [o.status for o in result.outcomes] == ["logged"]


async def test_a_rule_level_when_over_budget_matches_and_then_fails() -> None:
    ruleset = rules(
        f"""
        rules:
          - name: heavy-when
            on: BOOKING_CREATED
            when: {NESTED}
            steps:
              - log: never
        """
    )
    event = big_event()
    assert [rule.name for rule in ruleset.matching(event)] == ["heavy-when"]
    with pytest.raises(RuleFailed, match="CALHOOKS_RULES_COST_LIMIT") as failed:
        await ruleset.run(ruleset.rules[0], event, no_call)
    assert failed.value.step == "(when)"


async def test_a_for_each_over_the_limit_fails_its_rule() -> None:
    ruleset = replace(
        rules(
            """
            rules:
              - name: loop
                on: BOOKING_CREATED
                steps:
                  - log: item
                    for_each: payload.items
            """
        ),
        limits=Limits(for_each=100),
    )
    with pytest.raises(RuleFailed, match="CALHOOKS_RULES_FOR_EACH_LIMIT") as failed:
        await ruleset.run(ruleset.rules[0], big_event(items=101), no_call)
    assert isinstance(failed.value.__cause__, ForEachLimitExceeded)
    result = await ruleset.run(ruleset.rules[0], big_event(items=100), no_call)
    assert len(result.outcomes) == 100
