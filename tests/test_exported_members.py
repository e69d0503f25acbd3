"""The public API: what ``import calhooks`` offers, as httpx guards its own."""

from __future__ import annotations

import subprocess
import sys

import pytest

import calhooks
import calhooks.service.calcom


def test_all_exports_resolve() -> None:
    """Every name in ``calhooks.__all__`` resolves, to the Cal.com package's object."""
    for name in calhooks.__all__:
        value = getattr(calhooks, name)
        if name != "__version__":
            assert value is getattr(calhooks.service.calcom, name), name


def test_exported_members() -> None:
    """The public names are exactly these: adding or removing one is an API change."""
    assert set(calhooks.__all__) == {
        "TOOLS",
        "CalcomClient",
        "CalcomError",
        "CalcomResponse",
        "CalcomTransportError",
        "Credentials",
        "Parameter",
        "ParameterProblem",
        "Tool",
        "ToolError",
        "ToolValidationError",
        "UnknownToolError",
        "__version__",
        "get_tool",
    }
    assert dir(calhooks) == sorted(calhooks.__all__)


def test_unknown_attribute_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="NoSuchThing"):
        calhooks.NoSuchThing  # noqa: B018


def test_import_calhooks_loads_nothing_else() -> None:
    """``import calhooks`` is free: the client and its dependencies load on first use, and no
    import hook is installed in the importing program (``core.lean`` is the CLI's)."""
    code = (
        "import sys, calhooks; "
        "print(sorted(m for m in sys.modules if m.startswith(('calhooks.', 'httpx', 'structlog',"
        " 'redis', 'pydantic'))), 'jwt' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[] False"


def test_package_is_marked_typed() -> None:
    from importlib import resources

    assert resources.files("calhooks").joinpath("py.typed").is_file()
