"""Request validation as Cal.com's pipes do it, derived from the registry: every required
body field, wrongly typed parameter and bad enum value is a 400 with Cal.com's error body;
query strings are converted; unknown body properties are stripped, not rejected."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from calhooks.service.calcom import TOOLS, Parameter, Tool, validate_params
from calhooks.service.sandbox import SANDBOX_API_KEY, SANDBOX_ORG_ID
from tests.sandbox.server import RunningSandbox

AUTH = {"Authorization": f"Bearer {SANDBOX_API_KEY}"}
USERS = TOOLS["cal_organizations_users_controller_get_organizations_users"]
CREATE_OOO = TOOLS["cal_organizations_users_ooocontroller_create_organization_user_ooo"]
CREATE_WEBHOOK = TOOLS["cal_organizations_webhooks_controller_create_organization_webhook"]
CREATE_USER = TOOLS["cal_organizations_users_controller_create_organization_user"]


def sample(schema: Mapping[str, Any]) -> Any:
    """A value the schema accepts, built from the schema alone."""
    if "enum" in schema:
        return next(v for v in schema["enum"] if v is not None)
    if "oneOf" in schema:
        return sample(schema["oneOf"][0])
    kinds = schema.get("type")
    kind = next((k for k in kinds if k != "null"), "string") if isinstance(kinds, list) else kinds
    if kind == "integer":
        return int(schema.get("minimum", 1))
    if kind == "number":
        return 1.5
    if kind == "boolean":
        return True
    if kind == "array":
        return [sample(schema.get("items", {}))]
    if kind == "object":
        properties = schema.get("properties", {})
        return {name: sample(properties[name]) for name in schema.get("required", [])}
    if schema.get("format") == "email":
        return "someone@acme.example"
    if "pattern" in schema:
        return "2025-07-01T00:00:00.000Z"
    return "value"


def valid_params(tool: Tool) -> dict[str, Any]:
    """Every required parameter with a sample value (orgId: the caller's organization)."""
    params = {p.name: sample(p.schema) for p in tool.parameters if p.required}
    params["orgId"] = SANDBOX_ORG_ID
    validate_params(tool, params)  # the client agrees the sample is valid
    return params


async def send(
    sandbox: RunningSandbox, tool: Tool, params: Mapping[str, Any], *, raw: Any = None
) -> httpx.Response:
    """Lay ``params`` out as HTTP without the client's validation, and send them."""
    url = tool.path
    query: list[tuple[str, str]] = []
    body: dict[str, Any] = {}
    for name, value in params.items():
        parameter = tool.by_name.get(name)
        location = parameter.location if parameter else "body"
        if location == "path":
            url = url.replace("{" + name + "}", quote(str(value), safe=""))
        elif location == "query":
            values = value if isinstance(value, list) else [value]
            query.extend((name, str(v)) for v in values)
        else:
            body[name] = value
    content = raw if raw is not None else None
    async with httpx.AsyncClient(base_url=sandbox.url, headers=AUTH) as http:
        if content is not None:
            return await http.request(tool.method, url, params=tuple(query), content=content)
        has_body = tool.method in ("POST", "PATCH")
        return await http.request(
            tool.method, url, params=tuple(query), json=body if has_body else None
        )


def errors_by_property(response: httpx.Response) -> dict[str, dict[str, str]]:
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "BadRequestException"
    return {e["property"]: e["constraints"] for e in error["details"]["errors"]}


def _cases(select: Any) -> list[Any]:
    return [
        pytest.param(tool, parameter, id=f"{tool.name}:{parameter.name}")
        for tool in TOOLS.values()
        for parameter in tool.parameters
        if select(parameter)
    ]


def _wrong_value(parameter: Parameter) -> Any:
    """A value of the wrong type for where the parameter travels (query values are text)."""
    kinds = parameter.schema.get("type")
    kinds = kinds if isinstance(kinds, list) else [kinds]
    if parameter.location in ("path", "query"):
        return "abc"
    if "integer" in kinds or "number" in kinds:
        return "7"  # bodies are not coerced: a numeric string is still a string
    if "boolean" in kinds:
        return "true"
    if "array" in kinds or "object" in kinds or "oneOf" in parameter.schema:
        return "text"
    return 12345


def _typed_for_wrong_value(parameter: Parameter) -> bool:
    if parameter.name == "orgId" or parameter.enum:
        return False
    kinds = parameter.schema.get("type")
    kinds = kinds if isinstance(kinds, list) else [kinds]
    if parameter.location in ("path", "query"):
        return "integer" in kinds  # query/path text is only wrong where a number is due
    return True


@pytest.mark.parametrize(
    ("tool", "parameter"), _cases(lambda p: p.location == "body" and p.required)
)
async def test_missing_required_body_field(
    tool: Tool, parameter: Parameter, sandbox: RunningSandbox
) -> None:
    """Leaving out a required body field is a 400 naming it."""
    params = valid_params(tool)
    del params[parameter.name]
    errors = errors_by_property(await send(sandbox, tool, params))
    assert list(errors) == [parameter.name]
    assert "isDefined" in errors[parameter.name]


@pytest.mark.parametrize(("tool", "parameter"), _cases(_typed_for_wrong_value))
async def test_wrong_type(tool: Tool, parameter: Parameter, sandbox: RunningSandbox) -> None:
    """A value of the wrong type is a 400 naming the parameter (ParseIntPipe for path ids)."""
    params = {**valid_params(tool), parameter.name: _wrong_value(parameter)}
    response = await send(sandbox, tool, params)
    if parameter.location == "path":
        assert response.status_code == 400
        assert (
            response.json()["error"]["message"] == "Validation failed (numeric string is expected)"
        )
    else:
        assert list(errors_by_property(response)) == [parameter.name]


@pytest.mark.parametrize(("tool", "parameter"), _cases(lambda p: bool(p.enum)))
async def test_bad_enum_value(tool: Tool, parameter: Parameter, sandbox: RunningSandbox) -> None:
    """A value outside the enum is a 400 listing the allowed values."""
    bad: Any = "NOT_A_VALUE"
    if parameter.schema.get("type") == "array":
        bad = ["BOOKING_CONFIRMED"]  # in Cal.com's example, but not an accepted trigger
    if parameter.name == "timeFormat":
        bad = 13
    params = {**valid_params(tool), parameter.name: bad}
    errors = errors_by_property(await send(sandbox, tool, params))
    constraint = next(iter(errors.values()))
    assert "isEnum" in constraint


@pytest.mark.parametrize(
    "value",
    [
        "2025-07-01",
        "2025-07-01T00:00:00+02:00",
        "2025-07-01 00:00:00Z",
        "tomorrow",
        "2025-13-45T00:00:00Z",
    ],
)
async def test_malformed_ooo_dates(value: str, sandbox: RunningSandbox) -> None:
    """OOO dates must be UTC ISO-8601 ending in Z, and real dates: else 400 "Invalid Date."."""
    params = {"orgId": 1, "userId": 101, "start": value, "end": "2025-07-02T00:00:00Z"}
    response = await send(sandbox, CREATE_OOO, params)
    assert response.status_code == 400
    assert response.json()["error"]["message"] == "Invalid Date."
    assert sandbox.store.ooo.keys() == {301}


async def test_error_body_is_calcoms(sandbox: RunningSandbox) -> None:
    """A 400 carries Cal.com's envelope, the request URL as path, and X-Request-Id."""
    response = await send(sandbox, USERS, {"orgId": 1, "take": 5000})
    body = response.json()
    assert set(body) == {"status", "timestamp", "path", "error"}
    assert (body["status"], body["path"]) == ("error", "/v2/organizations/1/users?take=5000")
    assert body["timestamp"].endswith("Z")
    assert body["error"] == {
        "code": "BadRequestException",
        "message": "take must not be greater than 1000",
        "details": {
            "errors": [
                {
                    "property": "take",
                    "value": 5000,
                    "constraints": {"max": "take must not be greater than 1000"},
                }
            ]
        },
    }
    assert response.headers["x-request-id"] == sandbox.requests()[-1].id


async def test_query_arrays_repeated_or_comma_separated(sandbox: RunningSandbox) -> None:
    """emails=a,b and emails=a&emails=b select the same users; take arrives as text."""
    base = {"orgId": 1, "take": "10"}
    joined = await send(sandbox, USERS, {**base, "emails": "alice@acme.example,carol@acme.example"})
    repeated = await send(
        sandbox, USERS, {**base, "emails": ["alice@acme.example", "carol@acme.example"]}
    )
    assert joined.status_code == repeated.status_code == 200
    assert (
        [u["id"] for u in joined.json()["data"]]
        == [u["id"] for u in repeated.json()["data"]]
        == [101, 103]
    )


async def test_query_integer_arrays_are_converted(sandbox: RunningSandbox) -> None:
    """teamIds=1,2 becomes integers; a non-number in it is a 400."""
    ok = await send(sandbox, USERS, {"orgId": 1, "teamIds": "1,2"})
    assert [u["id"] for u in ok.json()["data"]] == [101, 102, 103]
    errors = errors_by_property(await send(sandbox, USERS, {"orgId": 1, "teamIds": "1,x"}))
    assert "teamIds.1" in errors


async def test_attribute_filter_operators(sandbox: RunningSandbox) -> None:
    """assignedOptionIds with AND / OR / NONE filters users by their assigned options."""
    from calhooks.service.sandbox import option_id

    options = f"{option_id('engineering')},{option_id('sales')}"
    found = {}
    for operator in ("AND", "OR", "NONE"):
        response = await send(
            sandbox,
            USERS,
            {"orgId": 1, "assignedOptionIds": options, "attributeQueryOperator": operator},
        )
        found[operator] = [u["id"] for u in response.json()["data"]]
    assert found == {"AND": [], "OR": [101, 102], "NONE": [103]}


async def test_unknown_body_properties_are_stripped(sandbox: RunningSandbox) -> None:
    """Cal.com's whitelist drops undeclared fields silently, nested ones too."""
    webhook = await send(
        sandbox,
        CREATE_WEBHOOK,
        {
            "orgId": 1,
            "active": True,
            "subscriberUrl": "https://hooks.example/x",
            "triggers": ["BOOKING_CREATED"],
            "eventTypeId": 7,
        },
    )
    assert webhook.status_code == 201
    assert "eventTypeId" not in webhook.json()["data"]
    # `name` is not a create-user input: Cal.com drops it and the user has no name.
    user = await send(
        sandbox, CREATE_USER, {"orgId": 1, "email": "new@acme.example", "name": "New"}
    )
    assert user.status_code == 201
    assert user.json()["data"]["name"] is None
    attribute = await send(
        sandbox,
        TOOLS["cal_organizations_attributes_controller_create_organization_attribute"],
        {
            "orgId": 1,
            "name": "Level",
            "slug": "level",
            "type": "SINGLE_SELECT",
            "options": [{"value": "Junior", "slug": "junior", "color": "red"}],
        },
    )
    assert attribute.status_code == 201
    assert sandbox.requests()[-1].body["options"][0]["color"] == "red"  # it was sent...
    created = next(iter(sandbox.store.options_of(attribute.json()["data"]["id"])))
    assert (created.value, created.slug) == ("Junior", "junior")  # ...and not kept


async def test_body_that_is_not_a_json_object(sandbox: RunningSandbox) -> None:
    """Broken JSON or a non-object body is a 400 in Cal.com's error body."""
    params = {"orgId": 1}
    broken = await send(sandbox, CREATE_WEBHOOK, params, raw=b'{"active": tru')
    listed = await send(sandbox, CREATE_WEBHOOK, params, raw=b"[1, 2]")
    assert (broken.status_code, listed.status_code) == (400, 400)
    assert broken.json()["error"]["code"] == "BadRequestException"
    assert listed.json()["error"]["message"] == "The request body must be a JSON object"


async def test_unknown_route_and_method(sandbox: RunningSandbox) -> None:
    """NestJS answers unknown routes and methods with 404 "Cannot METHOD path"."""
    async with httpx.AsyncClient(base_url=sandbox.url, headers=AUTH) as http:
        missing = await http.get("/v2/organizations/1/bookings/references")
        wrong_method = await http.put("/v2/organizations/1/users")
    assert missing.status_code == wrong_method.status_code == 404
    assert (
        missing.json()["error"]["message"] == "Cannot GET /v2/organizations/1/bookings/references"
    )
    assert wrong_method.json()["error"]["code"] == "NotFoundException"
    assert "x-request-id" in missing.headers


@pytest.mark.parametrize(
    ("tool", "params", "message"),
    [
        (
            CREATE_USER,
            {"orgId": 1, "email": "x@acme.example", "timeZone": "Mars/Olympus_Mons"},
            "timeZone must be a valid IANA time zone",
        ),
        (
            CREATE_OOO,
            {
                "orgId": 1,
                "userId": 101,
                "start": "2025-07-01T00:00:00Z",
                "end": "2025-07-02T00:00:00Z",
                "toUserId": 101,
            },
            "Cannot redirect to yourself",
        ),
        (
            TOOLS[
                "cal_organizations_attributes_options_controller_"
                "assign_organization_attribute_option_to_user"
            ],
            {"orgId": 1, "userId": 101, "attributeId": "cdepartmentattribute00001", "value": "Ops"},
            "Attribute type does not support value",
        ),
    ],
    ids=["time-zone", "ooo-covers-self", "value-on-select"],
)
async def test_business_rule_rejections(
    tool: Tool, params: dict[str, Any], message: str, sandbox: RunningSandbox
) -> None:
    """Checks beyond the schema that Cal.com's services make are 400s too, changing nothing."""
    before = sandbox.sandbox.snapshot()["counts"]
    response = await send(sandbox, tool, params)
    assert response.status_code == 400
    assert response.json()["error"]["message"].startswith(message)
    assert sandbox.sandbox.snapshot()["counts"] == before
