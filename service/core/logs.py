"""structlog configuration: one processor chain, composed here, applied once per process.

``configure_logging()`` wires structlog (and the standard library's root logger, so uvicorn's
and arq's records go through the same chain) to write JSON lines in production or a
readable console view in a terminal. Context is bound with ``structlog.contextvars``
(event id, trigger, rule, tool ...) and merged into every line.

``redact_secrets`` runs last before rendering: it masks values under secret-looking keys,
Cal.com API keys (``cal_...``) anywhere in a string, and any value registered with
``register_secret`` (the configured API key, webhook secrets), so none reaches a log.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any, Literal, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

REDACTED = "[REDACTED]"

_SECRET_KEYS = re.compile(
    r"(api[_-]?key|secret|password|token|authorization|x-cal-secret-key|signature|private[_-]?key)",
    re.IGNORECASE,
)
# Cal.com API keys (``cal_live_...``, ``cal_test_...``; Cal.com only checks ``cal_``), but not
# the 37 tool names, which are all ``cal_organizations_...`` and must stay readable in logs.
_API_KEY = re.compile(r"\bcal_(?!organizations_)[A-Za-z0-9_]{6,}")
_registered: set[str] = set()


def register_secret(value: str | None) -> None:
    """Mask every later occurrence of ``value`` in log lines (ignored if short or empty)."""
    if value and len(value) >= 6:
        _registered.add(value)


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        for secret in _registered:
            if secret in value:
                value = value.replace(secret, REDACTED)
        return _API_KEY.sub(REDACTED, value)
    if isinstance(value, MutableMapping):
        return {
            k: REDACTED if isinstance(k, str) and _SECRET_KEYS.search(k) else _scrub(v)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_scrub(v) for v in value]
    return value


def redact_secrets(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """structlog processor: mask secrets in keys, registered values and API-key patterns."""
    scrubbed: EventDict = _scrub(event_dict)
    return scrubbed


def _shared_processors() -> list[Processor]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
        redact_secrets,
    ]


def _renderer(log_format: Literal["auto", "json", "console"], stream: TextIO) -> Processor:
    console = log_format == "console" or (log_format == "auto" and stream.isatty())
    if console:
        return structlog.dev.ConsoleRenderer(colors=stream.isatty())
    return structlog.processors.JSONRenderer()


def configure_logging(
    level: str = "info",
    log_format: Literal["auto", "json", "console"] = "auto",
    *,
    stream: TextIO | None = None,
    secrets: Iterable[str | None] = (),
) -> None:
    """Set up structlog and the stdlib root logger to share one processor chain."""
    stream = stream or sys.stderr
    for secret in secrets:
        register_secret(secret)
    numeric_level = logging.getLevelName(level.upper())
    shared = _shared_processors()
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            _renderer(log_format, stream),
        ],
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric_level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "arq"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    logging.getLogger("httpx").setLevel(max(numeric_level, logging.WARNING))


def configure_from_settings() -> None:
    """``configure_logging`` with the process settings and their secrets registered."""
    from calhooks.service.core.settings import get_settings

    settings = get_settings()
    configure_logging(
        settings.log_level,
        settings.log_format,
        secrets=[
            settings.api_key.get_secret_value() if settings.api_key else None,
            settings.client_secret.get_secret_value() if settings.client_secret else None,
        ],
    )
