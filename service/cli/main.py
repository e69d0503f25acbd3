"""The ``calhooks`` entry point: one Typer app whose command groups load on first use.

``calhooks --help`` and a light command import only the module of the command they run
(``bench/cli_startup.py`` measures it), so each command's entry in ``COMMANDS`` carries the
one-line help shown in the list; ``tests/cli/test_main.py`` checks it against the module's.
Help is plain text (no rich boxes, no ``<bool>`` after flags).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Annotated, Any

import typer

# typer's own click (the `click` package would cost ~70 ms more)
from typer._click.core import Command, Context
from typer._click.exceptions import BadParameter
from typer._click.formatting import HelpFormatter
from typer.core import TyperGroup

from calhooks.service.cli import output


class Lazy:
    """A command living in ``module`` as ``attr``: a Typer group, or a function (one command)."""

    def __init__(self, module: str, attr: str, help: str) -> None:
        self.module = f"calhooks.service.cli.{module}"
        self.attr = attr
        self.help = help

    def load(self, name: str) -> Command:
        target = getattr(importlib.import_module(self.module), self.attr)
        holder = typer.Typer(rich_markup_mode=None, add_completion=False)
        if isinstance(target, typer.Typer):
            target.rich_markup_mode = None
            holder.add_typer(target, name=name)  # a group even with one command
        else:
            holder.command(name=name)(target)
        holder.callback()(lambda: None)  # keeps `holder` a group, so its command is found
        group = typer.main.get_command(holder)
        assert isinstance(group, TyperGroup)
        command = group.commands[name]
        command.name = name
        return command


#: Every command group, in the order ``--help`` lists them.
COMMANDS: dict[str, Lazy] = {
    "dev": Lazy(
        "dev", "dev", "Run the sandbox, intake and a worker together, for trying calhooks."
    ),
    "serve": Lazy(
        "serve", "serve", "Run the web process: the webhook intake, /livez, /readyz, /metrics."
    ),
    "worker": Lazy("worker", "worker", "Run a worker: process queued events with the rules."),
    "tools": Lazy("tools", "app", "The 37 Cal.com organization tools."),
    "rules": Lazy("rules", "app", "Check rules files and try them on an event."),
    "events": Lazy("events", "app", "What happened to the events calhooks received."),
    "dlq": Lazy("dlq", "app", "The dead-letter queue: rules that failed for good."),
    "spool": Lazy("spool", "app", "The intake's disk spool."),
    "reconcile": Lazy(
        "reconcile",
        "reconcile",
        "Reconcile now: queue what Cal.com never delivered and org changes it has no webhook for.",
    ),
    "webhooks": Lazy(
        "webhooks",
        "app",
        "The Cal.com webhook calhooks registers for itself: plan, apply, rotate, test.",
    ),
    "sandbox": Lazy(
        "sandbox",
        "app",
        "A local fake of Cal.com's organization API that also sends signed webhooks.",
    ),
    "mcp": Lazy("mcp", "app", "The 37 Cal.com tools as an MCP server (stdio by default)."),
    "connections": Lazy(
        "connections",
        "app",
        "MCP connections: Cal.com accounts picked per tool call by their PCID.",
    ),
}


class LazyGroup(TyperGroup):
    """Loads a command's module only when that command runs (or shows its own help)."""

    def list_commands(self, ctx: Context) -> list[str]:
        return [*COMMANDS, *super().list_commands(ctx)]

    def get_command(self, ctx: Context, cmd_name: str) -> Command | None:
        found = super().get_command(ctx, cmd_name)
        if found is None and cmd_name in COMMANDS:
            found = COMMANDS[cmd_name].load(cmd_name)
            self.commands[cmd_name] = found
        return found

    def invoke(self, ctx: Context) -> Any:
        try:
            return super().invoke(ctx)
        except BadParameter as exc:
            exc.message = mcp_style(exc)
            raise

    def format_commands(self, ctx: Context, formatter: HelpFormatter) -> None:
        rows = [(name, lazy.help) for name, lazy in COMMANDS.items()]
        for name in super().list_commands(ctx):
            if name not in COMMANDS:
                command = super().get_command(ctx, name)
                rows.append((name, command.get_short_help_str(limit=200) if command else ""))
        with formatter.section("Commands"):
            formatter.write_dl(rows)


#: JSON Schema's names for what an option's value failed to parse as (pydantic's error types).
_EXPECTED = {"int_parsing": "integer", "float_parsing": "number", "bool_parsing": "boolean"}


def mcp_style(exc: BadParameter) -> str:
    """A wrong type said as the MCP server says it: ``expected integer, got 'abc'``."""
    errors = getattr(exc.__cause__, "errors", None)
    if callable(errors):
        found = errors()
        if found and found[0].get("type") in _EXPECTED:
            return f"expected {_EXPECTED[found[0]['type']]}, got {found[0].get('input')!r}"
    return exc.message


app = typer.Typer(
    name="calhooks",
    help="Webhook receiver and event processor for Cal.com organizations.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    add_completion=False,
    cls=LazyGroup,
)


@app.callback()
def root(
    verbose: Annotated[
        bool,
        typer.Option("--verbose", "-v", help="Also log warnings and progress (retries, for one)."),
    ] = False,
) -> None:
    """Webhook receiver and event processor for Cal.com organizations."""
    output.set_verbose(verbose)


@app.command()
def keygen() -> None:
    """Print a new CALHOOKS_ENCRYPTION_KEY (Fernet) for secrets kept in Redis."""
    from calhooks.service.core.secretbox import generate_key

    typer.echo(generate_key())


def exit_on_bad_settings(run: Callable[[], object]) -> None:
    """Run ``run``; a bad setting ends the process with one line on stderr and status 1."""
    try:
        run()
    except Exception as exc:
        # Only a loaded settings module can have raised its error; importing it here would
        # cost every light command pydantic's start-up.
        settings = sys.modules.get("calhooks.service.core.settings")
        if settings is None or not isinstance(exc, settings.SettingsError):
            raise
        typer.echo(f"error: {exc}", err=True)
        raise SystemExit(1) from None


def main(args: Any = None) -> None:
    """Run the CLI; then stop an embedded Redis no other process uses any more."""
    try:
        exit_on_bad_settings(lambda: app(args=args))
    finally:
        _release_embedded_redis()


if __name__ == "__main__":
    main()


def _release_embedded_redis() -> None:
    redisconn = sys.modules.get("calhooks.service.core.redisconn")
    if redisconn is not None:
        redisconn.release_embedded_redis()
