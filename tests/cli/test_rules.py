"""``calhooks rules check`` and ``calhooks rules test`` (dry, and against the sandbox)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from calhooks.service.cli.main import app
from calhooks.service.core.settings import get_settings
from calhooks.service.events import event_from_body
from calhooks.service.sandbox import SANDBOX_ORG_ID
from tests.rules.helpers import EXAMPLES, FIXTURES
from tests.sandbox.server import RunningSandbox

runner = CliRunner()
RULES = str(EXAMPLES / "rules.yaml")
TIME_OFF = str(EXAMPLES / "events" / "time-off-booking-created.json")
AGAINST_SANDBOX = ["rules", "test", RULES, "--event", TIME_OFF, "--against", "sandbox"]


@pytest.fixture(autouse=True)
def clean_settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("CALHOOKS_ORG_ID", "CALHOOKS_RULES_ENV", "CALHOOKS_RULES_FILE"):
        monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_check_accepts_the_examples() -> None:
    result = runner.invoke(app, ["rules", "check", RULES])
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == (
        f"{RULES}: 4 rules, OK; triggers: BOOKING_CANCELLED, BOOKING_CREATED, "
        "BOOKING_REJECTED, BOOKING_REQUESTED, BOOKING_RESCHEDULED, FORM_SUBMITTED"
    )


def test_check_lists_every_problem_and_fails(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "rules:\n"
        "  - name: r\n"
        "    on: [BOOKING_CONFIRMED]\n"
        "    steps:\n"
        "      - tool: cal_organizations_users_controller_get_organizations_users\n"
        "        with: {emails: x, take: 0}\n"
    )
    result = runner.invoke(app, ["rules", "check", str(path)])
    assert result.exit_code == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert lines[0] == "3 problems in the rules"
    assert lines[1].startswith(f"  {path}:3: rule 'r': unknown trigger 'BOOKING_CONFIRMED'")
    assert lines[2] == f"  {path}:6: rule 'r' step #1: emails: expected array, got \"x\""
    assert lines[3].startswith(f"  {path}:6: rule 'r' step #1: take: 0 is less than")


def test_check_an_unreadable_file(tmp_path: Path) -> None:
    result = runner.invoke(app, ["rules", "check", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 1
    assert "cannot read the rules file" in result.stderr


def test_check_uses_the_settings_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A name only CALHOOKS_RULES_ENV defines is known to the check."""
    path = tmp_path / "rules.yaml"
    path.write_text("rules:\n  - {name: r, on: BOOKING_CREATED, steps: [{log: '${{ env.x }}'}]}\n")
    assert runner.invoke(app, ["rules", "check", str(path)]).exit_code == 1
    monkeypatch.setenv("CALHOOKS_RULES_ENV", '{"x": 1}')
    get_settings.cache_clear()
    assert runner.invoke(app, ["rules", "check", str(path)]).exit_code == 0


def test_dry_run_prints_the_calls_with_parameters(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CALHOOKS_ORG_ID", "42")
    get_settings.cache_clear()
    result = runner.invoke(app, ["rules", "test", RULES, "--event", TIME_OFF])
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    assert "rule time-off-creates-ooo: matches" in out
    assert "  - organizer: call cal_organizations_users_controller_get_organizations_users" in out
    assert '      emails: ["alice@acme.example"]' in out
    assert "      orgId: 42" in out
    assert '      notes: "Time off (booking tO7fQ2mK9xW4pL1sB8nV3c)"' in out
    assert (
        "rule time-off-cancel-deletes-ooo: no match (runs on BOOKING_CANCELLED, BOOKING_REJECTED)"
        in out
    )
    assert out.splitlines()[1] == "booking tO7fQ2mK9xW4pL1sB8nV3c"
    matching = runner.invoke(app, ["rules", "test", RULES, "--event", TIME_OFF, "--matching"])
    assert "no match" not in matching.stdout


def test_dry_run_as_json() -> None:
    result = runner.invoke(app, ["rules", "test", RULES, "--event", TIME_OFF, "--json"])
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["event"]["trigger"] == "BOOKING_CREATED"
    assert report["booking"] == {"uid": "tO7fQ2mK9xW4pL1sB8nV3c"}
    rules = {rule["rule"]: rule for rule in report["rules"]}
    assert rules["time-off-creates-ooo"]["matched"] is True
    create = next(s for s in rules["time-off-creates-ooo"]["steps"] if s.get("step") == "ooo")
    assert create["params"]["start"] == "2031-03-03T09:00:00Z"
    assert create["params"]["orgId"].startswith("<unknown until run")


def test_dry_run_on_a_stored_event(tmp_path: Path) -> None:
    """An event as `calhooks events show` prints it works as well as a delivery body."""
    raw = (FIXTURES / "FORM_SUBMITTED.json").read_bytes()
    stored = tmp_path / "event.json"
    stored.write_text(json.dumps(event_from_body(raw, received_at=time.time()).to_dict()))
    result = runner.invoke(app, ["rules", "test", RULES, "--event", str(stored)])
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith("event FORM_SUBMITTED ")
    assert "rule team-form-assigns-department-and-role: no match (when is false:" in result.stdout


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "is not JSON"),
        ("[1, 2]", "is not a Cal.com delivery or event"),
        ('{"payload": {}}', "is not a Cal.com delivery or event"),
        ('{"trigger": "X"}', "is not a Cal.com delivery or event"),
    ],
)
def test_events_that_are_not_events(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "event.json"
    path.write_text(content)
    result = runner.invoke(app, ["rules", "test", RULES, "--event", str(path)])
    assert result.exit_code == 1
    assert message in result.stderr


def test_against_takes_only_sandbox() -> None:
    result = runner.invoke(
        app, ["rules", "test", RULES, "--event", TIME_OFF, "--against", "production"]
    )
    assert result.exit_code == 1
    assert "--against takes `sandbox`" in result.stderr


def test_against_the_sandbox_makes_the_calls(sandbox: RunningSandbox) -> None:
    """With --against sandbox the OOO entry is really created, its output shown."""
    result = runner.invoke(
        app,
        [*AGAINST_SANDBOX, "--sandbox-url", sandbox.url, "--matching"],
    )
    assert result.exit_code == 0, result.stdout + result.stderr
    [entry] = [e for e in sandbox.store.ooo.values() if e.user_id == 101]
    assert entry.notes == "Time off (booking tO7fQ2mK9xW4pL1sB8nV3c)"
    assert "      userId: 101" in result.stdout
    assert f'→ {{"id": {entry.id}, ' in result.stdout
    assert all(
        record.path.startswith(f"/v2/organizations/{SANDBOX_ORG_ID}/")
        for record in sandbox.requests()
    )


def test_against_an_unreachable_sandbox() -> None:
    result = runner.invoke(app, [*AGAINST_SANDBOX, "--sandbox-url", "http://127.0.0.1:9"])
    assert result.exit_code == 1
    assert "no sandbox answers at http://127.0.0.1:9" in result.stderr


def test_against_something_that_is_not_a_sandbox(sandbox: RunningSandbox) -> None:
    """A URL without the sandbox's admin surface (a real Cal.com, say) is refused unused."""
    result = runner.invoke(app, [*AGAINST_SANDBOX, "--sandbox-url", f"{sandbox.url}/v2"])
    assert result.exit_code == 1
    assert "is not a calhooks sandbox" in result.stderr
    assert [record.path for record in sandbox.requests()] == ["/v2/_sandbox/rate-limit"]


def test_check_prints_json_with_json() -> None:
    """`--json` means the output, here the summary."""
    result = runner.invoke(app, ["rules", "check", str(EXAMPLES / "rules.yaml"), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert "time-off-creates-ooo" in summary["rules"]
    assert "BOOKING_CREATED" in summary["triggers"]


def test_dry_run_names_the_booking_a_reschedule_replaced() -> None:
    moved = str(EXAMPLES / "events" / "time-off-booking-rescheduled.json")
    result = runner.invoke(app, ["rules", "test", RULES, "--event", moved, "--matching"])
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[1] == "booking rS4kT8vX2yZ6bD9fH3jM5n (replaces tO7fQ2mK9xW4pL1sB8nV3c)"
    assert "rule time-off-creates-ooo: matches" in lines
    as_json = json.loads(
        runner.invoke(app, ["rules", "test", RULES, "--event", moved, "--json"]).stdout
    )
    assert as_json["booking"] == {
        "uid": "rS4kT8vX2yZ6bD9fH3jM5n",
        "replaces": "tO7fQ2mK9xW4pL1sB8nV3c",
    }
