"""The sandbox package loads its modules on first use of a name: every exported name is
found where the package says it lives, and importing the package alone builds nothing."""

from __future__ import annotations

import subprocess
import sys

import pytest

import calhooks.service.sandbox as sandbox


def test_every_exported_name_resolves_from_its_module() -> None:
    assert set(sandbox._WHERE) == set(sandbox.__all__)
    for name in sandbox.__all__:
        assert getattr(sandbox, name) is not None, name


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no_such_name"):
        sandbox.no_such_name  # noqa: B018 - the lookup is the test


def test_importing_the_package_loads_no_module_of_it() -> None:
    code = (
        "import sys, calhooks.service.sandbox\n"
        "print(sorted(m for m in sys.modules if m.startswith('calhooks.service.sandbox.')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert result.stdout.strip() == "[]"
