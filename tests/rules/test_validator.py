"""Validation at load: triggers, tools, parameters and literal values against the registry,
and the names, functions, steps, env and event fields expressions use. Each problem names
the file, the line, the rule and the step."""

from __future__ import annotations

from typing import Any

import pytest

from calhooks.service.calcom.webhooks import WEBHOOK_TRIGGERS
from calhooks.workers.rules.model import Problem
from calhooks.workers.rules.validator import trigger_problem
from tests.rules.helpers import problems, rules

OOO = "cal_organizations_users_ooocontroller_create_organization_user_ooo"
USERS = "cal_organizations_users_controller_get_organizations_users"
MEMBERSHIP = "cal_organizations_memberships_controller_update_membership"
CREATE_USER = "cal_organizations_users_controller_create_organization_user"
DELETE_OOO = "cal_organizations_users_ooocontroller_delete_organization_user_ooo"

#: Line 7 is the step under test: ``{step}`` is substituted there.
TEMPLATE = """
env:
  reason: vacation
rules:
  - name: r
    on: BOOKING_CREATED
    steps:
      - id: first
        tool: {users}
      {step}
      - id: last
        log: done
"""


def check(step: str, env: dict[str, Any] | None = None) -> list[Problem]:
    text = TEMPLATE.format(users=USERS, step=step.replace("\n", "\n      "))
    return problems(text, env)


def one(step: str, fragment: str, *, label: str = "step 's'", line: int = 10) -> Problem:
    """The single problem of ``step`` (written at line 10 with ``id: s``)."""
    found = check(step)
    assert len(found) == 1, found
    problem = found[0]
    assert fragment in problem.message, problem.message
    assert problem.source == "rules.yaml"
    assert (problem.line, problem.rule, problem.step) == (line, "r", label)
    return problem


def valid(step: str, env: dict[str, Any] | None = None) -> None:
    text = TEMPLATE.format(users=USERS, step=step.replace("\n", "\n      "))
    rules(text, env)


# --- triggers -------------------------------------------------------------------------------


def test_every_cal_com_trigger_is_accepted() -> None:
    for trigger in WEBHOOK_TRIGGERS:
        assert trigger_problem(trigger) is None


@pytest.mark.parametrize(
    ("trigger", "fragment"),
    [
        (
            "BOOKING_CONFIRMED",
            "unknown trigger 'BOOKING_CONFIRMED' (did you mean 'BOOKING_CREATED'?)",
        ),
        ("booking_created", "unknown trigger 'booking_created'"),
        ("PING", "PING is Cal.com's test delivery"),
    ],
)
def test_triggers_cal_com_does_not_have_are_refused(trigger: str, fragment: str) -> None:
    found = problems(
        f"""
        rules:
          - name: r
            on: [BOOKING_CREATED, {trigger}]
            steps: [{{log: x}}]
        """
    )
    assert [(p.line, p.rule, p.step) for p in found] == [(4, "r", None)]
    assert fragment in found[0].message


# --- tools and parameters -----------------------------------------------------------------


def test_unknown_tool_with_suggestion() -> None:
    one(
        "- id: s\n  tool: cal_organizations_users_controller_get_organization_users",
        f"unknown tool 'cal_organizations_users_controller_get_organization_users' (did you mean"
        f" '{USERS}'?)",
    )


def test_unknown_parameter_with_suggestion() -> None:
    one(
        f"- id: s\n  tool: {USERS}\n  with:\n    email: [a@b.c]",
        f"{USERS} has no parameter 'email' (did you mean 'emails'?)",
        line=13,
    )


def test_missing_required_parameters_each_reported() -> None:
    found = check(f"- id: s\n  tool: {OOO}\n  with:\n    userId: 1")
    assert sorted(p.message for p in found) == [
        f"missing required parameter 'end' of {OOO}",
        f"missing required parameter 'start' of {OOO}",
    ]
    assert {(p.line, p.step) for p in found} == {(10, "step 's'")}


def test_org_id_may_be_left_out() -> None:
    """orgId defaults to env.org_id (CALHOOKS_ORG_ID), so it is not required in a rule."""
    valid(f"- id: s\n  tool: {USERS}")
    valid(f"- id: s\n  tool: {USERS}\n  with:\n    orgId: ${{{{ env.org_id }}}}")


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("reason: holiday", "reason: 'holiday' is not one of 'unspecified', 'vacation'"),
        ("userId: abc", 'userId: expected integer, got "abc"'),
        ("userId: 1.5", "userId: expected integer, got 1.5"),
        ("notes: null", "notes: expected string, got null"),
        ("notes: [a]", 'notes: expected string, got ["a"]'),
        ("start: 2025-07-01", "start: '2025-07-01' is not a UTC date-time"),
        ("start: '2025-07-01T00:00:00+02:00'", "is not a UTC date-time"),
        ("toUserId: true", "toUserId: expected integer, got true"),
    ],
)
def test_literal_values_are_checked_against_the_schema(value: str, fragment: str) -> None:
    """Wrong types, values outside an enum and patterns are found at load, with the line."""
    found = check(ooo_step(value))
    assert len(found) == 1, found
    assert fragment in found[0].message
    assert found[0].step == "step 's'"
    assert found[0].line > 10


def ooo_step(value: str) -> str:
    """A create-OOO step with valid required parameters, ``value`` added or replacing one."""
    values = {
        "userId": "userId: 1",
        "start": "start: '2025-07-01T00:00:00Z'",
        "end": "end: '2025-07-02T00:00:00Z'",
    }
    values[value.split(":")[0]] = value
    body = "\n    ".join(values.values())
    return f"- id: s\n  tool: {OOO}\n  with:\n    {body}"


@pytest.mark.parametrize(
    ("tool", "value", "fragment"),
    [
        (USERS, "take: 0", "take: 0 is less than the minimum of 1"),
        (USERS, "take: 1001", "greater than the maximum of 1000"),
        (USERS, "emails: a@b.c", 'emails: expected array, got "a@b.c"'),
        (USERS, "emails: [1]", "emails[0]: expected string, got 1"),
        (USERS, "teamIds: []", "should be non-empty"),
        (USERS, "attributeQueryOperator: XOR", "'XOR' is not one of"),
        (CREATE_USER, "email: not-an-email", "is not a 'email'"),
        (MEMBERSHIP, "membershipId: 1\n    role: owner", "'owner' is not one of"),
    ],
)
def test_more_literal_checks(tool: str, value: str, fragment: str) -> None:
    found = check(f"- id: s\n  tool: {tool}\n  with:\n    {value}")
    assert len(found) == 1, found
    assert fragment in found[0].message


def test_valid_literals_pass() -> None:
    valid(
        f"- id: s\n  tool: {OOO}\n  with:\n    userId: 1\n    start: 2025-07-01T00:00:00Z\n"
        "    end: '2025-07-02T00:00:00.000Z'\n    reason: sick\n    notes: text\n    toUserId: 2"
    )


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ('userId: "id ${{ payload.organizer.id }}"', "text with ${{ }} makes a string, but userId"),
        ("userId: [1]", "userId: expected integer, got [1]"),
        ("userId: ['${{ payload.organizer.id }}']", "userId: a list, but it is integer"),
        ("notes: {a: '${{ payload.uid }}'}", "notes: a mapping, but it is string"),
        ('reason: ${{ "holiday" }}', "reason: 'holiday' is not one of"),
        ('reason: ${{ env.reason + "s" }}', "'vacations' is not one of"),
        ("reason: ${{ env.reason + 1 }}", "Unsupported operation"),
        ('notes: ${{ duration("1h") }}', "a duration is not a JSON value"),
    ],
)
def test_values_known_at_load_are_checked(value: str, fragment: str) -> None:
    """Interpolated text must go to a string; expressions of constants and env are
    evaluated at load and checked like literals."""
    found = check(ooo_step(value))
    assert len(found) == 1, found
    assert fragment in found[0].message
    assert found[0].line >= 11


def test_list_items_of_text_must_be_allowed_strings() -> None:
    found = check(
        f"- id: s\n  tool: {USERS}\n  with:\n    teamIds: ['team ${{{{ payload.uid }}}}']"
    )
    assert "teamIds[0]: text makes a string, but the items are integer" in found[0].message


def test_paginate_needs_a_list_tool_and_no_for_each() -> None:
    one(
        f"- id: s\n  tool: {OOO}\n  paginate: true\n  with: {{userId: 1,"
        " start: 2025-07-01T00:00:00Z, end: 2025-07-01T00:00:00Z}",
        "is not a list tool with take and skip",
    )
    one(
        f"- id: s\n  tool: {USERS}\n  paginate: true\n  for_each: '[1]'",
        "paginate and for_each cannot be combined",
    )
    valid(f"- id: s\n  tool: {USERS}\n  paginate: true")


# --- expressions ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("step", "fragment"),
    [
        ("- id: s\n  log: x\n  when: paylod.type == 'a'", "when: unknown name 'paylod' (did you"),
        ("- id: s\n  log: x\n  when: payload.x.lowercase() == 'a'", "unknown function lowercase()"),
        (
            "- id: s\n  log: x\n  when: steps.frist.size() > 0",
            "no step has id 'frist' (did you mean",
        ),
        ("- id: s\n  log: x\n  when: size(steps.last) > 0", "steps.last runs later (step #3)"),
        ("- id: s\n  log: x\n  when: has(steps.s)", "steps.s is this step's own output"),
        ("- id: s\n  log: x\n  when: steps['nope'] == 1", "no step has id 'nope'"),
        ("- id: s\n  log: x\n  when: env.reson == 'a'", "env.reson is not defined (did you mean"),
        ("- id: s\n  log: x\n  when: event.type == 'a'", "event has no field 'type'"),
        ("- id: s\n  log: x\n  with: {a: '${{ item }}'}", "a: unknown name 'item'"),
        ("- id: s\n  log: '${{ nope }}'", "log: unknown name 'nope'"),
        ("- id: s\n  let: {a: '${{ [nope] }}'}", "a: unknown name 'nope'"),
        ("- id: s\n  log: x\n  for_each: item", "for_each: unknown name 'item'"),
    ],
)
def test_expression_problems(step: str, fragment: str) -> None:
    """Names, functions, step ids, env names and event fields are checked in every
    expression: when, for_each, log messages, log fields, let values and parameters."""
    one(step, fragment, line=10 + step.count("\n"))


def test_the_loop_variable_is_visible_only_in_its_step() -> None:
    valid(
        "- id: s\n  for_each: payload.attendees\n  as: a\n  when: a.email != ''\n"
        "  log: '${{ a.name }}'"
    )
    found = check(
        "- id: s\n  for_each: payload.attendees\n  as: a\n  log: x\n- id: t\n  log: '${{ a.name }}'"
    )
    assert [(p.step, p.message) for p in found] == [("step 't'", "log: unknown name 'a'")]


def test_steps_are_not_available_in_a_rules_condition() -> None:
    found = problems(
        """
        rules:
          - name: r
            on: BOOKING_CREATED
            when: size(steps.x) > 0
            steps: [{id: x, log: y}]
        """
    )
    assert [(p.line, p.rule, p.step) for p in found] == [(5, "r", None)]
    assert "steps are not available in a rule's condition" in found[0].message


def test_env_org_id_is_always_defined() -> None:
    """env.org_id comes from CALHOOKS_ORG_ID, which a machine checking a file may not set."""
    valid("- id: s\n  log: '${{ env.org_id }}'")


def test_env_from_settings_counts_as_defined() -> None:
    assert check("- id: s\n  log: '${{ env.extra }}'")
    valid("- id: s\n  log: '${{ env.extra }}'", env={"extra": 1})


def test_references_to_steps_with_problems_are_not_reported_twice() -> None:
    """A step that failed to parse is reported once; later uses of its id are not errors."""
    found = check("- id: s\n  log: x\n  level: loud\n- id: t\n  log: '${{ steps.s }}'")
    assert [p.message for p in found] == ["level 'loud' is not one of debug, info, warning, error"]


def test_comprehension_variables_are_allowed() -> None:
    valid(
        "- id: s\n  log: x\n  when: payload.attendees.exists(a, a.email.endsWith('@x'))"
        " && [1, 2].map(n, n * 2).all(m, m > 0)"
    )


def test_extension_functions_are_allowed() -> None:
    valid(
        "- id: s\n  log: x\n  when: >-\n    payload.organizer.email.lowerAscii().split('@')[1] =="
        " 'x' && math.greatest([1, 2]) == 2 && [1, 1].distinct().size() == 1"
        " && get(payload, 'a.b', 1) == 1 && optional.of(1).orValue(2) == 1"
    )


@pytest.mark.parametrize("value", ["'..'", "'.'", "''", "'a/b'"])
def test_a_literal_path_parameter_must_stay_in_its_segment(value: str) -> None:
    """The shared path-segment rule applies at load too: ``..`` would address the attribute."""
    step = (
        "- id: s\n"
        "  tool: cal_organizations_attributes_options_controller_"
        "delete_organization_attribute_option\n"
        "  with:\n"
        "    attributeId: cdepartmentattribute00001\n"
        f"    optionId: {value}"
    )
    found = check(step)
    assert len(found) == 1, found
    assert found[0].message.startswith("optionId: ")
