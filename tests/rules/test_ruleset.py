"""Which rules an event matches: by trigger, then by condition - a condition over a field the
delivery lacks is no match, with the reason logged - and the triggers webhook sync uses."""

from __future__ import annotations

import pytest
from structlog.testing import capture_logs

from calhooks.workers.rules import RuleSet
from tests.rules.helpers import FakeEvent, Recorder, fixture_event, rules

RULES = """
rules:
  - name: any-booking
    on: [BOOKING_CREATED, BOOKING_RESCHEDULED]
    steps: [{log: x}]
  - name: intro-calls
    on: BOOKING_CREATED
    when: payload.type == "30min-intro"
    steps: [{log: x}]
  - name: sales-team
    on: BOOKING_CREATED
    when: payload.team.name == "Sales"
    steps: [{log: x}]
  - name: guarded-team
    on: BOOKING_CREATED
    when: has(payload.team) && payload.team.name == "Sales"
    steps: [{log: x}]
  - name: odd-condition
    on: BOOKING_CREATED
    when: payload.uid
    steps: [{log: x}]
  - name: forms
    on: FORM_SUBMITTED
    when: payload.responses["company-size"].value == "51-200"
    steps: [{log: x}]
"""


def test_matching_by_trigger_and_condition() -> None:
    loaded = rules(RULES)
    booking = fixture_event("BOOKING_CREATED")
    assert [rule.name for rule in loaded.matching(booking)] == ["any-booking", "intro-calls"]
    assert [rule.name for rule in loaded.matching(fixture_event("FORM_SUBMITTED"))] == ["forms"]
    assert [rule.name for rule in loaded.matching(fixture_event("BOOKING_RESCHEDULED"))] == [
        "any-booking"
    ]
    assert loaded.matching(fixture_event("MEETING_ENDED")) == []


def test_every_rule_gets_a_reason() -> None:
    matches = {m.rule.name: m for m in rules(RULES).evaluate(fixture_event("BOOKING_CREATED"))}
    assert matches["any-booking"].matched
    assert matches["intro-calls"].reason is None
    assert matches["sales-team"].reason == "when: no such field 'team'"
    assert matches["guarded-team"].reason == (
        'when is false: has(payload.team) && payload.team.name == "Sales"'
    )
    assert matches["odd-condition"].reason == (
        "when gave 'kQ3pZ7nR2sT8vW1xY4bC6d', not true or false"
    )
    assert matches["forms"].reason == "runs on FORM_SUBMITTED"


def test_a_missing_field_is_no_match_with_the_reason_logged() -> None:
    """Cal.com's payloads differ by code path: a missing field never raises, it is logged."""
    with capture_logs() as logs:
        matched = rules(RULES).matching(fixture_event("BOOKING_CREATED"))
    assert "sales-team" not in [rule.name for rule in matched]
    line = next(log for log in logs if log.get("rule") == "sales-team")
    assert line["event"] == "rule.not_matched"
    assert line["reason"] == "when: no such field 'team'"
    assert line["event_id"] == "fixture-BOOKING_CREATED"
    assert line["trigger"] == "BOOKING_CREATED"
    assert {log["rule"] for log in logs if log["event"] == "rule.matched"} == {
        "any-booking",
        "intro-calls",
    }
    assert not any(log.get("rule") == "forms" for log in logs)  # other triggers stay quiet


@pytest.mark.parametrize(
    "payload",
    [{}, {"type": None}, {"type": 5}, {"type": ["30min-intro"]}, {"team": None}, {"team": "x"}],
)
def test_odd_payloads_never_raise(payload: dict[str, object]) -> None:
    """Whatever shape a delivery has, matching answers (possibly "no")."""
    event = FakeEvent("odd", "BOOKING_CREATED", None, payload)
    assert [rule.name for rule in rules(RULES).matching(event)] == ["any-booking"]


def test_a_payload_too_deep_for_cel_matches_only_unconditional_rules() -> None:
    deep: object = 1
    for _ in range(300):
        deep = [deep]
    event = FakeEvent("deep", "BOOKING_CREATED", None, {"type": "30min-intro", "x": deep})
    matches = rules(RULES).evaluate(event)
    assert [m.rule.name for m in matches if m.matched] == ["any-booking"]
    assert "nested more than" in (matches[1].reason or "")


def test_triggers_are_the_union_of_the_rules_triggers() -> None:
    assert rules(RULES).triggers == frozenset(
        {"BOOKING_CREATED", "BOOKING_RESCHEDULED", "FORM_SUBMITTED"}
    )
    assert RuleSet().triggers == frozenset()


async def test_run_binds_the_event_and_uses_the_rules_env() -> None:
    loaded = rules(
        """
        env: {greeting: hello}
        rules:
          - name: r
            on: BOOKING_CREATED
            steps:
              - let: {text: "${{ env.greeting }} ${{ event.trigger }} ${{ env.org_id }}"}
        """,
        env={"org_id": 3},
    )
    with capture_logs() as logs:
        result = await loaded.run(loaded.rules[0], fixture_event("BOOKING_CREATED"), Recorder())
    assert result.outcomes[0].output == {"text": "hello BOOKING_CREATED 3"}
    done = next(log for log in logs if log["event"] == "rule.done")
    assert (done["rule"], done["event_id"]) == ("r", "fixture-BOOKING_CREATED")
