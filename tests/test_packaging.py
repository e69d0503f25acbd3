"""pyproject.toml lists every package of the tree (setuptools' package-dir mapping cannot find
them itself); scripts/check-deploy then proves each file is in the wheel."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_is_listed() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    listed = set(config["tool"]["setuptools"]["packages"])
    found = {"calhooks"} | {
        "calhooks." + ".".join(init.parent.relative_to(ROOT).parts)
        for top in ("service", "workers")
        for init in (ROOT / top).glob("**/__init__.py")
        if "__pycache__" not in init.parts
    }
    assert listed == found, f"add to [tool.setuptools] packages: {sorted(found - listed)}"
