"""Shared CLI output helpers: JSON to stdout, one-line errors to stderr with an exit code,
ISO 8601 times, and the log level the ``-v`` flag picks for a command's own log lines."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, NoReturn, TextIO, cast

import typer

_verbose = False


def set_verbose(on: bool) -> None:
    global _verbose
    _verbose = on


def log_level() -> str:
    """``warning`` with ``-v`` (retries, for one), else ``error``: one line says what failed."""
    return "warning" if _verbose else "error"


class _Stderr:
    """Whatever ``sys.stderr`` is at the time of writing (test runners swap it)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()

    def isatty(self) -> bool:
        return sys.stderr.isatty()


STDERR = cast(TextIO, _Stderr())


def configure_cli_logging(secrets: Sequence[str | None] | None = None) -> None:
    """Log lines of a short command go to stderr (stdout carries its output), at ``log_level``."""
    from calhooks.service.core.logs import configure_logging

    configure_logging(log_level(), "console", stream=STDERR, secrets=secrets or [])


def iso(epoch: float | None) -> str:
    """An epoch time as ISO 8601 in UTC, to the millisecond (``-`` for none)."""
    if epoch is None:
        return "-"
    return datetime.fromtimestamp(float(epoch), UTC).isoformat(timespec="milliseconds")


def print_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2, ensure_ascii=False, default=str))


def fail(message: str, code: int = 1) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)
