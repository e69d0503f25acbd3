"""The example rules (examples/rules.yaml) on their example events: dry, with every call and
its evaluated parameters, and for real against the sandbox Cal.com; and the report."""

from __future__ import annotations

import json
from typing import Any

import pytest

from calhooks.service.cli.rules import calling
from calhooks.service.sandbox import DEPARTMENT_ATTRIBUTE_ID, SANDBOX_ORG_ID, option_id
from calhooks.workers.rules import RuleSet, StepOutcome, Unknown, load_rules
from calhooks.workers.rules.dryrun import (
    ORG_ID_UNKNOWN,
    DryRunReport,
    dry_run,
    format_report,
)
from tests.rules.helpers import EXAMPLES, FakeEvent, example_event, fixture_event
from tests.sandbox.server import RunningSandbox

USERS = "cal_organizations_users_controller_get_organizations_users"
CREATE_OOO = "cal_organizations_users_ooocontroller_create_organization_user_ooo"
LIST_OOO = "cal_organizations_users_ooocontroller_get_organization_user_ooo"
DELETE_OOO = "cal_organizations_users_ooocontroller_delete_organization_user_ooo"
UPDATE_OOO = "cal_organizations_users_ooocontroller_update_organization_user_ooo"
OPTIONS = "cal_organizations_attributes_options_controller_get_organization_attribute_options"
MEMBERSHIPS = "cal_organizations_memberships_controller_get_all_memberships"
ASSIGN = (
    "cal_organizations_attributes_options_controller_assign_organization_attribute_option_to_user"
)
UNASSIGN = (
    "cal_organizations_attributes_options_controller_"
    "unassign_organization_attribute_option_from_user"
)
UPDATE_MEMBERSHIP = "cal_organizations_memberships_controller_update_membership"
CREATE_USER = "cal_organizations_users_controller_create_organization_user"
TIME_OFF_UID = "tO7fQ2mK9xW4pL1sB8nV3c"


def examples(**env: Any) -> RuleSet:
    return load_rules(EXAMPLES / "rules.yaml", env={"org_id": SANDBOX_ORG_ID, **env})


def steps(report: DryRunReport, rule: str) -> list[StepOutcome]:
    entry = next(entry for entry in report.rules if entry.name == rule)
    assert entry.matched, entry.reason
    assert entry.result is not None
    return entry.result.outcomes


def calls(report: DryRunReport, rule: str) -> list[tuple[str, dict[str, Any]]]:
    return [
        (outcome.tool or "", outcome.params or {})
        for outcome in steps(report, rule)
        if outcome.status == "called"
    ]


def matched(report: DryRunReport) -> list[str]:
    return [entry.name for entry in report.matched]


# --- dry ----------------------------------------------------------------------------------


async def test_time_off_booking_dry() -> None:
    """The organizer is looked up; the OOO entry's parameters are shown, the user id
    unknown until the lookup runs."""
    report = await dry_run(examples(), example_event("time-off-booking-created"))
    assert matched(report) == ["time-off-creates-ooo", "org-attendees-become-members"]
    lookup, entries, move, create = calls(report, "time-off-creates-ooo")
    assert lookup == (USERS, {"emails": ["alice@acme.example"], "orgId": 1})
    assert entries == (LIST_OOO, {"userId": Unknown("steps.organizer[0].id"), "orgId": 1})
    assert move[0] == UPDATE_OOO  # runs instead of the create when an entry names the booking
    assert create == (
        CREATE_OOO,
        {
            "userId": Unknown("steps.organizer[0].id"),
            "start": "2031-03-03T09:00:00Z",
            "end": "2031-03-07T17:00:00Z",
            "reason": "vacation",
            "notes": f"Time off (booking {TIME_OFF_UID})",
            "orgId": 1,
        },
    )
    assert not report.failed


async def test_time_off_cancellation_dry() -> None:
    report = await dry_run(examples(), example_event("time-off-booking-cancelled"))
    assert matched(report) == ["time-off-cancel-deletes-ooo"]
    outcomes = steps(report, "time-off-cancel-deletes-ooo")
    assert [(o.step, o.tool, o.index) for o in outcomes if o.status == "called"] == [
        ("organizer", USERS, None),
        ("entries", LIST_OOO, None),
        ("deleted", DELETE_OOO, None),
    ]
    assert outcomes[2].note is not None
    assert outcomes[2].note.startswith("for each item of steps.entries.filter(")


async def test_team_form_dry() -> None:
    report = await dry_run(examples(), example_event("team-form-submitted"))
    assert matched(report) == ["team-form-assigns-department-and-role"]
    tools = [tool for tool, _ in calls(report, "team-form-assigns-department-and-role")]
    assert tools == [USERS, OPTIONS, MEMBERSHIPS, USERS, ASSIGN, UNASSIGN, UPDATE_MEMBERSHIP]
    role = calls(report, "team-form-assigns-department-and-role")[-1][1]
    assert role["role"] == "ADMIN"
    assert role["membershipId"] == Unknown("steps.picked.membership.id")


async def test_org_attendees_dry() -> None:
    report = await dry_run(examples(), example_event("booking-with-org-attendees"))
    assert matched(report) == ["org-attendees-become-members"]
    outcomes = steps(report, "org-attendees-become-members")
    assert outcomes[0].params == {
        "emails": ["frank@acme.example", "carol@acme.example"],
        "orgId": 1,
    }
    assert [(o.step, o.status) for o in outcomes] == [
        ("members", "called"),
        ("outsiders", "set"),
        ("reported", "logged"),
        ("invited", "skipped"),
    ]
    assert outcomes[3].reason == "when is false: env.invite_attendees"


@pytest.mark.parametrize(
    ("trigger", "rules_matched"),
    [
        ("BOOKING_CREATED", []),
        ("BOOKING_CANCELLED", []),
        ("FORM_SUBMITTED", []),
        ("BOOKING_RESCHEDULED", []),
        ("MEETING_ENDED", []),
        ("PING", []),
    ],
)
async def test_cal_com_example_deliveries_match_no_example_rule(
    trigger: str, rules_matched: list[str]
) -> None:
    """Cal.com's own examples: a 30-minute intro with an outside attendee, a sales routing
    form - none of them is time off, a team assignment or an org attendee."""
    report = await dry_run(examples(), fixture_event(trigger))
    assert matched(report) == rules_matched
    assert len(report.rules) == 4


async def test_example_conditions_on_variants_of_cal_com_examples() -> None:
    """The same deliveries, changed where the rules look, match."""
    event = fixture_event("BOOKING_CREATED")
    time_off = FakeEvent(event.id, event.trigger, None, {**event.payload, "type": "time-off"})
    assert "time-off-creates-ooo" in matched(await dry_run(examples(), time_off))
    colleague = {**event.payload["attendees"][0], "email": "Pat@ACME.example"}
    with_colleague = FakeEvent(
        event.id, event.trigger, None, {**event.payload, "attendees": [colleague]}
    )
    report = await dry_run(examples(), with_colleague)
    assert calls(report, "org-attendees-become-members")[0][1]["emails"] == ["pat@acme.example"]


async def test_without_org_id_the_dry_run_shows_where_it_comes_from() -> None:
    loaded = load_rules(EXAMPLES / "rules.yaml")
    report = await dry_run(loaded, example_event("time-off-booking-created"))
    assert calls(report, "time-off-creates-ooo")[0][1]["orgId"] == Unknown(ORG_ID_UNKNOWN)


async def test_report_text_and_json() -> None:
    report = await dry_run(examples(), example_event("time-off-booking-created"))
    text = format_report(report)
    assert text.splitlines()[0].startswith("event BOOKING_CREATED ")
    assert "rule time-off-creates-ooo: matches" in text
    assert f"  - organizer: call {USERS}" in text
    assert '      userId: "<unknown until run: steps.organizer[0].id>"' in text
    assert "rule team-form-assigns-department-and-role: no match (runs on FORM_SUBMITTED)" in text
    assert "no match" not in format_report(report, show_unmatched=False)
    as_json = json.loads(json.dumps(report.to_dict()))
    rule = next(r for r in as_json["rules"] if r["rule"] == "time-off-creates-ooo")
    assert rule["steps"][2]["params"]["userId"] == "<unknown until run: steps.organizer[0].id>"
    assert rule["steps"][1]["message"].startswith("time-off booking by someone")


# --- against the sandbox -----------------------------------------------------------------


def user_by_email(sandbox: RunningSandbox, email: str) -> Any:
    return next((user for user in sandbox.store.users.values() if user.email == email), None)


def ooo_entries(sandbox: RunningSandbox, user_id: int) -> list[Any]:
    return [entry for entry in sandbox.store.ooo.values() if entry.user_id == user_id]


async def test_time_off_creates_and_cancellation_deletes_against_the_sandbox(
    sandbox: RunningSandbox,
) -> None:
    """For real: the booking makes alice's OOO entry (whole days, notes naming the booking);
    its cancellation finds that entry by the notes and deletes it, leaving the others."""
    rules = examples()
    async with sandbox.client() as client:
        created = await dry_run(
            rules, example_event("time-off-booking-created"), invoke=calling(client)
        )
        assert not created.failed, format_report(created)
        [entry] = ooo_entries(sandbox, 101)
        assert entry.notes == f"Time off (booking {TIME_OFF_UID})"
        assert entry.reason == "vacation"
        assert entry.start.isoformat() == "2031-03-03T00:00:00+00:00"
        assert entry.end.isoformat() == "2031-03-07T23:59:59.999000+00:00"
        carol_before = ooo_entries(sandbox, 103)
        cancelled = await dry_run(
            rules, example_event("time-off-booking-cancelled"), invoke=calling(client)
        )
        assert not cancelled.failed, format_report(cancelled)
    assert ooo_entries(sandbox, 101) == []
    assert ooo_entries(sandbox, 103) == carol_before
    deleted = steps(cancelled, "time-off-cancel-deletes-ooo")[2]
    assert (deleted.step, deleted.index, deleted.tool) == ("deleted", 0, DELETE_OOO)
    assert [r.tool for r in sandbox.requests()] == [
        USERS,
        LIST_OOO,
        CREATE_OOO,
        USERS,
        USERS,
        LIST_OOO,
        DELETE_OOO,
    ]


async def test_a_cancellation_without_its_entry_is_logged(sandbox: RunningSandbox) -> None:
    async with sandbox.client() as client:
        report = await dry_run(
            examples(), example_event("time-off-booking-cancelled"), invoke=calling(client)
        )
    outcomes = steps(report, "time-off-cancel-deletes-ooo")
    assert [(o.step, o.status) for o in outcomes] == [
        ("organizer", "called"),
        ("entries", "called"),
        ("deleted", "skipped"),
        ("#4", "logged"),
    ]
    assert outcomes[3].message == "no out-of-office entry names the ended time-off booking"


async def test_time_off_by_a_non_member_is_logged(sandbox: RunningSandbox) -> None:
    event = example_event("time-off-booking-created")
    organizer = {**event.payload["organizer"], "email": "zed@elsewhere.example"}
    stranger = FakeEvent(event.id, event.trigger, None, {**event.payload, "organizer": organizer})
    async with sandbox.client() as client:
        report = await dry_run(examples(), stranger, invoke=calling(client))
    outcomes = steps(report, "time-off-creates-ooo")
    assert [(o.step, o.status) for o in outcomes] == [
        ("organizer", "called"),
        ("#2", "logged"),
        ("entries", "skipped"),
        ("found", "skipped"),
        ("moved", "skipped"),
        ("ooo", "skipped"),
    ]
    assert outcomes[1].params == {"email": "zed@elsewhere.example", "booking": TIME_OFF_UID}


async def test_team_form_against_the_sandbox(sandbox: RunningSandbox) -> None:
    """Bob (Sales, MEMBER) is moved to Support and made ADMIN; submitting again changes
    nothing (no second assignment, which Cal.com would refuse with 409)."""
    bob_membership = sandbox.store.memberships[12]

    def bobs_options() -> set[str]:
        return {a.option_id for a in sandbox.store.assignments.values() if a.member_id == 12}

    assert bobs_options() == {option_id("sales")}
    event = example_event("team-form-submitted")
    async with sandbox.client() as client:
        first = await dry_run(examples(), event, invoke=calling(client))
        assert not first.failed, format_report(first)
        assert bobs_options() == {option_id("support")}
        assert bob_membership.role == "ADMIN"
        again = await dry_run(examples(), event, invoke=calling(client))
    assert not again.failed, format_report(again)
    statuses = {o.step: o.status for o in steps(again, "team-form-assigns-department-and-role")}
    assert statuses["assign"] == "skipped"
    assert statuses["role"] == "skipped"
    assert len(sandbox.requests(ASSIGN)) == 1
    assert sandbox.requests(ASSIGN)[0].body == {
        "attributeId": DEPARTMENT_ATTRIBUTE_ID,
        "attributeOptionId": option_id("support"),
    }


async def test_org_attendee_reported_or_invited_against_the_sandbox(
    sandbox: RunningSandbox,
) -> None:
    """Frank (acme.example, not a member) is reported; with invite_attendees he is created,
    after which the same booking reports and invites nobody."""
    event = example_event("booking-with-org-attendees")
    async with sandbox.client() as client:
        reported = await dry_run(examples(), event, invoke=calling(client))
        assert not user_by_email(sandbox, "frank@acme.example")
        invited = await dry_run(examples(invite_attendees=True), event, invoke=calling(client))
        again = await dry_run(examples(invite_attendees=True), event, invoke=calling(client))
    report_steps = steps(reported, "org-attendees-become-members")
    assert report_steps[1].output == {"emails": ["frank@acme.example"]}
    assert (report_steps[2].status, report_steps[2].params) == (
        "logged",
        {
            "email": "frank@acme.example",
            "booking": "mE4tR8nQ2vY6kJ1pZ5wX9a",
            "organizer": "bob@acme.example",
        },
    )
    created = [o for o in steps(invited, "org-attendees-become-members") if o.step == "invited"]
    assert [(o.status, o.index, o.tool) for o in created] == [("called", 0, CREATE_USER)]
    frank = user_by_email(sandbox, "frank@acme.example")
    assert frank is not None
    assert sandbox.store.membership_of(SANDBOX_ORG_ID, frank.id) is not None
    assert steps(again, "org-attendees-become-members")[1].output == {"emails": []}
    assert len(sandbox.requests(CREATE_USER)) == 1


async def test_a_reschedule_moves_the_entry_against_the_sandbox(sandbox: RunningSandbox) -> None:
    """Created, then rescheduled: the entry is updated to the new dates and uid, not
    re-created; the new uid's cancellation then deletes it."""
    rules = examples()
    moved_event = example_event("time-off-booking-rescheduled")
    new_uid = moved_event.payload["uid"]
    async with sandbox.client() as client:
        created = await dry_run(
            rules, example_event("time-off-booking-created"), invoke=calling(client)
        )
        moved = await dry_run(rules, moved_event, invoke=calling(client))
        assert not created.failed, format_report(created)
        assert not moved.failed, format_report(moved)
        [entry] = ooo_entries(sandbox, 101)
        assert entry.notes == f"Time off (booking {new_uid})"
        assert entry.start.isoformat() == "2031-03-10T00:00:00+00:00"
        cancel = example_event("time-off-booking-cancelled")
        gone = FakeEvent(cancel.id, cancel.trigger, None, {**cancel.payload, "uid": new_uid})
        cancelled = await dry_run(rules, gone, invoke=calling(client))
        assert not cancelled.failed, format_report(cancelled)
    assert ooo_entries(sandbox, 101) == []
    writes = [r.tool for r in sandbox.requests() if r.method != "GET"]
    assert writes == [CREATE_OOO, UPDATE_OOO, DELETE_OOO]
