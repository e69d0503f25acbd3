"""Reconciliation's ``calhooks.*`` triggers in rules: accepted in ``on:``, a typo caught with a
suggestion, and left out of the triggers the org webhook subscribes to."""

from __future__ import annotations

from pathlib import Path

from calhooks.service.core.settings import Settings
from calhooks.workers.reconcile.triggers import RECONCILE_TRIGGERS
from calhooks.workers.rules.loader import rule_triggers
from calhooks.workers.rules.validator import trigger_problem
from tests.rules.helpers import problems, rules

RULES = """
rules:
  - name: greet
    on: [calhooks.MEMBERSHIP_CREATED, BOOKING_CREATED]
    steps: [{log: "welcome ${{ payload.after.userId }}"}]
"""


def test_every_reconcile_trigger_is_accepted() -> None:
    for trigger in RECONCILE_TRIGGERS:
        assert trigger_problem(trigger) is None


def test_the_attribute_option_triggers_are_known() -> None:
    assert trigger_problem("calhooks.ATTRIBUTE_OPTION_ASSIGNED") is None
    assert trigger_problem("calhooks.ATTRIBUTE_OPTION_UNASSIGNED") is None
    problem = trigger_problem("calhooks.ATTRIBUTE_OPTION_ASIGNED")
    assert problem is not None
    assert "did you mean 'calhooks.ATTRIBUTE_OPTION_ASSIGNED'?" in problem


def test_a_typo_in_a_reconcile_trigger_is_caught_with_a_suggestion() -> None:
    found = problems(
        """
        rules:
          - name: r
            on: [calhooks.MEMBERSHIP_CREATD]
            steps: [{log: x}]
        """
    )
    assert len(found) == 1
    assert "unknown trigger 'calhooks.MEMBERSHIP_CREATD'" in found[0].message
    assert "did you mean 'calhooks.MEMBERSHIP_CREATED'?" in found[0].message


def test_a_rules_file_with_them_checks_and_the_webhook_leaves_them_out(tmp_path: Path) -> None:
    assert rules(RULES).triggers == {"calhooks.MEMBERSHIP_CREATED", "BOOKING_CREATED"}
    path = tmp_path / "rules.yaml"
    path.write_text(RULES)
    assert rule_triggers(Settings(rules_file=path)) == ("BOOKING_CREATED",)
