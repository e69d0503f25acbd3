"""structlog configuration: one processor chain, composed here, applied once per process.

``configure_logging()`` wires structlog (and the standard library's root logger, so uvicorn's
and arq's records go through the same chain) to write JSON lines in production or a
readable console view in a terminal. Context is bound with ``structlog.contextvars``
(event id, trigger, rule, tool ...) and merged into every line.

``redact_secrets`` runs last before rendering: it masks values under secret-looking keys,
Cal.com API keys (``cal_...``) anywhere in a string, and any value registered with
``register_secret``, so none reaches a log. ``settings_secrets`` lists what the settings
hold (API key, client secret, encryption keys, the Redis URL's password, MCP tokens,
webhook signing secrets); MCP connections and the secrets file register theirs as they load.
Values that are not strings are covered too: bytes, and any other object whose ``repr``
(what the renderers print) shows a secret. ``scrub_text`` is the same masking for a line
rendered elsewhere (the intake's fast delivery log).
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Literal, TextIO
from urllib.parse import urlsplit

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

if TYPE_CHECKING:
    from calhooks.service.core.settings import Settings

REDACTED = "[REDACTED]"

_SECRET_KEYS = re.compile(
    r"(api[_-]?key|secret|password|token|authorization|x-cal-secret-key|signature|private[_-]?key)",
    re.IGNORECASE,
)
# Cal.com API keys (``cal_live_...``, ``cal_test_...``; Cal.com only checks ``cal_``), but not
# the 37 tool names, which are all ``cal_organizations_...`` and must stay readable in logs.
_API_KEY = re.compile(r"\bcal_(?!organizations_)[A-Za-z0-9_]{6,}")
_registered: set[str] = set()
#: The registered secrets as one pattern (``None``: rebuild at next use; see ``_pattern``).
_matcher: re.Pattern[str] | None = None


def register_secret(value: str | None) -> None:
    """Mask every later occurrence of ``value`` in log lines (ignored if short or empty)."""
    global _matcher
    if value and len(value) >= 6 and value not in _registered:
        _registered.add(value)
        _matcher = None


def _pattern() -> re.Pattern[str] | None:
    """One regular expression matching every registered secret, rebuilt when one is added.

    A deployment with many connections registers hundreds of webhook secrets, and every
    string of every log line is scrubbed: testing each secret in turn made a log line cost
    about a microsecond per secret. The pattern is grouped by first character, longest secret
    first, so the regex engine skips a position unless its character starts some secret and
    factors out what the secrets of a group share (``whsec_``): a line without a secret costs
    about the same with one secret registered or hundreds.
    """
    global _matcher
    matcher = _matcher
    if matcher is None and _registered:
        groups: dict[str, list[str]] = {}
        for secret in sorted(_registered, key=len, reverse=True):
            groups.setdefault(secret[0], []).append(re.escape(secret[1:]))
        matcher = re.compile(
            "|".join(f"{re.escape(first)}(?:{'|'.join(rests)})" for first, rests in groups.items())
        )
        _matcher = matcher
    return matcher


def scrub_text(value: str) -> str:
    """``value`` with registered secrets and Cal.com API keys masked."""
    matcher = _pattern()
    if matcher is not None:
        value = matcher.sub(REDACTED, value)
    return _API_KEY.sub(REDACTED, value)


@lru_cache(maxsize=4096)
def _secret_key(name: str) -> bool:
    return _SECRET_KEYS.search(name) is not None


def is_secret_key(name: object) -> bool:
    """Whether a field called ``name`` holds a secret whatever its value looks like."""
    return isinstance(name, str) and _secret_key(name)


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return scrub_text(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, Mapping):
        return {k: REDACTED if is_secret_key(k) else _scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_scrub(v) for v in value]
    if isinstance(value, bytes | bytearray):
        text = bytes(value).decode("utf-8", errors="replace")
        scrubbed = scrub_text(text)
        return value if scrubbed == text else scrubbed
    # Any other object is rendered by its repr: mask what that would show.
    try:
        shown = repr(value)
    except Exception:  # a broken __repr__ must not break logging
        return f"<{type(value).__name__}>"
    scrubbed = scrub_text(shown)
    return value if scrubbed == shown else scrubbed


#: structlog's own bookkeeping in an event dict (``ProcessorFormatter``): never rendered.
_META = frozenset({"_record", "_from_structlog"})


def redact_secrets(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """structlog processor: mask secrets in keys, registered values and API-key patterns."""
    return {
        key: value if key in _META else REDACTED if is_secret_key(key) else _scrub(value)
        for key, value in event_dict.items()
    }


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
        # Plain tracebacks whether or not rich was imported (core/lean.py keeps it out).
        return structlog.dev.ConsoleRenderer(
            colors=stream.isatty(), exception_formatter=structlog.dev.plain_traceback
        )
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


def _parts(value: str, separator: str = ",") -> list[str]:
    return [part.strip() for part in value.split(separator) if part.strip()]


def settings_secrets(settings: Settings) -> list[str]:
    """Every secret the settings hold, as the values that could appear in a log line."""
    found: list[str] = []
    for field in ("api_key", "client_secret", "mcp_token"):
        secret = getattr(settings, field)
        if secret is not None:
            found.append(secret.get_secret_value())
    if settings.encryption_key is not None:
        found.extend(_parts(settings.encryption_key.get_secret_value()))
    if settings.mcp_tokens is not None:
        found.extend(
            p.partition(":")[2] or p for p in _parts(settings.mcp_tokens.get_secret_value())
        )
    if settings.webhook_secrets is not None:
        found.extend(
            p.partition(";")[0] for p in _parts(settings.webhook_secrets.get_secret_value())
        )
    if settings.redis_url is not None:
        url = settings.redis_url.get_secret_value()
        try:
            password = urlsplit(url).password
        except ValueError:
            password = None
        found.extend(p for p in (password,) if p)
    return found


def configure_from_settings() -> None:
    """``configure_logging`` with the process settings and their secrets registered."""
    from calhooks.service.core.settings import get_settings

    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format, secrets=settings_secrets(settings))
