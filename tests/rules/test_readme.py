"""The Rules page of the docs (docs/rules.md) stays true: its YAML examples load and do what
it says."""

from __future__ import annotations

import re

from calhooks.workers.rules import parse_rules
from calhooks.workers.rules.dryrun import dry_run
from tests.rules.helpers import ROOT, example_event


def rules_section() -> str:
    return (ROOT / "docs" / "rules.md").read_text()


def yaml_blocks() -> list[str]:
    return re.findall(r"```yaml\n(.*?)```", rules_section(), re.DOTALL)


async def test_the_first_rule_loads_and_matches_the_example_event() -> None:
    [first] = yaml_blocks()
    loaded = parse_rules(first, source="docs/rules.md", env={"org_id": 1})
    report = await dry_run(loaded, example_event("time-off-booking-created"))
    [entry] = report.rules
    assert entry.matched
    assert entry.result is not None
    assert [o.tool for o in entry.result.calls] == [
        "cal_organizations_users_controller_get_organizations_users",
        "cal_organizations_users_ooocontroller_create_organization_user_ooo",
    ]
