"""Which triggers each organization's webhook subscribes to: the rules that run for it."""

from __future__ import annotations

from pathlib import Path

import pytest

from calhooks.service.calcom.client import Credentials
from calhooks.service.connections.store import Connection, ConnectionInfo
from calhooks.service.subscriptions.errors import DesiredStateError
from calhooks.service.subscriptions.rule_triggers import load_rule_triggers
from calhooks.service.subscriptions.targets import ENVIRONMENT, Target
from tests.subscriptions.conftest import make_settings

RULES = """
rules:
  - name: everyone
    on: BOOKING_CREATED
    steps: [{log: created}]
  - name: globex-only
    on: BOOKING_CANCELLED
    connections: [globex]
    steps: [{log: cancelled}]
  - name: agency-tenant
    on: MEETING_ENDED
    tenants: [agency]
    steps: [{log: ended}]
  - name: labs-by-pcid
    on: FORM_SUBMITTED
    connections: [pcid-labs]
    steps: [{log: form}]
"""


def target(pcid: str, name: str, tenant: str = "default") -> Target:
    info = ConnectionInfo(pcid, name, tenant, "api_key", 2, None, "2026-12-01T00:00:00Z")
    return Target(Connection(info, Credentials(api_key="cal_test_not_used")))


def test_each_organization_subscribes_to_the_triggers_of_the_rules_for_it(
    tmp_path: Path,
) -> None:
    """A rule for Globex does not subscribe Acme's webhook (nor the environment's) to its
    trigger; names, PCIDs and tenants are applied as the workers apply them."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    settings = make_settings("http://127.0.0.1:9", rules_file=rules)
    assert ENVIRONMENT.rule_triggers(settings) == ("BOOKING_CREATED",)
    assert target("pcid-acme", "acme").rule_triggers(settings) == ("BOOKING_CREATED",)
    assert target("pcid-globex", "globex").rule_triggers(settings) == (
        "BOOKING_CANCELLED",
        "BOOKING_CREATED",
    )
    assert target("pcid-x", "x", tenant="agency").rule_triggers(settings) == (
        "BOOKING_CREATED",
        "MEETING_ENDED",
    )
    assert target("pcid-labs", "labs").rule_triggers(settings) == (
        "BOOKING_CREATED",
        "FORM_SUBMITTED",
    )
    # What the whole file uses (the prerequisites check, the dev banner): every rule's.
    assert load_rule_triggers(settings) == (
        "BOOKING_CANCELLED",
        "BOOKING_CREATED",
        "FORM_SUBMITTED",
        "MEETING_ENDED",
    )


def test_an_organization_no_rule_runs_for_is_told_so(tmp_path: Path) -> None:
    """Acme's webhook cannot be made when every rule is for Globex: one clear reason."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "rules:\n  - name: g\n    on: BOOKING_CREATED\n    connections: [globex]\n"
        "    steps: [{log: x}]\n"
    )
    settings = make_settings("http://127.0.0.1:9", rules_file=rules)
    acme = target("pcid-acme", "acme")
    with pytest.raises(DesiredStateError, match=r"no rule in CALHOOKS_RULES_FILE .* for this org"):
        acme.desired(settings, acme.rule_triggers(settings))(None)
    globex = target("pcid-globex", "globex")
    assert globex.desired(settings, globex.rule_triggers(settings))(None).triggers == (
        "BOOKING_CREATED",
    )
