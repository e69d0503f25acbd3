"""Rules per connection: ``connections:``/``tenants:`` on a rule, ``env`` per connection in
the file's ``connections:`` map, ``env.org_id`` from the connection, and the problems of
each (names checked against stored connections by ``reference_problems``)."""

from __future__ import annotations

import pytest

from calhooks.workers.rules import RulesError
from calhooks.workers.rules.scope import Origin, reference_problems
from tests.rules.helpers import FakeEvent, rules

LIST_USERS = "cal_organizations_users_controller_get_organizations_users"

RULES = f"""
env: {{domain: acme.example, region: us}}
connections:
  globex:
    env: {{domain: globex.example}}
  pcid-labs:
    env: {{region: eu}}
rules:
  - name: everyone
    on: BOOKING_CREATED
    steps:
      - tool: {LIST_USERS}
        with: {{emails: ["a@${{{{ env.domain }}}}"]}}
  - name: named
    on: BOOKING_CREATED
    connections: [globex, pcid-labs]
    steps: [{{log: x}}]
  - name: tenant
    on: BOOKING_CREATED
    tenants: agency
    steps: [{{log: x}}]
  - name: both
    on: BOOKING_CREATED
    connections: globex
    tenants: [agency]
    steps: [{{log: x}}]
"""

ACME = Origin("pcid-acme", "acme", "default", 1)
GLOBEX = Origin("pcid-globex", "globex", "default", 2)
LABS = Origin("pcid-labs", "acme-labs", "agency", 3)
EVENT = FakeEvent("e1", "BOOKING_CREATED", None, {"uid": "bk-1"})


def matched(origin: Origin | None) -> list[str]:
    return [rule.name for rule in rules(RULES, env={"org_id": 1}).matching(EVENT, origin=origin)]


def test_a_rule_runs_for_its_connections_by_name_or_pcid_and_for_its_tenants() -> None:
    assert matched(None) == ["everyone"]
    assert matched(ACME) == ["everyone"]
    assert matched(GLOBEX) == ["everyone", "named", "both"]
    assert matched(LABS) == ["everyone", "named", "tenant", "both"]
    # Same name in another tenant: a name designates the connections with it in any tenant.
    assert matched(Origin("pcid-other", "globex", "agency", 9)) == [
        "everyone",
        "named",
        "tenant",
        "both",
    ]


def test_the_reason_a_rule_is_not_for_the_connection_is_recorded() -> None:
    why_not: dict[str, str] = {}
    rules(RULES, env={"org_id": 1}).matching(EVENT, origin=ACME, why_not=why_not)
    assert why_not == {
        "named": "runs for connections globex, pcid-labs",
        "tenant": "runs for tenant agency",
        "both": "runs for connection globex or tenant agency",
    }


def test_env_per_connection_and_org_id_from_the_connection() -> None:
    """The file's env, then the connection's entry by name, then by PCID; ``org_id`` is the
    connection's own, never CALHOOKS_ORG_ID's (the environment organization's)."""
    loaded = rules(RULES, env={"org_id": 1, "region": "ca"})
    assert loaded.env_for(None) == {"domain": "acme.example", "region": "ca", "org_id": 1}
    assert loaded.env_for(GLOBEX) == {"domain": "globex.example", "region": "ca", "org_id": 2}
    assert loaded.env_for(LABS) == {"domain": "acme.example", "region": "eu", "org_id": 3}
    assert loaded.env_for(Origin("p", "globex", "default", None)) == {
        "domain": "globex.example",
        "region": "ca",
    }
    assert loaded.context(EVENT, GLOBEX).env["domain"] == "globex.example"


async def test_a_rule_run_for_a_connection_calls_with_its_env_and_org_id() -> None:
    loaded = rules(RULES, env={"org_id": 1})
    calls = []

    async def invoke(call: object) -> list[object]:
        calls.append(call)
        return []

    everyone = loaded.rules[0]
    await loaded.run(everyone, EVENT, invoke, origin=GLOBEX)
    await loaded.run(everyone, EVENT, invoke)
    assert [dict(call.params) for call in calls] == [  # type: ignore[attr-defined]
        {"emails": ["a@globex.example"], "orgId": 2},
        {"emails": ["a@acme.example"], "orgId": 1},
    ]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (
            "connections: [acme]\nrules: []\n",
            "rules.yaml:1: 'connections' must be a mapping of connection names (or PCIDs) to"
            " their settings, not a list",
        ),
        (
            "connections:\n  acme: {environment: {}}\nrules: []\n",
            "rules.yaml:2: unknown key 'environment'",
        ),
        (
            "connections:\n  acme:\n    env: {org_id: 5}\nrules: []\n",
            "rules.yaml:3: connections.acme.env.org_id: a connection's org id is the one stored"
            " with it (calhooks connections add --org-id)",
        ),
        (
            "connections:\n  acme:\n    env: {x: '${{ payload.uid }}'}\nrules: []\n",
            "rules.yaml:3: connections.acme.env.x holds ${{ }}: env values are constants",
        ),
        (
            "rules:\n  - name: r\n    on: BOOKING_CREATED\n    connections: []\n"
            "    steps: [{log: x}]\n",
            "rules.yaml:4: rule 'r': 'connections' lists nothing (leave it out for all)",
        ),
        (
            "rules:\n  - name: r\n    on: BOOKING_CREATED\n    tenants: [bad/name]\n"
            "    steps: [{log: x}]\n",
            "rules.yaml:4: rule 'r': tenants: invalid tenant name 'bad/name'",
        ),
        (
            "rules:\n  - name: r\n    on: BOOKING_CREATED\n    connections: [1]\n"
            "    steps: [{log: x}]\n",
            "rules.yaml:4: rule 'r': 'connections' holds names, not a number",
        ),
    ],
)
def test_problems_of_the_connection_keys(text: str, problem: str) -> None:
    with pytest.raises(RulesError) as error:
        rules(text)
    assert any(str(found).startswith(problem) for found in error.value.problems), [
        str(found) for found in error.value.problems
    ]


def test_each_connections_env_is_checked_with_the_rules_that_run_for_it() -> None:
    """A name only a connection's env defines is fine in a rule for that connection only; a
    value only that env gets wrong is reported once, naming the connection."""
    only_globex = f"""
    env: {{size: 10}}
    connections:
      globex:
        env: {{size: big, extra: 7}}
    rules:
      - name: globex-extra
        on: BOOKING_CREATED
        connections: [globex]
        steps:
          - log: "${{{{ env.extra }}}}"
      - name: everyone
        on: BOOKING_CREATED
        steps:
          - tool: {LIST_USERS}
            with: {{take: "${{{{ env.size }}}}"}}
    """
    with pytest.raises(RulesError) as error:
        rules(only_globex)
    assert [str(problem) for problem in error.value.problems] == [
        "rules.yaml:16: rule 'everyone' step #1: take: expected integer, got \"big\" (from"
        " env.size) (with the env of connection 'globex')"
    ]
    fixed = rules(fixed_text(only_globex))
    assert fixed.env_for(GLOBEX)["extra"] == 7
    unrestricted = "\n".join(
        line for line in fixed_text(only_globex).splitlines() if "[globex]" not in line
    )
    with pytest.raises(RulesError, match=r"env\.extra is not defined"):
        rules(unrestricted)


def fixed_text(text: str) -> str:
    return text.replace("size: big, ", "")


def test_reference_problems_name_what_no_stored_connection_or_tenant_has() -> None:
    loaded = rules(RULES, env={"org_id": 1})
    stored = [ACME, GLOBEX, LABS]
    assert reference_problems(loaded.source, loaded.rules, loaded.connections, stored) == []
    misspelt = rules(
        RULES.replace("connections: [globex, pcid-labs]", "connections: [globx, pcid-labs]")
        .replace("tenants: agency", "tenants: agncy")
        .replace("  globex:\n", "  globe:\n"),
        env={"org_id": 1},
    )
    found = reference_problems(misspelt.source, misspelt.rules, misspelt.connections, stored)
    assert [str(problem) for problem in sorted(found)] == [
        "rules.yaml:4: connections: no connection is named 'globe' (did you mean 'globex'?)",
        "rules.yaml:16: rule 'named': connections: no connection is named 'globx' (did you"
        " mean 'globex'?)",
        "rules.yaml:20: rule 'tenant': tenants: no connection belongs to tenant 'agncy' (did"
        " you mean 'agency'?)",
    ]
