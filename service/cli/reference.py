"""The CLI reference of the docs site, generated from the commands themselves.

``cli_reference()`` walks every command of ``calhooks`` and renders its ``--help`` as
Markdown; the docs build (``scripts/docs_hooks.py``) puts it into ``docs/cli.md`` in place of
the ``<!-- cli-reference -->`` marker, so the page cannot drift from the code.
``python -m calhooks.service.cli.reference`` prints it.
"""

from __future__ import annotations

from collections.abc import Iterator

import typer
from typer._click.core import Command, Context
from typer.core import TyperGroup

from calhooks.service.cli.main import app


def _walk(command: Command, parent: Context | None, path: list[str]) -> Iterator[str]:
    ctx = Context(command, info_name=path[-1], parent=parent, terminal_width=100)
    summary = (command.help or "").strip().splitlines()
    title = " ".join(path)
    yield f"## `{title}`\n" if len(path) > 1 else ""
    if len(path) > 1 and summary:
        yield f"{summary[0]}\n"
    yield f"```text\n{command.get_help(ctx).rstrip()}\n```\n"
    if isinstance(command, TyperGroup):
        for name in command.list_commands(ctx):
            child = command.get_command(ctx, name)
            if child is not None and not child.hidden:
                yield from _walk(child, ctx, [*path, name])


def cli_reference() -> str:
    """Every command's help, as Markdown sections (``## `calhooks dlq list` `` ...)."""
    root = typer.main.get_command(app)
    return "\n".join(part for part in _walk(root, None, ["calhooks"]) if part)


if __name__ == "__main__":
    print(cli_reference())
