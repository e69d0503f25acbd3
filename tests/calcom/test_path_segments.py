"""Path parameters cannot leave their segment: over every path parameter of the 37 tools,
against the sandbox's request log, no request reaches a route other than its tool's.

Hostile values (dot segments, empty strings, slashes, control characters) are refused
before anything is sent; odd but harmless values are sent and land on the tool's own route.
"""

from __future__ import annotations

import contextlib
from typing import Any

import pytest

from calhooks.service.calcom import TOOLS, CalcomError, ToolValidationError
from tests.sandbox.server import RunningSandbox
from tests.sandbox.test_tools import SCENARIOS

PATH_PARAMETERS = [
    (tool.name, parameter.name)
    for tool in TOOLS.values()
    for parameter in tool.parameters_in("path")
]

HOSTILE = [
    ".",
    "..",
    "",
    " ",
    "/",
    "a/..",
    "../..",
    "\\..",
    "x\x00",
    "x\n",
    "\t",
    "x\x7f",
    "x\u2028",
]
HARMLESS_STRINGS = ["...", ".x", "%2e%2e", "%2F", "?take=1", "#x", "a;b", "é", "x y"]
HARMLESS_INTEGERS = [0, -1, 2**53, 3.0]


def test_every_tool_with_an_id_is_covered() -> None:
    assert len({name for name, _ in PATH_PARAMETERS}) == 37  # every tool has orgId at least
    assert len(PATH_PARAMETERS) > 37


async def _valid_params(name: str, sandbox: RunningSandbox) -> dict[str, Any]:
    async with sandbox.client() as cal:
        params = await SCENARIOS[name].success(cal)
    sandbox.sandbox.requests.clear()  # what the scenario set up is not under test
    return {"orgId": 1, **params}


@pytest.mark.parametrize(("name", "parameter"), PATH_PARAMETERS)
async def test_hostile_values_are_refused_before_sending(
    name: str, parameter: str, sandbox: RunningSandbox
) -> None:
    params = await _valid_params(name, sandbox)
    async with sandbox.client() as cal:
        for value in HOSTILE:
            with pytest.raises(ToolValidationError) as caught:
                await cal.call(name, **{**params, parameter: value})
            assert caught.value.parameters == (parameter,), (value, str(caught.value))
    assert sandbox.requests() == []


@pytest.mark.parametrize(("name", "parameter"), PATH_PARAMETERS)
async def test_harmless_values_stay_on_the_tools_route(
    name: str, parameter: str, sandbox: RunningSandbox
) -> None:
    tool = TOOLS[name]
    params = await _valid_params(name, sandbox)
    kind = tool.by_name[parameter].schema.get("type")
    values: list[Any] = HARMLESS_STRINGS if kind == "string" else HARMLESS_INTEGERS
    async with sandbox.client(retries=0) as cal:
        for value in values:
            # Not found / forbidden is fine: the point is where the request went.
            with contextlib.suppress(CalcomError):
                await cal.call(name, **{**params, parameter: value})
    seen = sandbox.requests()
    assert len(seen) == len(values)
    assert {(r.tool, r.method) for r in seen} == {(name, tool.method)}, [r.path for r in seen]
