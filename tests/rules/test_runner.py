"""Running a rule: steps in order, outputs passed on, conditions that skip, for_each, let and
log steps, pagination, the StepCall seam, and how failures surface."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from structlog.testing import capture_logs

from calhooks.service.calcom.errors import CalcomError, ToolValidationError
from calhooks.workers.rules import (
    EvaluationError,
    EventContext,
    RuleFailed,
    RuleResult,
    StepCall,
    Unknown,
    run_rule,
)
from calhooks.workers.rules.dryrun import record_only
from calhooks.workers.rules.expressions import MAX_VALUE_DEPTH
from calhooks.workers.rules.runner import MAX_PAGES
from tests.rules.helpers import FakeEvent, Recorder, fixture_event, rules

USERS = "cal_organizations_users_controller_get_organizations_users"
OOO = "cal_organizations_users_ooocontroller_create_organization_user_ooo"
LIST_OOO = "cal_organizations_users_ooocontroller_get_organization_user_ooo"
MEMBERSHIPS = "cal_organizations_memberships_controller_get_all_memberships"
OPTIONS = "cal_organizations_attributes_options_controller_get_organization_attribute_options"

TIME_OFF = f"""
rules:
  - name: time-off
    on: BOOKING_CREATED
    steps:
      - id: organizer
        tool: {USERS}
        with:
          emails: ["${{{{ payload.organizer.email }}}}"]
      - tool: {OOO}
        when: size(steps.organizer) > 0
        with:
          userId: ${{{{ steps.organizer[0].id }}}}
          start: ${{{{ payload.startTime }}}}
          end: ${{{{ timestamp(payload.endTime) + duration("24h") }}}}
          reason: vacation
          notes: "booking ${{{{ payload.uid }}}} by ${{{{ payload.organizer.name }}}}"
"""


async def run(
    text: str,
    invoke: Any,
    event: FakeEvent | None = None,
    env: dict[str, Any] | None = None,
) -> RuleResult:
    loaded = rules(text, env={"org_id": 1, **(env or {})})
    event = event or fixture_event("BOOKING_CREATED")
    return await loaded.run(loaded.rules[0], event, invoke)


async def test_steps_run_in_order_and_pass_outputs_on() -> None:
    """A step's output is ``steps.<id>`` for later steps; each call carries its rule, step
    key, tool and evaluated parameters (orgId from env.org_id)."""
    recorder = Recorder({USERS: [{"id": 101, "email": "dana@acme.example"}], OOO: {"id": 5}})
    result = await run(TIME_OFF, recorder)
    assert recorder.calls == [
        StepCall(
            "time-off", "organizer", None, USERS, {"emails": ["dana@acme.example"], "orgId": 1}
        ),
        StepCall(
            "time-off",
            "#2",
            None,
            OOO,
            {
                "userId": 101,
                "start": "2025-10-14T14:00:00Z",
                "end": "2025-10-15T14:30:00.000Z",
                "reason": "vacation",
                "notes": "booking kQ3pZ7nR2sT8vW1xY4bC6d by Dana Organizer",
                "orgId": 1,
            },
        ),
    ]
    assert [(o.step, o.status, o.output) for o in result.outcomes] == [
        ("organizer", "called", [{"id": 101, "email": "dana@acme.example"}]),
        ("#2", "called", {"id": 5}),
    ]
    assert not result.failed
    assert len(result.calls) == 2


async def test_a_false_when_skips_the_step_with_the_reason() -> None:
    recorder = Recorder({USERS: []})
    result = await run(TIME_OFF, recorder)
    assert recorder.tools() == [USERS]
    skipped = result.outcomes[1]
    assert (skipped.step, skipped.status) == ("#2", "skipped")
    assert skipped.reason == "when is false: size(steps.organizer) > 0"


async def test_a_when_over_a_missing_field_skips_and_logs_the_reason() -> None:
    """A condition that cannot be evaluated is "no": the step is skipped, nothing raised."""
    text = """
    rules:
      - name: r
        on: BOOKING_CREATED
        steps:
          - id: team
            when: payload.team.name == "sales"
            log: sales booking
          - log: "team step ran: ${{ has(steps.team) }}"
    """
    with capture_logs() as logs:
        result = await run(text, Recorder())
    assert result.outcomes[0].status == "skipped"
    assert result.outcomes[0].reason == "when: no such field 'team'"
    assert result.outcomes[1].message == "team step ran: false"
    skip = next(log for log in logs if log["event"] == "rule.step.skipped")
    assert skip["reason"] == "when: no such field 'team'"
    assert skip["step"] == "team"
    assert skip["rule"] == "r"


async def test_a_non_boolean_when_skips() -> None:
    text = """
    rules:
      - name: r
        on: BOOKING_CREATED
        steps: [{log: x, when: payload.uid}]
    """
    result = await run(text, Recorder())
    assert result.outcomes[0].reason == "when gave 'kQ3pZ7nR2sT8vW1xY4bC6d', not true or false"


FOR_EACH = f"""
rules:
  - name: r
    on: BOOKING_CREATED
    steps:
      - id: lookups
        for_each: '["a@x", "b@y", "c@x"]'
        as: email
        when: email.endsWith("@x")
        tool: {USERS}
        with:
          emails: ["${{{{ email }}}}"]
      - id: summary
        let:
          found: ${{{{ steps.lookups }}}}
"""


async def test_for_each_calls_once_per_item_with_its_index() -> None:
    """Each item gets its own call and index; the output list has null where an item's
    when was false, so it lines up with the items."""
    recorder = Recorder({USERS: lambda call: [{"email": call.params["emails"][0]}]})
    result = await run(FOR_EACH, recorder)
    assert [(c.step, c.index, c.params["emails"]) for c in recorder.calls] == [
        ("lookups", 0, ["a@x"]),
        ("lookups", 2, ["c@x"]),
    ]
    assert [(o.index, o.status) for o in result.outcomes[:3]] == [
        (0, "called"),
        (1, "skipped"),
        (2, "called"),
    ]
    assert result.outcomes[3].output == {"found": [[{"email": "a@x"}], None, [{"email": "c@x"}]]}


@pytest.mark.parametrize(
    ("for_each", "reason", "output"),
    [
        ("'[]'", "for_each gave no items", []),
        ("payload.destinationCalendar", "for_each gave no items", []),
        ("payload.missing", "for_each: no such field 'missing'", None),
        ("payload.organizer", "for_each gave a map, not a list", None),
        ("payload.uid", "for_each gave a str, not a list", None),
    ],
)
async def test_for_each_without_a_list(for_each: str, reason: str, output: Any) -> None:
    """No items (or null) runs nothing and leaves an empty list; a missing field or a
    non-list skips the step, leaving no ``steps.<id>``."""
    text = FOR_EACH.replace("""'["a@x", "b@y", "c@x"]'""", for_each).replace(
        "found: ${{ steps.lookups }}", 'found: ${{ get(steps, "lookups", null) }}'
    )
    result = await run(text, Recorder())
    assert (result.outcomes[0].status, result.outcomes[0].reason) == ("skipped", reason)
    assert result.outcomes[1].output == {"found": output}


async def test_log_steps_write_their_message_and_fields() -> None:
    text = """
    rules:
      - name: r
        on: BOOKING_CREATED
        steps:
          - id: note
            log: "booking ${{ payload.uid }}"
            level: warning
            with:
              who: ${{ payload.attendees.map(a, a.email) }}
          - let:
              fields: ${{ steps.note }}
    """
    with capture_logs() as logs:
        result = await run(text, Recorder())
    line = next(log for log in logs if log["event"] == "rule.log")
    assert line["log_level"] == "warning"
    assert line["message"] == "booking kQ3pZ7nR2sT8vW1xY4bC6d"
    assert line["fields"] == {"who": ["sam@client.example"]}
    assert (line["rule"], line["step"]) == ("r", "note")
    assert result.outcomes[1].output == {"fields": {"who": ["sam@client.example"]}}


async def test_parameter_that_cannot_be_evaluated_fails_the_rule() -> None:
    """Values are not conditions: a missing field there stops the rule with RuleFailed,
    chained to the EvaluationError; nothing is called."""
    recorder = Recorder({USERS: [{"id": 1}]})
    text = TIME_OFF.replace("${{ payload.startTime }}", "${{ payload.team.start }}")
    with pytest.raises(RuleFailed) as caught:
        await run(text, recorder)
    failed = caught.value
    assert isinstance(failed.__cause__, EvaluationError)
    assert (failed.step, failed.index) == ("#2", None)
    assert "no such field 'team'" in str(failed)
    assert recorder.tools() == [USERS]
    assert [o.status for o in failed.result.outcomes] == ["called", "failed"]
    assert failed.result.failed


async def test_an_error_from_invoke_stops_the_rule_and_is_the_cause() -> None:
    """What invoke raises is kept as ``__cause__`` (the workers decide on retries from it)
    and the steps after it do not run."""
    error = CalcomError(tool=USERS, status=503, code="HTTP_503", message="down")
    recorder = Recorder({USERS: error})
    with pytest.raises(RuleFailed) as caught:
        await run(TIME_OFF, recorder)
    assert caught.value.__cause__ is error
    assert caught.value.step == "organizer"
    assert [o.status for o in caught.value.result.outcomes] == ["failed"]


async def test_cancellation_is_not_wrapped() -> None:
    async def cancelled(call: StepCall) -> Any:
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await run(TIME_OFF, cancelled)


async def test_parameters_the_tool_refuses_are_not_sent() -> None:
    """Evaluated parameters are checked against the tool's schema before invoke sees them."""
    recorder = Recorder({USERS: [{"id": "not-a-number"}]})
    with pytest.raises(RuleFailed) as caught:
        await run(TIME_OFF, recorder)
    assert isinstance(caught.value.__cause__, ToolValidationError)
    assert "userId" in str(caught.value)
    assert recorder.tools() == [USERS]


async def test_missing_org_id_says_how_to_set_it() -> None:
    loaded = rules(TIME_OFF)
    with pytest.raises(RuleFailed, match="set CALHOOKS_ORG_ID"):
        await loaded.run(loaded.rules[0], fixture_event("BOOKING_CREATED"), Recorder())


async def test_an_explicit_org_id_wins() -> None:
    text = TIME_OFF.replace(
        "        with:\n          emails:",
        "        with:\n          orgId: 7\n          emails:",
        1,
    )
    recorder = Recorder({USERS: []})
    await run(text, recorder)
    assert recorder.calls[0].params["orgId"] == 7


PAGED = f"""
rules:
  - name: r
    on: BOOKING_CREATED
    steps:
      - id: members
        tool: {MEMBERSHIPS}
        paginate: true
        with:
          take: 2
"""


async def test_paginate_fetches_every_page_with_distinct_step_keys() -> None:
    """Pages are separate calls (keys ``members``, ``members@page2`` ...) until a short page;
    the output is every item."""
    items = list(range(5))
    recorder = Recorder(
        {MEMBERSHIPS: lambda call: items[call.params["skip"] :][: call.params["take"]]}
    )
    result = await run(PAGED, recorder)
    assert [(c.step, c.page, c.params["skip"], c.params["take"]) for c in recorder.calls] == [
        ("members", 1, 0, 2),
        ("members@page2", 2, 2, 2),
        ("members@page3", 3, 4, 2),
    ]
    assert result.outcomes[0].output == items
    assert result.outcomes[0].calls == 3


async def test_paginate_uses_the_tools_largest_page_by_default() -> None:
    recorder = Recorder({MEMBERSHIPS: []})
    await run(PAGED.replace("        with:\n          take: 2\n", ""), recorder)
    assert recorder.calls[0].params["take"] == 250


async def test_paginate_gives_up_after_max_pages() -> None:
    recorder = Recorder({MEMBERSHIPS: [1, 2]})
    with pytest.raises(RuleFailed, match=f"more than {MAX_PAGES} pages"):
        await run(PAGED, recorder)
    assert len(recorder.calls) == MAX_PAGES


async def test_dry_run_outputs_are_unknown_and_so_is_what_depends_on_them() -> None:
    """With an invoke that answers Unknown, dependent values are Unknown, a condition on
    them is left to run time (noted), and a for_each over them stands for one item."""
    text = f"""
    rules:
      - name: r
        on: BOOKING_CREATED
        steps:
          - id: users
            tool: {USERS}
          - id: each
            for_each: steps.users
            as: user
            when: user.id > 0
            log: "user ${{{{ user.id }}}}"
            with:
              uid: ${{{{ payload.uid }}}}
          - when: size(steps.users) > 0
            tool: {LIST_OOO}
            with:
              userId: ${{{{ steps.users[0].id }}}}
    """
    result = await run(text, record_only)
    users, each, ooo = result.outcomes
    assert isinstance(users.output, Unknown)
    assert each.index is None
    assert each.message == "<unknown until run: text with ${{ user.id }}>"
    assert each.params == {"uid": "kQ3pZ7nR2sT8vW1xY4bC6d"}
    assert each.note == "for each item of steps.users; runs only if user.id > 0 (decided when run)"
    assert ooo.status == "called"
    assert ooo.params is not None
    assert ooo.params["userId"] == Unknown("steps.users[0].id")
    assert ooo.note == "runs only if size(steps.users) > 0 (decided when run)"


def test_event_context_exposes_the_event_fields() -> None:
    context = EventContext.of(fixture_event("BOOKING_CREATED"), {"org_id": 1})
    assert context.event == {
        "id": "fixture-BOOKING_CREATED",
        "trigger": "BOOKING_CREATED",
        "createdAt": "2025-10-10T09:12:44.301Z",
        "receivedAt": "2030-03-17T17:46:40.000Z",
        "source": "webhook",
    }
    assert context.env == {"org_id": 1}


async def test_a_payload_cel_cannot_take_fails_the_rule_not_the_process() -> None:
    deep: Any = 1
    for _ in range(400):
        deep = [deep]
    event = FakeEvent("e", "BOOKING_CREATED", None, {"deep": deep})
    loaded = rules("rules: [{name: r, on: BOOKING_CREATED, steps: [{log: x}]}]")
    with pytest.raises(RuleFailed, match="nested more than") as caught:
        await run_rule(loaded.rules[0], loaded.context(event), Recorder())
    assert caught.value.step == "(event)"


async def test_an_item_too_deep_for_cel_fails_the_rule() -> None:
    """A for_each item nested past what is handed to CEL fails the rule, not the process."""
    deep: Any = 1
    for _ in range(MAX_VALUE_DEPTH - 1):
        deep = [deep]
    event = FakeEvent("deep", "BOOKING_CREATED", None, {"deep": deep})
    loaded = rules(
        "rules: [{name: r, on: BOOKING_CREATED,"
        " steps: [{for_each: '[[[[payload.deep]]]]', log: x}]}]"
    )
    with pytest.raises(RuleFailed, match="nested more than") as caught:
        await run_rule(loaded.rules[0], loaded.context(event), Recorder())
    assert (caught.value.step, caught.value.index) == ("#1", 0)
