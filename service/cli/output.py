"""Shared CLI output helpers: JSON to stdout, one-line errors to stderr with an exit code."""

from __future__ import annotations

import json
from typing import Any, NoReturn

import typer


def print_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2, ensure_ascii=False, default=str))


def fail(message: str, code: int = 1) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)
