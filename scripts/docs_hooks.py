"""MkDocs hooks (``mkdocs.yml``): the parts of the docs site generated from the code.

* ``docs/index.md``: ``<!-- readme -->`` becomes README.md (its ``docs/`` links made relative),
  so the home page and the README are one text;
* ``docs/configuration.md``: ``<!-- settings-table -->`` becomes the table of every setting
  (``python -m calhooks.service.core.settings``);
* ``docs/cli.md``: ``<!-- cli-reference -->`` becomes every command's ``--help``
  (``python -m calhooks.service.cli.reference``).

Neither table is kept in a file, so neither can drift from the code.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def readme_for_site() -> str:
    """README.md as the site's home page: ``docs/x.md`` links become ``x.md``."""
    text = (ROOT / "README.md").read_text()
    return re.sub(r"\]\(docs/", "](", text)


def fill(markdown: str) -> str:
    """Replace the generation markers of one page with what they stand for."""
    if "<!-- readme -->" in markdown:
        markdown = markdown.replace("<!-- readme -->", readme_for_site())
    if "<!-- settings-table -->" in markdown:
        from calhooks.service.core.settings import settings_table

        markdown = markdown.replace("<!-- settings-table -->", settings_table())
    if "<!-- cli-reference -->" in markdown:
        from calhooks.service.cli.reference import cli_reference

        markdown = markdown.replace("<!-- cli-reference -->", cli_reference())
    return markdown


def on_page_markdown(markdown: str, **_: Any) -> str:
    return fill(markdown)
