"""The hand-written parts a measurement replaced, kept here only to reproduce that measurement.

``bench/handwritten.py`` measures each against the library that replaced it in calhooks
(``docs/performance-handwritten.md``). Nothing in calhooks imports this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any

import orjson
import structlog

logger = structlog.get_logger("bench.replaced")

# ---------------------------------------------------------------- workers/health.py's server


@dataclass(frozen=True, slots=True)
class Reply:
    """``calhooks.workers.health.Reply``, without importing that module (it loads aiohttp.web)."""

    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"


Handler = Callable[[], Awaitable[Any]]

_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}
_MAX_REQUEST_LINE = 8192


class HandWrittenProbeServer:
    """The worker's former probe server on ``asyncio.start_server`` (one request per connection)."""

    def __init__(self, routes: dict[str, Handler], *, host: str, port: int) -> None:
        self.routes = routes
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        sockets = self._server.sockets
        if sockets:
            self.port = int(sockets[0].getsockname()[1])
        logger.info("worker.http.listening", host=self.host, port=self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(5):
                line = await reader.readuntil(b"\r\n")
                while (await reader.readuntil(b"\r\n")) not in (b"\r\n", b""):
                    pass
            reply = await self._answer(line)
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            writer.close()
            return
        head = (
            f"HTTP/1.1 {reply.status} {_REASONS.get(reply.status, '')}\r\n"
            f"Content-Type: {reply.content_type}\r\n"
            f"Content-Length: {len(reply.body)}\r\n"
            "Connection: close\r\n\r\n"
        ).encode()
        method = line.split(b" ", 1)[0]
        writer.write(head if method == b"HEAD" else head + reply.body)
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()

    async def _answer(self, line: bytes) -> Any:
        parts = line[:_MAX_REQUEST_LINE].decode("latin-1").split()
        if len(parts) < 2:
            return Reply(404, b"not found\n")
        method, target = parts[0], parts[1].split("?", 1)[0]
        handler = self.routes.get(target)
        if handler is None:
            return Reply(404, b"not found\n")
        if method not in ("GET", "HEAD"):
            return Reply(405, b"method not allowed\n")
        try:
            return await handler()
        except Exception:  # a probe must answer, not drop the connection
            logger.exception("worker.http.error", path=target)
            return Reply(503, b"error\n")


# ---------------------------------------------------------------- service/intake/accesslog.py


class BatchedDeliveryLog:
    """The intake's former per-delivery line writer: the standard chain's JSON keys, written
    directly to the root handler's stream, the lines of one event-loop turn in one write."""

    def __init__(self, name: str = "calhooks.intake") -> None:
        self.name = name
        self._structlog = structlog.get_logger(name)
        self._handler: logging.StreamHandler[IO[str]] | None = _json_stream_handler()
        self._lines: list[bytes] = []

    @property
    def fast(self) -> bool:
        return self._handler is not None

    def log(self, level: str, event: str, **fields: Any) -> None:
        if self._handler is None:
            getattr(self._structlog, level)(event, **fields)
            return
        numeric = logging.getLevelName(level.upper())
        if not logging.getLogger(self.name).isEnabledFor(numeric):
            return
        record = {
            **structlog.contextvars.get_contextvars(),
            **fields,
            "event": event,
            "level": level,
            "logger": self.name,
            "timestamp": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        }
        try:
            line = orjson.dumps(record, default=str)
        except TypeError:
            getattr(self._structlog, level)(event, **fields)
            return
        if not self._lines:
            try:
                asyncio.get_running_loop().call_soon(self.flush)
            except RuntimeError:
                self._lines.append(line)
                self.flush()
                return
        self._lines.append(line)

    def flush(self) -> None:
        handler, lines = self._handler, self._lines
        if handler is None or not lines:
            return
        self._lines = []
        text = b"\n".join(lines).decode() + "\n"
        handler.acquire()
        try:
            handler.stream.write(text)
            handler.flush()
        except (OSError, ValueError):
            pass
        finally:
            handler.release()


def _json_stream_handler() -> logging.StreamHandler[IO[str]] | None:
    handlers = logging.getLogger().handlers
    if len(handlers) != 1 or not isinstance(handlers[0], logging.StreamHandler):
        return None
    handler: logging.StreamHandler[IO[str]] = handlers[0]
    formatter = handler.formatter
    if not isinstance(formatter, structlog.stdlib.ProcessorFormatter):
        return None
    renderer = formatter.processors[-1] if formatter.processors else None
    if not isinstance(renderer, structlog.processors.JSONRenderer):
        return None
    return handler
