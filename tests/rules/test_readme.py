"""The Rules page of the docs (docs/rules.md) stays true: its YAML examples load and do what
it says."""

from __future__ import annotations

import re

from calhooks.workers.rules import parse_rules
from calhooks.workers.rules.dryrun import dry_run
from calhooks.workers.rules.scope import Origin
from tests.rules.helpers import ROOT, example_event


def rules_section() -> str:
    return (ROOT / "docs" / "rules.md").read_text()


def yaml_blocks() -> list[str]:
    return re.findall(r"```yaml\n(.*?)```", rules_section(), re.DOTALL)


async def test_the_first_rule_loads_and_matches_the_example_event() -> None:
    first, _ = yaml_blocks()
    loaded = parse_rules(first, source="docs/rules.md", env={"org_id": 1})
    report = await dry_run(loaded, example_event("time-off-booking-created"))
    [entry] = report.rules
    assert entry.matched
    assert entry.result is not None
    assert [o.tool for o in entry.result.calls] == [
        "cal_organizations_users_controller_get_organizations_users",
        "cal_organizations_users_ooocontroller_create_organization_user_ooo",
    ]


def test_the_several_organizations_example_runs_for_its_connections_with_their_env() -> None:
    _, several = yaml_blocks()
    loaded = parse_rules(several, source="docs/rules.md", env={"org_id": 1})
    event = example_event("time-off-booking-created")
    globex = Origin("pcid-g", "globex", "default", 2)
    assert [rule.name for rule in loaded.matching(event, origin=globex)] == ["time-off-creates-ooo"]
    assert loaded.env_for(globex) == {"org_domain": "globex.example", "org_id": 2}
    assert loaded.matching(event, origin=Origin("pcid-x", "initech", "default", 4)) == []
    assert loaded.matching(event, origin=Origin("pcid-y", "initech", "agency", 5)) != []
    assert loaded.matching(event) == []  # the environment's organization is not named
