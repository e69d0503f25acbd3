"""The one log line per delivery, written without costing the intake its throughput.

Through the standard chain (structlog -> ``logging`` -> ``ProcessorFormatter`` -> a flushed
write) a line costs the intake about a third of its time per request. When the process logs
JSON lines to a stream (``service.core.logs`` in production), ``AccessLog`` writes the same
line itself - the same keys (``event``, ``level``, ``logger``, ``timestamp``, the bound
context vars, the fields) - and the lines of all requests answered in one turn of the event
loop in one write, under the handler's lock so they never interleave with other records.

In any other set-up (a console in a terminal, ``structlog.testing.capture_logs`` in tests) it
simply logs through structlog. The fields are chosen by the intake and hold no body, but the
line is redacted as the standard chain redacts: values under secret-looking keys are masked
when written, and each batch of rendered lines goes through ``scrub_text`` (registered
secrets, API keys) - one pass per write, not per field.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import IO, Any

import orjson
import structlog

from calhooks.service.core.logs import REDACTED, is_secret_key, scrub_text

LOGGER_NAME = "calhooks.intake"


class AccessLog:
    """``log(level, event, **fields)`` for the per-delivery line; see the module docstring."""

    def __init__(self, name: str = LOGGER_NAME) -> None:
        self.name = name
        self._structlog = structlog.get_logger(name)
        self._handler: logging.StreamHandler[IO[str]] | None = _json_stream_handler()
        self._lines: list[bytes] = []

    @property
    def fast(self) -> bool:
        """Whether lines are written directly (JSON to a stream) rather than via structlog."""
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
        for key in [key for key in record if is_secret_key(key)]:
            record[key] = REDACTED
        try:
            line = orjson.dumps(record, default=str)
        except TypeError:  # a value orjson will not take: let structlog render it
            getattr(self._structlog, level)(event, **fields)
            return
        if not self._lines:
            try:
                asyncio.get_running_loop().call_soon(self.flush)
            except RuntimeError:  # no loop: write at once
                self._lines.append(line)
                self.flush()
                return
        self._lines.append(line)

    def flush(self) -> None:
        """Write the waiting lines in one go."""
        handler, lines = self._handler, self._lines
        if handler is None or not lines:
            return
        self._lines = []
        text = scrub_text(b"\n".join(lines).decode() + "\n")
        handler.acquire()
        try:
            handler.stream.write(text)
            handler.flush()
        except (OSError, ValueError):  # a closed or broken stream must not fail a delivery
            pass
        finally:
            handler.release()


def _json_stream_handler() -> logging.StreamHandler[IO[str]] | None:
    """The root logger's only handler, if it renders structlog records as JSON to a stream."""
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
