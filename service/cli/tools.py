"""``calhooks tools``: list, describe and call the 37 Cal.com organization tools.

``--json`` prints a command's output as JSON; ``tools call`` takes its input parameters as
``--param key=value`` or ``--input JSON`` (``--json JSON``, its old spelling, still works).
"""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any

import typer

from calhooks.service.calcom.errors import ToolError
from calhooks.service.calcom.tools import TOOLS, Parameter, Tool, get_tool
from calhooks.service.cli.output import configure_cli_logging, fail, print_json

AsJson = Annotated[bool, typer.Option("--json", help="Print JSON.")]

app = typer.Typer(help="The 37 Cal.com organization tools.", no_args_is_help=True)


def _summary(tool: Tool) -> dict[str, Any]:
    return {"name": tool.name, "method": tool.method, "path": tool.path, "summary": tool.summary}


@app.command("list")
def list_tools(as_json: AsJson = False) -> None:
    """Print every tool: name, method, path and summary."""
    if as_json:
        print_json([_summary(tool) for tool in TOOLS.values()])
        return
    width = max(len(name) for name in TOOLS)
    for tool in TOOLS.values():
        typer.echo(f"{tool.name:<{width}}  {tool.method:<6} {tool.path}  {tool.summary}")


def _describe(tool: Tool) -> str:
    lines = [
        tool.name,
        f"  {tool.method} {tool.path}  -> {tool.success_status}",
        f"  {tool.summary}",
    ]
    lines.append("  parameters:")
    for p in tool.parameters:
        flags = "required" if p.required else "optional"
        extra = []
        if p.enum:
            extra.append("one of " + ", ".join(json.dumps(v) for v in p.enum))
        for key in ("minimum", "maximum", "minLength", "pattern", "default"):
            if key in p.schema:
                extra.append(f"{key} {p.schema[key]}")
        detail = f" ({'; '.join(extra)})" if extra else ""
        lines.append(f"    {p.name:<24} {p.type:<16} {p.location:<6} {flags}{detail}")
        if p.description:
            lines.append(f"      {p.description.splitlines()[0]}")
    return "\n".join(lines)


@app.command()
def describe(name: str, as_json: AsJson = False) -> None:
    """Print one tool's parameters: type, where it goes, required, enums and constraints."""
    try:
        tool = get_tool(name)
    except ToolError as exc:
        fail(str(exc))
    if as_json:
        parameters = [
            {"name": p.name, "in": p.location, "required": p.required, "schema": p.schema}
            for p in tool.parameters
        ]
        print_json({**_summary(tool), "status": tool.success_status, "parameters": parameters})
        return
    typer.echo(_describe(tool))


def coerce(parameter: Parameter, text: str) -> Any:
    """Turn a ``--param`` string into the JSON type the parameter's schema asks for."""
    kinds = parameter.schema.get("type")
    kinds = kinds if isinstance(kinds, list) else [kinds]
    if text == "null" and "null" in kinds:
        return None
    if text[:1] in "[{":
        return json.loads(text)
    if "integer" in kinds:
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"expected integer, got {text!r}") from None
    if "number" in kinds:
        try:
            return float(text)
        except ValueError:
            raise ValueError(f"expected number, got {text!r}") from None
    if "boolean" in kinds:
        if text.lower() not in ("true", "false"):
            raise ValueError(f"expected true or false, got {text!r}")
        return text.lower() == "true"
    if "array" in kinds:
        item = Parameter(
            parameter.name, parameter.location, parameter.schema.get("items", {}), False
        )
        return [coerce(item, part) for part in text.split(",") if part]
    return text


def parse_params(tool: Tool, pairs: list[str], raw_json: str | None) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if raw_json:
        try:
            loaded = json.loads(raw_json)
        except ValueError as exc:
            raise ValueError(f"--input is not JSON: {exc}") from None
        if not isinstance(loaded, dict):
            raise ValueError("--input must be a JSON object")
        params.update(loaded)
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep:
            raise ValueError(f"--param {pair!r} is not key=value")
        parameter = tool.by_name.get(key)
        try:
            params[key] = coerce(parameter, text) if parameter else text
        except ValueError as exc:
            raise ValueError(f"{tool.name}: {key}: {exc}") from None
    return params


@app.command()
def call(
    name: str,
    param: Annotated[list[str] | None, typer.Option("--param", "-p", help="key=value")] = None,
    raw_json: Annotated[
        str | None,
        typer.Option(
            "--input", "--json", "-i", help="All parameters as a JSON object (--json: old name)."
        ),
    ] = None,
) -> None:
    """Call a tool against Cal.com (CALHOOKS_API_URL) and print the JSON result."""
    from calhooks.service.calcom.client import CalcomClient
    from calhooks.service.core.settings import get_settings

    settings = get_settings()
    configure_cli_logging([settings.api_key.get_secret_value() if settings.api_key else None])
    try:
        tool = get_tool(name)
        params = parse_params(tool, param or [], raw_json)
    except (ToolError, ValueError) as exc:
        fail(str(exc))

    async def run() -> Any:
        async with CalcomClient.from_settings(settings) as client:
            return await client.call(tool, **params)

    try:
        result = asyncio.run(run())
    except ToolError as exc:
        fail(str(exc))
    print_json(result)
