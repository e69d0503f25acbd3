"""The import-linter contracts in pyproject.toml cover every module they are about."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def contract(name_start: str) -> dict[str, Any]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    contracts: list[dict[str, Any]] = config["tool"]["importlinter"]["contracts"]
    [found] = [c for c in contracts if c["name"].startswith(name_start)]
    return found


def test_the_rules_engine_is_kept_from_every_worker_runtime_module() -> None:
    """A new module in workers/ is runtime until said otherwise: the rules may not import it."""
    runtime = {
        f"calhooks.workers.{path.stem}"
        for path in (ROOT / "workers").glob("*.py")
        if path.stem != "__init__"
    }
    forbidden = set(contract("the rules engine knows the registry")["forbidden_modules"])
    assert runtime <= forbidden, sorted(runtime - forbidden)
