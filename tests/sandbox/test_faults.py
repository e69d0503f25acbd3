"""Fault injection: scripted failures, shares of failures, 429 variants, latency, dropped
connections and a concurrency cap — per tool, per path glob, or for every call."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from pydantic import ValidationError

from calhooks.service.sandbox import SANDBOX_API_KEY, FaultRule
from tests.sandbox.server import RunningSandbox

AUTH = {"Authorization": f"Bearer {SANDBOX_API_KEY}"}
USERS = "cal_organizations_users_controller_get_organizations_users"
USERS_PATH = "/v2/organizations/1/users"
OOO_PATH = "/v2/organizations/1/ooo"


async def statuses(sandbox: RunningSandbox, path: str, count: int) -> list[int]:
    async with httpx.AsyncClient(base_url=sandbox.url, headers=AUTH) as http:
        return [(await http.get(path)).status_code for _ in range(count)]


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ({"status": 500, "drop": True}, "either drops the connection or answers"),
        ({"tool": "cal_nope", "status": 500}, "unknown tool"),
        ({"rate": 0.5}, "needs latency, status, drop or concurrency"),
        ({"status": 200}, "greater than or equal to 400"),
        ({"status": 500, "colour": "red"}, "Extra inputs are not permitted"),
    ],
)
def test_rule_validation(spec: dict[str, object], problem: str) -> None:
    """Meaningless or contradictory rules are refused with a reason."""
    with pytest.raises(ValidationError, match=problem):
        FaultRule.model_validate(spec)


async def test_next_calls_of_one_tool_fail_then_recover(sandbox: RunningSandbox) -> None:
    """`times` scripts an exact sequence; other tools are untouched."""
    sandbox.sandbox.faults.add(tool=USERS, status=500, times=2)
    assert await statuses(sandbox, USERS_PATH, 3) == [500, 500, 200]
    assert await statuses(sandbox, OOO_PATH, 1) == [200]
    first = sandbox.requests(USERS)[0]
    assert (first.faulted, first.credential) == (True, None)  # answered before auth


async def test_path_glob(sandbox: RunningSandbox) -> None:
    """A path glob selects calls by URL."""
    sandbox.sandbox.faults.add(path="/v2/organizations/*/ooo", status=503)
    assert await statuses(sandbox, OOO_PATH, 1) == [503]
    assert await statuses(sandbox, USERS_PATH, 1) == [200]


async def test_fault_error_body_is_calcoms(sandbox: RunningSandbox) -> None:
    """Injected errors use Cal.com's error body and codes."""
    sandbox.sandbox.faults.add(status=503, times=1)
    async with httpx.AsyncClient(base_url=sandbox.url, headers=AUTH) as http:
        response = await http.get(USERS_PATH)
    body = response.json()
    assert body["status"] == "error"
    assert body["error"]["code"] == "ServiceUnavailableException"
    assert "x-request-id" in response.headers


async def test_share_of_failures_is_reproducible(sandbox: RunningSandbox) -> None:
    """`rate` with a seed fails the same calls on every run."""
    runs = []
    for _ in range(2):
        sandbox.sandbox.faults.clear()
        sandbox.sandbox.faults.add(status=503, rate=0.5, seed=7)
        runs.append(await statuses(sandbox, USERS_PATH, 20))
    assert runs[0] == runs[1]
    assert set(runs[0]) == {200, 503}


@pytest.mark.parametrize(
    ("spec", "headers"),
    [
        ({"retry_after": 2}, {"retry-after": "2"}),
        (
            {"reset": 7},
            {"x-ratelimit-remaining-default": "0", "x-ratelimit-reset-default": "7"},
        ),
        ({}, {}),
    ],
    ids=["retry-after", "reset-header", "bare"],
)
async def test_429_variants(
    spec: dict[str, float], headers: dict[str, str], sandbox: RunningSandbox
) -> None:
    """An injected 429 is Cal.com's ThrottlerException, with only the headers asked for."""
    sandbox.sandbox.faults.add(status=429, times=1, **spec)
    async with httpx.AsyncClient(base_url=sandbox.url, headers=AUTH) as http:
        response = await http.get(USERS_PATH)
    assert response.status_code == 429
    assert response.json()["error"]["code"] == "ThrottlerException"
    sent = {k: v for k, v in response.headers.items() if k in ("retry-after",) or "ratelimit" in k}
    assert {k: v for k, v in sent.items() if k != "x-ratelimit-limit-default"} == headers


async def test_dropped_connection_gets_no_answer(sandbox: RunningSandbox) -> None:
    """`drop` closes the connection without a byte of answer; the log says so."""
    sandbox.sandbox.faults.add(tool=USERS, drop=True, times=1)
    async with httpx.AsyncClient(base_url=sandbox.url, headers=AUTH) as http:
        with pytest.raises(httpx.RemoteProtocolError, match="without sending a response"):
            await http.get(USERS_PATH)
        assert (await http.get(USERS_PATH)).status_code == 200
    assert [r.dropped for r in sandbox.requests(USERS)] == [True, False]


async def test_latency_is_added(sandbox: RunningSandbox) -> None:
    """`latency` delays the answer: a client with a shorter timeout gives up."""
    sandbox.sandbox.faults.add(tool=USERS, latency=0.5, times=1)
    async with httpx.AsyncClient(base_url=sandbox.url, headers=AUTH, timeout=0.1) as http:
        with pytest.raises(httpx.ReadTimeout):
            await http.get(USERS_PATH)
        assert (await http.get(USERS_PATH)).status_code == 200


async def test_concurrency_cap(sandbox: RunningSandbox) -> None:
    """No more than `concurrency` matching calls are handled at once; the rest wait."""
    cap = sandbox.sandbox.faults.add(tool=USERS, concurrency=2)
    sandbox.sandbox.faults.add(tool=USERS, latency=0.1)
    async with httpx.AsyncClient(base_url=sandbox.url, headers=AUTH) as http:
        answers = await asyncio.gather(*(http.get(USERS_PATH) for _ in range(6)))
    assert [a.status_code for a in answers] == [200] * 6
    assert cap.to_dict()["peak"] == 2
    assert cap.to_dict()["inFlight"] == 0


async def test_admin_api(sandbox: RunningSandbox) -> None:
    """Rules can be added, listed with their counters, removed and cleared over HTTP."""
    added = await sandbox.admin(
        "POST", "/faults", json=[{"tool": USERS, "status": 500, "times": 1}, {"latency": 0.01}]
    )
    assert added.status_code == 201
    first, second = added.json()["faults"]
    await statuses(sandbox, USERS_PATH, 2)
    listed = (await sandbox.admin("GET", "/faults")).json()["faults"]
    assert [(r["fired"], r["remaining"]) for r in listed] == [(1, 0), (2, None)]
    assert (await sandbox.admin("DELETE", f"/faults/{second['id']}")).status_code == 200
    assert [r["id"] for r in (await sandbox.admin("GET", "/faults")).json()["faults"]] == [
        first["id"]
    ]
    assert (await sandbox.admin("DELETE", "/faults/nope")).status_code == 404
    await sandbox.admin("DELETE", "/faults")
    assert sandbox.sandbox.faults.rules == []


async def test_admin_api_rejects_bad_rules(sandbox: RunningSandbox) -> None:
    """A bad rule is a 400 naming the field, and nothing is added."""
    response = await sandbox.admin("POST", "/faults", json={"status": 500, "rate": 2})
    assert response.status_code == 400
    assert response.json()["details"][0]["field"] == "rate"
    assert sandbox.sandbox.faults.rules == []
