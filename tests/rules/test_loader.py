"""Loading rules files: the shape of a file, of a rule, of a step, and how problems come out
(every one at once, each with file, line, rule and step)."""

from __future__ import annotations

from pathlib import Path

import pytest

from calhooks.service.core.settings import Settings
from calhooks.workers.rules import (
    RulesError,
    load_rules,
    load_rules_from_settings,
    parse_rules,
    rules_env,
)
from calhooks.workers.rules.model import Constant, Dynamic, Interpolated, ListOf, MapOf, Problem
from tests.rules.helpers import EXAMPLES, problems, rules

USERS = "cal_organizations_users_controller_get_organizations_users"

GOOD = f"""
version: 1
env:
  domain: acme.example
  flags: {{invite: false}}
rules:
  - name: first
    description: The first rule.
    on: [BOOKING_CREATED, BOOKING_RESCHEDULED]
    when: payload.type == "time-off"
    steps:
      - id: user
        tool: {USERS}
        with:
          emails: ["${{{{ payload.organizer.email }}}}"]
          take: 10
      - log: "found ${{{{ size(steps.user) }}}} users"
        level: warning
        with: {{count: "${{{{ size(steps.user) }}}}"}}
      - id: values
        let:
          first: ${{{{ steps.user[0] }}}}
        when: size(steps.user) > 0
  - name: second
    on: FORM_SUBMITTED
    steps:
      - for_each: payload.responses
        as: response
        log: each
"""


def only(found: list[Problem], fragment: str) -> Problem:
    """The one problem whose message has ``fragment`` (and fails if others are unrelated)."""
    matching = [problem for problem in found if fragment in problem.message]
    assert len(matching) == 1, found
    unrelated = [p for p in found if p not in matching and not p.message.startswith("unknown key")]
    assert not unrelated, found
    return matching[0]


def test_a_good_file_loads_into_rules_and_steps() -> None:
    """Names, triggers, conditions, step kinds, ids and values come out as written."""
    loaded = rules(GOOD, env={"org_id": 7})
    first, second = loaded.rules
    assert first.name == "first"
    assert first.description == "The first rule."
    assert first.triggers == ("BOOKING_CREATED", "BOOKING_RESCHEDULED")
    assert first.when is not None
    assert first.when.source == 'payload.type == "time-off"'
    assert first.line == 7
    user, log, values = first.steps
    assert (user.kind, user.id, user.key, user.tool, user.line) == (
        "tool",
        "user",
        "user",
        USERS,
        12,
    )
    emails = user.values["emails"]
    assert isinstance(emails, ListOf)
    assert isinstance(emails.items[0], Dynamic)
    assert user.values["take"] == Constant(10, 16)
    assert (log.kind, log.key, log.level) == ("log", "#2", "warning")
    assert isinstance(log.message, Interpolated)
    assert isinstance(log.values["count"], MapOf) is False
    assert (values.kind, values.key) == ("let", "values")
    assert second.steps[0].loop_variable == "response"
    assert loaded.env == {"domain": "acme.example", "flags": {"invite": False}, "org_id": 7}
    assert loaded.triggers == frozenset(
        {"BOOKING_CREATED", "BOOKING_RESCHEDULED", "FORM_SUBMITTED"}
    )
    assert loaded.named("second") is second
    assert loaded.named("nope") is None
    assert len(loaded) == 2


def test_values_stay_constants_when_they_hold_no_expression() -> None:
    """Lists and mappings without ``${{ }}`` are one Constant; ``${{`` anywhere makes a tree."""
    loaded = rules(
        """
        rules:
          - name: r
            on: BOOKING_CREATED
            steps:
              - let:
                  plain: {a: [1, 2], b: x}
                  mixed: {a: [1, "${{ payload.uid }}"]}
                  text: "uid ${{ payload.uid }}!"
        """
    )
    values = loaded.rules[0].steps[0].values
    assert values["plain"] == Constant({"a": [1, 2], "b": "x"}, 7)
    assert isinstance(values["mixed"], MapOf)
    assert isinstance(values["text"], Interpolated)


def test_when_may_be_wrapped_in_the_template_syntax() -> None:
    loaded = rules(
        """
        rules:
          - name: r
            on: BOOKING_CREATED
            when: ${{ payload.type == "x" }}
            steps: [{log: hi}]
        """
    )
    assert loaded.rules[0].when is not None
    assert loaded.rules[0].when.source == 'payload.type == "x"'


def test_an_empty_rules_list_is_valid() -> None:
    """``rules: []`` is a valid file with no rules and no triggers."""
    loaded = rules("rules: []")
    assert loaded.rules == ()
    assert loaded.triggers == frozenset()


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("", 0, "the file is empty"),
        ("- a\n- b\n", 1, "must be a mapping with 'rules:', not a list"),
        ("env: {}\n", 1, "missing 'rules:'"),
        ("rules: {}\n", 1, "'rules' must be a list, not a mapping"),
        ("rule: []\nrules: []\n", 1, "unknown key 'rule' (did you mean 'rules'?)"),
        ("version: 2\nrules: []\n", 1, "unsupported version 2"),
        ("env: [1]\nrules: []\n", 1, "'env' must be a mapping"),
        ("env:\n  bad-name: 1\nrules: []\n", 2, "not an identifier"),
        ("env:\n  x: '${{ 1 }}'\nrules: []\n", 2, "env values are constants"),
        ("rules: [1]\n", 1, "rule #1 must be a mapping, not a number"),
        ("rules:\n  - a: [1\n", 3, "invalid YAML"),
    ],
)
def test_file_shape_problems(text: str, line: int, fragment: str) -> None:
    problem = only(problems(text), fragment)
    assert problem.line == line
    assert problem.source == "rules.yaml"


RULE = """
rules:
  - name: r
    on: BOOKING_CREATED
    steps:
      - log: hi
"""


@pytest.mark.parametrize(
    ("old", "new", "line", "rule", "fragment"),
    [
        ("  - name: r\n", "  - nam: r\n", 3, "#1", "missing 'name'"),
        ("name: r", "name: 'has space'", 3, "#1", "must be 1-100 letters"),
        ("name: r", "name: 12", 3, "#1", "must be 1-100 letters"),
        ("    on: BOOKING_CREATED\n", "", 3, "r", "missing 'on'"),
        ("on: BOOKING_CREATED", "on: []", 4, "r", "'on' lists no trigger"),
        ("on: BOOKING_CREATED", "on: [1]", 4, "r", "a trigger must be a string"),
        ("    steps:\n      - log: hi\n", "", 3, "r", "missing 'steps'"),
        ("      - log: hi\n", "        []\n", 6, "r", "'steps' must be a non-empty list"),
        ("on: BOOKING_CREATED", "on: BOOKING_CREATED\n    whn: x", 5, "r", "unknown key 'whn'"),
        ("on: BOOKING_CREATED", "on: BOOKING_CREATED\n    when: 1", 5, "r", "must be a CEL"),
        ("on: BOOKING_CREATED", "on: BOOKING_CREATED\n    when: 'a ${{ b }}'", 5, "r", "one CEL"),
        ("on: BOOKING_CREATED", "on: BOOKING_CREATED\n    description: [1]", 5, "r", "string"),
    ],
)
def test_rule_shape_problems(old: str, new: str, line: int, rule: str, fragment: str) -> None:
    """Each problem names the rule (``#n`` until it has a name) and its line."""
    problem = only(problems(RULE.replace(old, new)), fragment)
    assert (problem.line, problem.rule, problem.step) == (line, rule, None)


@pytest.mark.parametrize(
    ("step", "line", "label", "fragment"),
    [
        ("- 1", 6, "step #1", "a step must be a mapping"),
        ("- id: x", 6, "step 'x'", "exactly one of 'tool', 'log' or 'let' (found none)"),
        ("- {log: a, let: {b: 1}}", 6, "step #1", "(found 'log' and 'let')"),
        ("- {id: 1x, log: a}", 6, "step #1", "must be an identifier"),
        ("- {id: in, log: a}", 6, "step #1", "reserved word"),
        ("- {log: a, tol: x}", 6, "step #1", "unknown key 'tol' (did you mean 'tool'?)"),
        ("- {log: ''}", 6, "step #1", "'log' must be a non-empty message"),
        ("- {log: [a]}", 6, "step #1", "'log' must be a non-empty message"),
        ("- {log: a, level: loud}", 6, "step #1", "level 'loud' is not one of"),
        ("- {let: {}}", 6, "step #1", "'let' must be a mapping"),
        ("- {let: {a-b: 1}}", 6, "step #1", "let name 'a-b' is not an identifier"),
        ("- {let: {a: 1}, with: {b: 2}}", 6, "step #1", "'with' does not apply to a let step"),
        ("- {log: a, paginate: true}", 6, "step #1", "'paginate' does not apply"),
        ("- {tool: x, paginate: yes}", 6, "step #1", "'paginate' must be true or false"),
        ("- {tool: [x]}", 6, "step #1", "'tool' must be a string"),
        ("- {log: a, with: [1]}", 6, "step #1", "'with' must be a mapping"),
        ("- {log: a, as: x}", 6, "step #1", "'as' names the loop variable of 'for_each'"),
        ("- {log: a, for_each: payload.x, as: payload}", 6, "step #1", "would hide"),
        ("- {log: a, for_each: payload.x, as: 'a b'}", 6, "step #1", "must be an identifier"),
        ("- {log: a, when: 'x +'}", 6, "step #1", "when: CEL syntax error"),
        ("- {log: a, for_each: '[1'}", 6, "step #1", "for_each: CEL syntax error"),
        ("- {log: 'a ${{ b'}", 6, "step #1", "has no closing }}"),
        ("- {log: a, with: {x: '${{ 1 + }}'}}", 6, "step #1", "with.x: CEL syntax error"),
        ("- {log: a, with: {x: [{y: '${{ }}'}]}}", 6, "step #1", "with.x.y: empty"),
    ],
)
def test_step_shape_problems(step: str, line: int, label: str, fragment: str) -> None:
    """Each problem names the rule, the step (by id or position) and the line."""
    problem = only(problems(RULE.replace("- log: hi", step)), fragment)
    assert (problem.line, problem.rule, problem.step) == (line, "r", label)


def test_duplicate_names_and_ids() -> None:
    text = """
    rules:
      - name: r
        on: BOOKING_CREATED
        steps:
          - {id: a, log: x}
          - {id: a, log: y}
      - name: r
        on: BOOKING_CREATED
        steps: [{log: z}]
    """
    found = problems(text)
    assert [(p.line, p.rule, p.step) for p in found] == [(7, "r", "step 'a'"), (8, "r", None)]
    assert "id 'a' is already step #1's" in found[0].message
    assert "another rule has this name (line 3)" in found[1].message


def test_every_problem_is_reported_at_once() -> None:
    """A file with several problems lists them all, in line order, and loads nothing."""
    text = """
    rules:
      - name: one
        on: BOOKING_CONFIRMED
        steps:
          - tool: cal_nope
      - name: two
        on: PING
        when: paylod.x
        steps:
          - {log: x, level: loud}
    """
    with pytest.raises(RulesError) as caught:
        rules(text)
    error = caught.value
    assert [p.line for p in error.problems] == [4, 6, 8, 9, 11]
    text_form = str(error)
    assert text_form.splitlines()[0] == "5 problems in the rules"
    assert "rules.yaml:6: rule 'one' step #1: unknown tool 'cal_nope'" in text_form
    assert "rules.yaml:9: rule 'two': when: unknown name 'paylod' (did you mean 'payload'?)" in (
        text_form
    )


def test_problem_text() -> None:
    assert str(Problem("f.yaml", 3, "bad", "r", "step 'x'")) == "f.yaml:3: rule 'r' step 'x': bad"
    assert str(Problem("f.yaml", 0, "unreadable")) == "f.yaml: unreadable"


def test_load_rules_reads_files_and_reports_unreadable_ones(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(RULE)
    assert [rule.name for rule in load_rules(path).rules] == ["r"]
    with pytest.raises(RulesError, match="cannot read the rules file"):
        load_rules(tmp_path / "missing.yaml")
    with pytest.raises(RulesError, match="cannot read the rules file"):
        load_rules(tmp_path)
    path.write_bytes(b"#" * (2 * 1024 * 1024))
    with pytest.raises(RulesError, match="limit"):
        load_rules(path)
    bad = tmp_path / "bad.yaml"
    bad.write_text("rules: {}\n")
    with pytest.raises(RulesError) as caught:
        load_rules(bad)
    assert caught.value.problems[0].source == str(bad)


def test_settings_env_overrides_the_file_env(tmp_path: Path) -> None:
    """CALHOOKS_RULES_ENV lays over the file's env:, CALHOOKS_ORG_ID is env.org_id."""
    path = tmp_path / "rules.yaml"
    path.write_text("env:\n  a: 1\n  b: 2\n  org_id: 5\n" + RULE)
    settings = Settings(rules_file=path, rules_env={"b": 3}, org_id=9)
    assert rules_env(settings) == {"b": 3, "org_id": 9}
    loaded = load_rules_from_settings(settings)
    assert loaded is not None
    assert loaded.env == {"a": 1, "b": 3, "org_id": 9}
    assert load_rules_from_settings(Settings(rules_file=None)) is None
    without_org = load_rules_from_settings(Settings(rules_file=path))
    assert without_org is not None
    assert without_org.env["org_id"] == 5


def test_settings_read_the_rules_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CALHOOKS_RULES_FILE", "/etc/calhooks/rules.yaml")
    monkeypatch.setenv("CALHOOKS_RULES_ENV", '{"invite_attendees": true}')
    settings = Settings()
    assert settings.rules_file == Path("/etc/calhooks/rules.yaml")
    assert settings.rules_env == {"invite_attendees": True}


def test_the_example_rules_file_loads() -> None:
    """examples/rules.yaml is valid, with and without CALHOOKS_ORG_ID."""
    loaded = load_rules(EXAMPLES / "rules.yaml")
    assert loaded.triggers == frozenset(
        {
            "BOOKING_CREATED",
            "BOOKING_CANCELLED",
            "BOOKING_REJECTED",
            "BOOKING_REQUESTED",
            "BOOKING_RESCHEDULED",
            "FORM_SUBMITTED",
        }
    )
    assert parse_rules((EXAMPLES / "rules.yaml").read_bytes(), env={"org_id": 1}).env["org_id"] == 1
