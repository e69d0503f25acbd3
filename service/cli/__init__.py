"""The ``calhooks`` command line: one Typer app, one module per command group.

This package is calhooks' processes' entry point (``calhooks ...`` and ``python -m
calhooks.service`` load it before anything else), so it installs ``core.lean`` here, before
any library is imported: rich and PyJWT stay out of the web process and the workers. It is
not done on ``import calhooks``, so a program that uses the client keeps its own imports.
"""

from calhooks.service.core import lean

lean.install()
