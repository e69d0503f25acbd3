"""The webhook endpoint Cal.com posts to: a plain ASGI callable, mounted in the Starlette app.

Per request, in this order (the first failing step answers):

====  ==========================================================================
405   not a POST
413   ``Content-Length`` over ``CALHOOKS_MAX_BODY_BYTES``, or the body read so far is (the
      body is read chunk by chunk and never buffered past the limit)
401   ``X-Cal-Signature-256`` missing, malformed, or ``no-secret-provided`` unless
      ``CALHOOKS_ALLOW_UNSIGNED`` (decided from the header: the body is not read)
401   ``<webhook path>/<pcid>`` names no connection (after a reload of the connections, so a
      connection just added is found; see ``connection_secrets``); the body is not read
503   reading the body would pass the read budget (``CALHOOKS_READ_BUDGET_BYTES``, bytes of
      bodies held at once over all connections), with ``Retry-After``
408   the body did not arrive within ``CALHOOKS_BODY_READ_TIMEOUT`` seconds
401   the signature matches no valid secret (checked on the raw bytes, before any parsing;
      a mismatch waits for a reload of the secrets first, so a just-added one is found) -
      on a connection's URL, that connection's secrets only
400   not JSON, not an object, nested deeper than ``MAX_JSON_DEPTH``, no usable
      ``triggerEvent`` (the message says which)
200   ``PING`` (the dashboard's test delivery): ``{"ping": true}``, not queued
200   a delivery already seen within the dedupe window: ``{"id": ..., "duplicate": true}``
202   queued - or spooled to disk while Redis is away: ``{"id": ...}``
503   Redis and the spool both refused, or anything unexpected (logged with a traceback),
      with ``Retry-After``; never a 500
====  ==========================================================================

Two kinds of URL reach it: ``<webhook path>`` is the environment organization's
(``CALHOOKS_API_KEY``/``CALHOOKS_ORG_ID``), verified with the shared ``SecretProvider``
(``CALHOOKS_WEBHOOK_SECRETS``, ``_FILE``, the stored secrets of the deployment), and its events
have no connection; ``<webhook path>/<pcid>`` is the connection ``pcid``'s, verified with that
connection's secrets only, and its events carry ``connection=pcid``. A delivery signed for one
organization and sent to another's URL therefore matches no secret there: 401, nothing stored.

It is a bare ASGI callable rather than a Starlette endpoint because it is the hot path: no
``Request`` object, headers scanned once, responses pre-encoded. One structured log line per
request carries the request id (``X-Request-Id``, taken from the caller when sane), the
outcome, the event id, trigger and latency - never the body or a secret.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import time
from collections.abc import Callable
from typing import Any

import structlog
from starlette.types import Message, Receive, Scope, Send

from calhooks.service.core import timeseries
from calhooks.service.events import PING, BodyError, event_from_body
from calhooks.service.intake import metrics
from calhooks.service.intake.acceptor import Acceptor, Stored, Unavailable
from calhooks.service.intake.accesslog import AccessLog
from calhooks.service.intake.connection_secrets import MAX_PCID, ConnectionSecrets
from calhooks.service.intake.readbudget import SMALL_BODY, ReadBudget
from calhooks.service.intake.secrets import SecretProvider
from calhooks.service.intake.signatures import Verdict, header_verdict, verify

log = structlog.get_logger("calhooks.intake")

RETRY_AFTER_SECONDS = 10
#: Retry-After of a 503 for a full read budget: it frees up as soon as bodies are answered.
OVERLOADED_RETRY_AFTER = 2
_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:-]{1,128}")
_JSON_HEADERS = [(b"content-type", b"application/json")]
#: Sent when the body was not read to its end: the rest is not worth receiving.
_CLOSE = (b"connection", b"close")


class _TooLarge(Exception):
    """The body passed the size limit while being read."""


class _OverBudget(Exception):
    """Reading more of the body would pass the read budget."""


class _Held:
    """Bytes of one request's body counted against the read budget."""

    __slots__ = ("bytes",)

    def __init__(self) -> None:
        self.bytes = 0


class _Answer:
    """What to send back, and what to log about it."""

    __slots__ = ("body", "extra_headers", "fields", "outcome", "status")

    def __init__(
        self,
        status: int,
        outcome: str,
        body: bytes,
        *,
        headers: list[tuple[bytes, bytes]] | None = None,
        **fields: Any,
    ) -> None:
        self.status = status
        self.outcome = outcome
        self.body = body
        self.extra_headers = headers
        self.fields = fields


def _error_body(error: str, message: str) -> bytes:
    return json.dumps({"error": error, "message": message}).encode()


class IntakeEndpoint:
    """ASGI app for ``POST <webhook path>``; see the module docstring."""

    def __init__(
        self,
        *,
        secrets: SecretProvider,
        acceptor: Acceptor,
        max_body_bytes: int,
        allow_unsigned: bool = False,
        read_budget: ReadBudget | None = None,
        read_timeout: float = 10.0,
        clock: Callable[[], float] = time.time,
        delivery_log: AccessLog | None = None,
        path: str = "/webhooks/cal",
        connections: ConnectionSecrets | None = None,
    ) -> None:
        self.log = delivery_log or AccessLog()
        #: ``<path>/<pcid>``: a connection's URL; ``connections`` None: there are none.
        base = path.rstrip("/")
        self._prefix = base + "/" if base else None  # "/" leaves no room for connections
        self.connections = connections
        # Request ids: unique per process and cheap (no system call per request).
        self._id_prefix = os.urandom(3).hex().encode()
        self._id_counter = itertools.count(1)
        self.secrets = secrets
        self.acceptor = acceptor
        self.max_body_bytes = max_body_bytes
        self.allow_unsigned = allow_unsigned
        self.budget = read_budget or ReadBudget(4 * max_body_bytes)
        self.read_timeout = read_timeout
        self.clock = clock
        self._too_large = _Answer(
            413, "too_large", _error_body("too_large", f"body exceeds {max_body_bytes} bytes")
        )
        self._overloaded = _Answer(
            503,
            "overloaded",
            _error_body("overloaded", "too many bodies being received; retry shortly"),
            headers=[(b"retry-after", b"%d" % OVERLOADED_RETRY_AFTER), _CLOSE],
        )
        self._unknown_connection = _error_body(
            "unknown_connection", "no connection has this URL (unknown PCID)"
        )
        self._too_slow = _Answer(
            408,
            "too_slow",
            _error_body("timeout", f"body not received within {read_timeout:g} s"),
            headers=[_CLOSE],
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        started = time.perf_counter()
        request_id: bytes | None = None
        try:
            request_id, answer = await self._handle(scope, receive)
        except Exception:
            log.exception("intake.unexpected_error", request_id=_text(request_id))
            answer = _Answer(
                503,
                "error",
                _error_body("unavailable", "unexpected error; retry later"),
                headers=[(b"retry-after", b"%d" % RETRY_AFTER_SECONDS)],
            )
        if request_id is None:
            request_id = b"%s%010x" % (self._id_prefix, next(self._id_counter))
        if answer is None:  # the client went away before sending its whole body
            self.log.log("info", "delivery aborted by client", request_id=request_id.decode())
            return
        headers = [
            *_JSON_HEADERS,
            (b"content-length", b"%d" % len(answer.body)),
            (b"x-request-id", request_id),
        ]
        if answer.extra_headers:
            headers.extend(answer.extra_headers)
        try:
            await send({"type": "http.response.start", "status": answer.status, "headers": headers})
            await send({"type": "http.response.body", "body": answer.body})
        except OSError:  # the client disconnected; what was stored stays stored
            pass
        elapsed = time.perf_counter() - started
        metrics.REQUEST_SECONDS.observe(elapsed)
        metrics.DELIVERY_COUNTERS[answer.outcome].inc()
        timeseries.RECORDER.count("intake." + answer.outcome)
        timeseries.RECORDER.observe_ms("intake.ms", elapsed * 1000)
        self.log.log(
            _LEVELS[answer.outcome],
            "delivery",
            request_id=request_id.decode(),
            outcome=answer.outcome,
            status=answer.status,
            latency_ms=round(elapsed * 1000, 3),
            **answer.fields,
        )

    async def _handle(self, scope: Scope, receive: Receive) -> tuple[bytes | None, _Answer | None]:
        signature: bytes | None = None
        request_id: bytes | None = None
        declared_length: bytes | None = None
        for name, value in scope["headers"]:
            if name == b"x-cal-signature-256":
                signature = value
            elif name == b"content-length":
                declared_length = value
            elif name == b"x-request-id" and _REQUEST_ID.fullmatch(value):
                request_id = value
        if scope["method"] != "POST":
            return request_id, _Answer(
                405,
                "bad_method",
                _error_body("method_not_allowed", "deliveries are POSTed"),
                headers=[(b"allow", b"POST")],
            )
        declared: int | None = None
        if declared_length is not None:
            try:
                declared = int(declared_length)
            except ValueError:
                declared = None  # the server has already refused a malformed one
            if declared is not None and declared > self.max_body_bytes:
                return request_id, self._too_large
        header = signature.decode("latin-1") if signature is not None else None
        early = header_verdict(header, allow_unsigned=self.allow_unsigned)
        if early is not None and not early.accepted:
            return request_id, self._refused(early, declared, unread=True)
        secrets = self.secrets
        connection = self._connection_of(scope)
        if connection is not None:
            connections = self.connections
            found = await connections.lookup(connection) if connections is not None else None
            if found is None:
                return request_id, _Answer(
                    401,
                    "unknown_connection",
                    self._unknown_connection,
                    headers=[_CLOSE],
                    connection=connection[:MAX_PCID],
                )
            secrets = found
        held = _Held()
        try:
            try:
                async with asyncio.timeout(self.read_timeout):
                    body = await self._read_body(
                        receive, held, small=declared is not None and declared <= SMALL_BODY
                    )
            except _TooLarge:
                return request_id, self._too_large
            except _OverBudget:
                return request_id, self._overloaded
            except TimeoutError:
                return request_id, self._too_slow
            if body is None:
                return request_id, None
            return request_id, await self._deliver(body, header, secrets, connection)
        finally:
            self.budget.give(held.bytes)

    def _connection_of(self, scope: Scope) -> str | None:
        """The PCID of a connection's URL (``<path>/<pcid>``), ``None`` for the bare path.

        Anything after the prefix is taken as the PCID, as is: a PCID no connection has (or
        with a slash in it) is simply unknown."""
        prefix = self._prefix
        if prefix is None:
            return None
        path: str = scope["path"]
        root = scope.get("root_path", "")
        if root and path.startswith(root + prefix):
            path = path[len(root) :]
        if not path.startswith(prefix):
            return None
        return path[len(prefix) :]

    async def _read_body(self, receive: Receive, held: _Held, *, small: bool) -> bytes | None:
        """The body (``None`` if the client left); ``_TooLarge`` as soon as it passes the
        limit, ``_OverBudget`` when the read budget has no room for the next chunk."""
        budget = self.budget
        message: Message = await receive()
        if message["type"] != "http.request":
            return None
        chunk: bytes = message.get("body", b"")
        if len(chunk) > self.max_body_bytes:
            raise _TooLarge
        if not budget.take(len(chunk), small=small):
            raise _OverBudget
        held.bytes += len(chunk)
        if not message.get("more_body", False):
            return chunk
        chunks, size = [chunk], len(chunk)
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                raise _TooLarge
            # The joined copy below is held too: counted by the last chunk's take.
            more = message.get("more_body", False)
            needed = len(chunk) if more else len(chunk) + size
            if not budget.take(needed, small=small):
                raise _OverBudget
            held.bytes += needed
            chunks.append(chunk)
            if not more:
                return b"".join(chunks)

    def _refused(self, verdict: Verdict, size: int | None, *, unread: bool = False) -> _Answer:
        return _Answer(
            401,
            "bad_signature",
            _error_body("bad_signature", verdict.reason),
            headers=[_CLOSE] if unread else None,
            reason=verdict.value,
            bytes=size,
        )

    async def _deliver(
        self, body: bytes, header: str | None, secrets: SecretProvider, connection: str | None
    ) -> _Answer:
        verdict = verify(body, header, secrets.keys(), allow_unsigned=self.allow_unsigned)
        if verdict in (Verdict.MISMATCH, Verdict.NO_SECRETS) and (await secrets.refresh_if_stale()):
            verdict = verify(body, header, secrets.keys(), allow_unsigned=self.allow_unsigned)
        if not verdict.accepted:
            answer = self._refused(verdict, len(body))
            if connection is not None:
                answer.fields["connection"] = connection
            return answer
        received_at = self.clock()
        try:
            event = event_from_body(body, received_at=received_at, connection=connection)
        except BodyError as error:
            return _Answer(
                400, "bad_body", _error_body("bad_body", str(error)), reason=str(error),
                bytes=len(body),
            )  # fmt: skip
        where: dict[str, Any] = {} if connection is None else {"connection": connection}
        if event.trigger == PING:
            return _Answer(200, "ping", b'{"ping":true}', event_id=event.id, trigger=PING, **where)
        try:
            stored = await self.acceptor.accept(event, body)
        except Unavailable as error:
            return _Answer(
                503,
                "unavailable",
                _error_body("unavailable", "cannot store the delivery now; retry later"),
                headers=[(b"retry-after", b"%d" % RETRY_AFTER_SECONDS)],
                event_id=event.id,
                trigger=event.trigger,
                reason=str(error),
                **where,
            )
        if stored is Stored.DUPLICATE:
            return _Answer(
                200,
                "duplicate",
                b'{"id":"%s","duplicate":true}' % event.id.encode(),
                event_id=event.id,
                trigger=event.trigger,
                **where,
            )
        metrics.count_event(event.trigger)
        fields: dict[str, Any] = {"event_id": event.id, "trigger": event.trigger, **where}
        if not event.known:
            fields["unknown_trigger"] = True
        return _Answer(202, stored.value, b'{"id":"%s"}' % event.id.encode(), **fields)


_LEVELS = {
    "accepted": "info",
    "spooled": "warning",
    "duplicate": "info",
    "ping": "info",
    "bad_signature": "warning",
    "unknown_connection": "warning",
    "bad_body": "warning",
    "too_large": "warning",
    "too_slow": "warning",
    "overloaded": "warning",
    "bad_method": "info",
    "unavailable": "error",
    "error": "error",
}


def _text(value: bytes | None) -> str | None:
    return value.decode() if value is not None else None
