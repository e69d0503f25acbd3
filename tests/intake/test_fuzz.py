"""Fuzzing the intake (in-process ASGI): whatever the headers and body, never a 500 or a crash."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio.from_thread
import httpx
from hypothesis import given, settings
from hypothesis import strategies as st

from calhooks.service.app import create_app
from calhooks.service.core.embedded_redis import EmbeddedRedis
from tests.intake.conftest import PATH, make_settings, signature

ANSWERS = {200, 202, 400, 401, 405, 413}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)
deliveries = st.fixed_dictionaries(
    {"triggerEvent": st.one_of(st.sampled_from(["BOOKING_CREATED", "PING"]), json_values)},
    optional={"createdAt": json_values, "payload": json_values},
).map(lambda body: json.dumps(body).encode())
bodies = st.one_of(
    st.binary(max_size=6000),
    json_values.map(lambda value: json.dumps(value).encode()),
    deliveries,
)
header_names = st.one_of(
    st.sampled_from(["x-cal-signature-256", "x-request-id", "content-type", "x-forwarded-for"]),
    st.from_regex(r"[a-z][a-z0-9-]{0,15}", fullmatch=True),
)
headers = st.dictionaries(header_names, st.binary(max_size=80), max_size=6)


def test_no_input_gets_a_500_or_escapes(tmp_path: Path, redis_server: EmbeddedRedis) -> None:
    """Random methods, headers and bodies, signed or not: always one of the documented answers."""
    app = create_app(make_settings(tmp_path, redis_server.url, max_body_bytes=4096))
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=True)
    client = httpx.AsyncClient(transport=transport, base_url="http://intake.test")
    seen: set[int] = set()

    with anyio.from_thread.start_blocking_portal() as portal:
        with portal.wrap_async_context_manager(app.router.lifespan_context(app)):

            @settings(max_examples=400, deadline=None, database=None, derandomize=True)
            @given(
                method=st.sampled_from(["POST", "POST", "POST", "GET", "PUT", "DELETE"]),
                sent_headers=headers,
                body=bodies,
                signed=st.booleans(),
            )
            def check(
                method: str, sent_headers: dict[str, bytes], body: bytes, signed: bool
            ) -> None:
                request_headers: dict[str, Any] = dict(sent_headers)
                if signed:
                    request_headers["x-cal-signature-256"] = signature(body)
                response = portal.call(
                    lambda: client.request(method, PATH, content=body, headers=request_headers)
                )
                assert response.status_code in ANSWERS, (response.status_code, response.text)
                seen.add(response.status_code)
                assert response.headers["content-type"] == "application/json"
                assert "error" in response.json() or response.status_code in {200, 202}

            check()
        portal.call(client.aclose)
    assert {200, 202, 400, 401, 405} <= seen, seen
