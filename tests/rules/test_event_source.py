"""``event.source`` in rules: ``"webhook"`` for a delivery, ``"reconcile"`` for an event a
reconciliation pass recovered (docs/rules.md, docs/reconciliation.md); ``rules check`` knows
the field, ``rules test`` and dry runs see it."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from calhooks.service.cli.main import app
from calhooks.service.events import RECONCILE_SOURCE, WEBHOOK_SOURCE
from calhooks.workers.rules import RulesError
from calhooks.workers.rules.dryrun import dry_run, format_report
from tests.rules.helpers import EXAMPLES, example_event, rules

RECOVERED_ONLY = """
    rules:
      - name: recovered-only
        on: [BOOKING_CREATED]
        when: event.source == "reconcile"
        steps:
          - log: "recovered ${{ payload.uid }} (${{ event.source }})"
"""


async def test_a_rule_on_the_source_runs_for_a_recovered_booking_only() -> None:
    loaded = rules(RECOVERED_ONLY)
    delivered = example_event("time-off-booking-created")
    recovered = replace(delivered, source=RECONCILE_SOURCE)
    assert delivered.source == WEBHOOK_SOURCE
    [no] = loaded.evaluate(delivered)
    assert not no.matched
    [yes] = loaded.evaluate(recovered)
    assert yes.matched
    report = await dry_run(loaded, recovered)
    assert report.to_dict()["event"]["source"] == "reconcile"
    [rule] = report.matched
    assert rule.result is not None
    [step] = rule.result.outcomes
    assert step.message == f"recovered {recovered.payload['uid']} (reconcile)"
    assert "(source reconcile)" in format_report(report).splitlines()[0]
    assert (await dry_run(loaded, delivered)).matched == []


def test_a_misspelt_source_is_caught_with_a_suggestion() -> None:
    with pytest.raises(RulesError) as caught:
        rules(RECOVERED_ONLY.replace("event.source", "event.sorce"))
    text = str(caught.value)
    assert "event has no field 'sorce'" in text
    assert "did you mean 'source'" in text


runner = CliRunner()


def test_rules_check_and_rules_test_know_the_source(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(RECOVERED_ONLY.replace("event.source", "event.sorce"))
    checked = runner.invoke(app, ["rules", "check", str(path)])
    assert checked.exit_code == 1
    assert "event has no field 'sorce'" in checked.stderr
    path.write_text(RECOVERED_ONLY)
    event = str(EXAMPLES / "events" / "time-off-booking-created.json")
    as_delivered = runner.invoke(app, ["rules", "test", str(path), "--event", event, "--json"])
    assert as_delivered.exit_code == 0, as_delivered.stderr
    report = json.loads(as_delivered.stdout)
    assert report["event"]["source"] == "webhook"
    assert [r["matched"] for r in report["rules"]] == [False]
    as_recovered = runner.invoke(
        app, ["rules", "test", str(path), "--event", event, "--source", "reconcile", "--json"]
    )
    assert as_recovered.exit_code == 0, as_recovered.stderr
    report = json.loads(as_recovered.stdout)
    assert report["event"]["source"] == "reconcile"
    assert [r["matched"] for r in report["rules"]] == [True]
    wrong = runner.invoke(app, ["rules", "test", str(path), "--event", event, "--source", "x"])
    assert wrong.exit_code != 0
    assert "--source takes `webhook` or `reconcile`" in wrong.stderr
