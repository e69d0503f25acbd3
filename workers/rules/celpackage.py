"""Imports ``cel`` (common-expression-language) without its command-line REPL.

The package's ``__init__`` imports ``cel.cli`` - typer, rich, prompt_toolkit and pygments,
about 25 MB of a worker's memory and 200 modules - for a REPL the workers never run.
``install()`` puts a ``cel`` package in ``sys.modules`` made of what its ``__init__`` would
export but the REPL: the compiled evaluator (``cel.cel``) and ``cel.stdlib``. ``cel.cli``
stays importable on demand (the package keeps its ``__path__``). When ``cel`` was already
imported in full, nothing changes.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from types import ModuleType


def install() -> ModuleType:
    """The ``cel`` package, imported without ``cel.cli`` if it is not imported yet."""
    loaded = sys.modules.get("cel")
    if loaded is not None:
        return loaded
    spec = importlib.util.find_spec("cel")
    if spec is None or spec.submodule_search_locations is None:
        raise ImportError("the cel package (common-expression-language) is not installed")
    package = importlib.util.module_from_spec(spec)  # created, not executed
    sys.modules["cel"] = package
    try:
        core = importlib.import_module("cel.cel")
        public = getattr(core, "__all__", None) or [n for n in vars(core) if not n.startswith("_")]
        for name in public:
            setattr(package, name, getattr(core, name))
        package.cel = core  # type: ignore[attr-defined]
        package.stdlib = importlib.import_module("cel.stdlib")  # type: ignore[attr-defined]
    except BaseException:
        del sys.modules["cel"]
        raise
    return package


install()
