"""Keeps libraries' optional extras out of calhooks' processes, which never use them.

Installed by the processes' entry point, the ``calhooks.service.cli`` package (``calhooks``
and ``python -m calhooks.service`` load it first), before anything imports structlog or
redis-py; ``import calhooks`` alone does not install it, so a program using the client is
unaffected. Both are plain import-system features, used here because neither library offers a
setting for it (measured in docs/performance.md, "Memory"):

* **rich, imported by structlog** (~4 MB, 80 modules): structlog imports rich when it is
  installed, only to offer rich tracebacks in its console renderer. calhooks writes JSON
  lines in production and plain tracebacks on a terminal (``core/logs.py`` names
  ``plain_traceback``), but rich is always installed (typer and the cel package require it).
  While structlog's own ``__init__`` runs, a finder answers "not installed" for ``rich``:
  structlog then takes its documented no-rich path. Only structlog's import is affected;
  anything importing rich later (the CLI's help, the cel REPL) gets it as usual, and if rich
  was imported before structlog, structlog uses it.
* **click, rich and pygments, imported by httpx** (~5 MB) for its ``httpx`` command-line
  tool (``httpx.main``); without them httpx defines ``main`` as a stub asking for
  ``httpx[cli]``, its documented behaviour when the extra is not installed. Same mechanism.
* **PyJWT, imported by redis-py** (~5 MB with the ``cryptography`` backend it loads):
  ``redis.auth.token`` imports ``jwt`` at the top for its token-based (Entra ID)
  authentication, which calhooks does not use. ``sys.modules`` holds a stand-in for ``jwt`` until
  something reads an attribute of it: redis' ``import jwt`` binds the stand-in, and PyJWT's
  code runs only if redis ever calls it (or anything else imports it and uses it).

``install()`` changes nothing for a library imported before it ran, and does nothing if a
library is missing.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import Any


class _NotInstalled(importlib.abc.MetaPathFinder):
    """Answers "not installed" for the packages it names (inserted only around one import)."""

    def __init__(self, *names: str) -> None:
        self.names = names

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname.partition(".")[0] in self.names:
            raise ModuleNotFoundError(f"No module named {fullname!r}", name=fullname)
        return None


#: Package -> the optional packages it must not see while its ``__init__`` runs.
HIDDEN_WHILE_IMPORTING: dict[str, tuple[str, ...]] = {
    "structlog": ("rich",),
    "httpx": ("click", "rich", "pygments"),
}


class _Hiding(importlib.abc.Loader):
    """A package's own loader, running its ``__init__`` while some packages read as missing."""

    def __init__(self, loader: importlib.abc.Loader, hidden: tuple[str, ...]) -> None:
        self.loader = loader
        self.hidden = hidden

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        finder = _NotInstalled(*self.hidden)
        sys.meta_path.insert(0, finder)
        try:
            self.loader.exec_module(module)
        finally:
            sys.meta_path.remove(finder)

    def __getattr__(self, name: str) -> Any:  # is_package, get_resource_reader, ...
        return getattr(self.loader, name)


class _HidingFinder(importlib.abc.MetaPathFinder):
    """Finds the packages of ``HIDDEN_WHILE_IMPORTING`` as the path finder would, and wraps
    their loaders; steps out of the way once it has found them all."""

    def __init__(self) -> None:
        self.pending = {n for n in HIDDEN_WHILE_IMPORTING if n not in sys.modules}

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in self.pending:
            return None
        self.pending.discard(fullname)
        if not self.pending:
            sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        hidden = tuple(h for h in HIDDEN_WHILE_IMPORTING[fullname] if h not in sys.modules)
        if spec is not None and spec.loader is not None and hidden:
            spec.loader = _Hiding(spec.loader, hidden)
        return spec


def _defer(name: str) -> None:
    """Put a stand-in for module ``name`` in ``sys.modules`` that imports it on first use.

    ``import name`` binds the stand-in; reading any attribute of it (PEP 562's module
    ``__getattr__``) imports the real module, which then replaces it in ``sys.modules``.
    (``importlib.util.LazyLoader`` would be the standard tool, but on Python 3.11 the import
    statement itself reads the module's ``__spec__``, which runs it at once.)
    """
    if importlib.util.find_spec(name) is None:
        return
    stand_in = ModuleType(name, f"{name}, imported on first use (calhooks.service.core.lean)")

    def load(attribute: str) -> Any:
        if sys.modules.get(name) is stand_in:
            del sys.modules[name]
        return getattr(importlib.import_module(name), attribute)

    stand_in.__getattr__ = load  # type: ignore[method-assign]
    sys.modules[name] = stand_in


def install() -> None:
    """Hide the extras of ``HIDDEN_WHILE_IMPORTING`` and defer ``jwt`` (see the docstring)."""
    if not any(isinstance(finder, _HidingFinder) for finder in sys.meta_path):
        finder = _HidingFinder()
        if finder.pending:
            sys.meta_path.insert(0, finder)
    if "jwt" not in sys.modules:
        _defer("jwt")
