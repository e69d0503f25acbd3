"""The step ledger: recorded steps are reused, interrupted creates are looked up, not repeated."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import pytest
import redis.asyncio as aioredis

from calhooks.service.calcom import CalcomClient, get_tool
from calhooks.service.calcom.errors import CalcomError, ToolValidationError
from calhooks.workers.ledger import EventState, ExactlyOnce, Ledger, StepKey
from calhooks.workers.redistyped import hgetall
from calhooks.workers.retries import Defer
from tests.workers.helpers import end_now

CREATE_OOO = get_tool("cal_organizations_users_ooocontroller_create_organization_user_ooo")
DELETE_OOO = get_tool("cal_organizations_users_ooocontroller_delete_organization_user_ooo")
CREATE_CREDENTIAL = get_tool(
    "cal_organizations_delegation_credential_controller_create_delegation_credential"
)
LIST_USERS = get_tool("cal_organizations_users_controller_get_organizations_users")
KEY = StepKey("vacation", "block", None)
PARAMS = {"orgId": 1, "userId": 7, "start": "2025-07-01T00:00:00Z", "end": "2025-07-02T00:00:00Z"}


class Calls:
    """A stand-in for the tool call: counts calls, answers or raises what it is told."""

    def __init__(self, answer: Any = None, error: Exception | None = None) -> None:
        self.count = 0
        self.answer = answer
        self.error = error
        self.seen_marker: list[bool] = []

    def bind(self, redis: aioredis.Redis, event_id: str) -> Any:
        async def perform() -> Any:
            self.count += 1
            fields = await hgetall(redis, f"calhooks:ledger:{event_id}")
            raw = fields.get(KEY.field.encode())
            self.seen_marker.append(raw is not None and json.loads(raw)["state"] == "started")
            if self.error is not None:
                raise self.error
            return self.answer

        return perform


class Finder:
    def __init__(self, found: Any) -> None:
        self.found = found
        self.calls: list[Mapping[str, Any]] = []

    async def __call__(self, client: CalcomClient, params: Mapping[str, Any]) -> Any:
        self.calls.append(params)
        return self.found


def cal_error(status: int) -> CalcomError:
    return CalcomError(tool="t", status=status, code="X", message="m")


@pytest.fixture
async def client() -> Any:
    async with CalcomClient(base_url="http://127.0.0.1:9", org_id=1) as cal:
        yield cal


async def test_a_recorded_step_is_reused_without_calling_again(
    redis_client: aioredis.Redis, client: CalcomClient
) -> None:
    """The second run of an event returns the first run's output and sends nothing."""
    ledger = Ledger(redis_client, ttl=60)
    once = ExactlyOnce(ledger, client, finders={})
    calls = Calls(answer={"id": 5})
    state = await ledger.begin("ev1")
    assert await once.run(state, KEY, CREATE_OOO, PARAMS, calls.bind(redis_client, "ev1")) == (
        {"id": 5},
        "called",
    )
    assert calls.seen_marker == [True]
    rerun = await ledger.begin("ev1")
    assert await once.run(rerun, KEY, CREATE_OOO, PARAMS, calls.bind(redis_client, "ev1")) == (
        {"id": 5},
        "recorded",
    )
    assert calls.count == 1


async def test_an_interrupted_create_found_in_cal_com_is_not_created_again(
    redis_client: aioredis.Redis, client: CalcomClient
) -> None:
    """A started-but-unrecorded create that the finder finds is adopted as the step's output."""
    ledger = Ledger(redis_client, ttl=60)
    finder = Finder({"id": 9, "userId": 7})
    once = ExactlyOnce(ledger, client, finders={CREATE_OOO.name: finder})
    state = await ledger.begin("ev1")
    await ledger.start_step(state, KEY)  # the crashed attempt got this far
    calls = Calls(answer={"id": 10})
    rerun = await ledger.begin("ev1")
    output = await once.run(rerun, KEY, CREATE_OOO, PARAMS, calls.bind(redis_client, "ev1"))
    assert output == ({"id": 9, "userId": 7}, "found")
    assert calls.count == 0
    assert finder.calls == [PARAMS]
    again = await ledger.begin("ev1")
    assert again.steps[KEY.field].output == {"id": 9, "userId": 7}


async def test_an_interrupted_create_not_found_is_created(
    redis_client: aioredis.Redis, client: CalcomClient
) -> None:
    """When the finder finds nothing the earlier attempt never reached Cal.com: create now."""
    ledger = Ledger(redis_client, ttl=60)
    once = ExactlyOnce(ledger, client, finders={CREATE_OOO.name: Finder(None)})
    await ledger.start_step(await ledger.begin("ev1"), KEY)
    calls = Calls(answer={"id": 10})
    rerun = await ledger.begin("ev1")
    assert await once.run(rerun, KEY, CREATE_OOO, PARAMS, calls.bind(redis_client, "ev1")) == (
        {"id": 10},
        "called",
    )
    assert calls.count == 1


@pytest.mark.parametrize(
    ("tool", "status"), [(DELETE_OOO, 404), (CREATE_CREDENTIAL, 409)], ids=["delete", "create"]
)
async def test_answers_proving_an_interrupted_call_took_effect_count_as_done(
    redis_client: aioredis.Redis, client: CalcomClient, tool: Any, status: int
) -> None:
    """After an interruption, 404 to a delete or 409 to a create means the first one worked."""
    ledger = Ledger(redis_client, ttl=60)
    once = ExactlyOnce(ledger, client, finders={})
    await ledger.start_step(await ledger.begin("ev1"), KEY)
    calls = Calls(error=cal_error(status))
    rerun = await ledger.begin("ev1")
    assert await once.run(rerun, KEY, tool, {}, calls.bind(redis_client, "ev1")) == (
        None,
        "already",
    )


async def test_the_same_answers_without_an_interruption_are_errors(
    redis_client: aioredis.Redis, client: CalcomClient
) -> None:
    """A 404 to a first delete is a real error, and proves nothing happened: no marker left."""
    ledger = Ledger(redis_client, ttl=60)
    once = ExactlyOnce(ledger, client, finders={})
    state = await ledger.begin("ev1")
    with pytest.raises(CalcomError):
        await once.run(
            state, KEY, DELETE_OOO, {}, Calls(error=cal_error(404)).bind(redis_client, "ev1")
        )
    assert KEY.field.encode() not in await hgetall(redis_client, "calhooks:ledger:ev1")


@pytest.mark.parametrize(
    ("error", "marker_kept"),
    [
        (cal_error(400), False),
        (ToolValidationError("t", []), False),
        (cal_error(429), False),
        (cal_error(500), True),
        (TimeoutError(), True),
    ],
)
async def test_a_failed_create_keeps_its_marker_only_when_it_may_have_happened(
    redis_client: aioredis.Redis, client: CalcomClient, error: Exception, marker_kept: bool
) -> None:
    """A 5xx or a lost answer leaves 'started' (look before re-creating); a 4xx removes it."""
    ledger = Ledger(redis_client, ttl=60)
    once = ExactlyOnce(ledger, client, finders={})
    state = await ledger.begin("ev1")
    with pytest.raises(type(error)):
        await once.run(state, KEY, CREATE_OOO, PARAMS, Calls(error=error).bind(redis_client, "ev1"))
    stored = await hgetall(redis_client, "calhooks:ledger:ev1")
    assert (KEY.field.encode() in stored) is marker_kept


async def test_reads_write_no_marker(redis_client: aioredis.Redis, client: CalcomClient) -> None:
    """A GET is safe to repeat, so it costs no Redis write before the call."""
    ledger = Ledger(redis_client, ttl=60)
    once = ExactlyOnce(ledger, client, finders={})
    calls = Calls(answer=[{"id": 1}])
    state = await ledger.begin("ev1")
    await once.run(state, KEY, LIST_USERS, {}, calls.bind(redis_client, "ev1"))
    assert calls.seen_marker == [False]


async def test_runs_that_never_ended_are_counted_as_crashes(redis_client: aioredis.Redis) -> None:
    """begin() without end() is a crash; replaying a rule forgives past crashes and failures."""
    ledger = Ledger(redis_client, ttl=60)
    await ledger.begin("ev1")
    await ledger.begin("ev1")
    state = await ledger.begin("ev1")
    assert state.crashes == 2
    ledger.add_failure(state, "r")
    ledger.set_rule(state, "r", "dead")
    await end_now(ledger, state)
    await ledger.reopen_rule("ev1", "r")
    after = await ledger.begin("ev1")
    assert (after.crashes, after.failures, after.rules) == (0, {}, {})


async def test_a_kept_ledger_does_not_expire_until_released(redis_client: aioredis.Redis) -> None:
    """Dead-lettered events keep their ledger (TTL removed) even across later runs."""
    ledger = Ledger(redis_client, ttl=60)
    state = await ledger.begin("ev1")
    ledger.record_matched(state, ["a", "b"])
    await ledger.keep(state)
    await ledger.begin("ev1")
    assert await redis_client.ttl("calhooks:ledger:ev1") == -1
    await ledger.release_now("ev1")
    assert 0 < await redis_client.ttl("calhooks:ledger:ev1") <= 60
    loaded = await ledger.load("ev1")
    assert isinstance(loaded, EventState)
    assert loaded.matched == ["a", "b"]
    assert not loaded.kept


async def test_an_interrupted_step_waits_until_its_call_had_time_to_land(
    redis_client: aioredis.Redis, client: CalcomClient
) -> None:
    """With ``settle``, a re-run neither looks up nor repeats a call sent moments ago (it may
    still be reaching Cal.com): it defers for the rest of the time, then goes on."""
    ledger = Ledger(redis_client, ttl=60)
    finder = Finder({"id": 9})
    once = ExactlyOnce(ledger, client, finders={CREATE_OOO.name: finder}, settle=60.0)
    await ledger.start_step(await ledger.begin("ev1"), KEY)
    calls = Calls(answer={"id": 10})
    rerun = await ledger.begin("ev1")
    with pytest.raises(Defer) as deferred:
        await once.run(rerun, KEY, CREATE_OOO, PARAMS, calls.bind(redis_client, "ev1"))
    assert 50 < deferred.value.delay <= 60
    assert (calls.count, finder.calls) == (0, [])
    rerun.steps[KEY.field] = replace(rerun.steps[KEY.field], at=rerun.steps[KEY.field].at - 61)
    output = await once.run(rerun, KEY, CREATE_OOO, PARAMS, calls.bind(redis_client, "ev1"))
    assert output == ({"id": 9}, "found")


async def test_a_call_answered_with_an_error_does_not_wait_to_settle(
    redis_client: aioredis.Redis, client: CalcomClient
) -> None:
    """A create answered 500 is not in flight any more: the retry looks it up at once."""
    ledger = Ledger(redis_client, ttl=60)
    finder = Finder(None)
    once = ExactlyOnce(ledger, client, finders={CREATE_OOO.name: finder}, settle=60.0)
    first = await ledger.begin("ev1")
    failing = Calls(error=cal_error(500))
    with pytest.raises(CalcomError):
        await once.run(first, KEY, CREATE_OOO, PARAMS, failing.bind(redis_client, "ev1"))
    rerun = await ledger.begin("ev1")
    assert rerun.steps[KEY.field].answered
    calls = Calls(answer={"id": 10})
    output = await once.run(rerun, KEY, CREATE_OOO, PARAMS, calls.bind(redis_client, "ev1"))
    assert output == ({"id": 10}, "called")
    assert len(finder.calls) == 1
