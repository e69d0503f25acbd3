"""The docs site: every page is in the nav, the Layout table matches the tree, the generated
parts are filled in, and the README stays short and points into the docs."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from calhooks.service.cli.main import COMMANDS
from scripts.docs_hooks import fill, readme_for_site

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def nav_pages() -> set[str]:
    text = (ROOT / "mkdocs.yml").read_text()
    return set(re.findall(r"^  - [^:]+: (\S+\.md)$", text, re.M))


def test_every_page_is_in_the_nav() -> None:
    """A page outside the nav is unreachable from the site's menu."""
    pages = {path.name for path in DOCS.glob("*.md")}
    assert nav_pages() == pages


def test_the_layout_table_matches_the_tree() -> None:
    """Each path in docs/layout.md exists, and every package of the tree has a row."""
    page = (DOCS / "layout.md").read_text()
    listed = re.findall(r"^\| `([^`]+)` \|", page, re.M)
    for path in listed:
        assert (ROOT / path).exists(), f"docs/layout.md lists {path}, which does not exist"
    packages = [
        str(init.parent.relative_to(ROOT)) + "/"
        for top in ("service", "workers")
        for init in (ROOT / top).glob("**/__init__.py")
        if "__pycache__" not in init.parts and init.parent.name != "operations"
    ]
    for package in packages:
        if package != "service/":
            assert package in listed, f"docs/layout.md has no row for {package}"
    assert "```mermaid" in page


def test_the_layout_diagram_names_the_import_contract_layers() -> None:
    """Each layer of pyproject.toml's import contract appears in the import diagram."""
    pyproject = (ROOT / "pyproject.toml").read_text()
    layers = re.search(r"layers = \[(.*?)\]", pyproject, re.S)
    assert layers
    page = (DOCS / "layout.md").read_text()
    for layer in re.findall(r'"([^"]+)"', layers.group(1)):
        for module in layer.split(" | "):
            path = module.removeprefix("calhooks.").replace(".", "/")
            shown = path + (".py" if (ROOT / f"{path}.py").exists() else "")
            assert shown in page, f"the import diagram does not show {shown}"


def test_the_cli_reference_is_generated() -> None:
    """docs/cli.md gets every command's help when the site is built."""
    built = fill((DOCS / "cli.md").read_text())
    assert "<!-- cli-reference -->" not in built
    for name in COMMANDS:
        assert f"## `calhooks {name}`" in built
    assert "## `calhooks dlq list`" in built


def test_the_home_page_is_the_readme() -> None:
    """The site's home page is README.md, its docs/ links made relative to the site."""
    home = fill((DOCS / "index.md").read_text())
    assert home.strip() == readme_for_site().strip()
    assert "](docs/" not in home
    for link in re.findall(r"\]\(([^)#]+\.md)\)", home):
        assert (DOCS / link).exists(), link


def test_the_readme_is_short() -> None:
    """What calhooks is, the quick start, a tour and links: the reference lives in docs/."""
    readme = (ROOT / "README.md").read_text()
    assert len(readme) < 10_000
    assert [h for h in re.findall(r"^## (.+)$", readme, re.M)] == [
        "Quick start",
        "A five-minute tour",
        "Documentation",
    ]


def test_mkdocs_config_is_strict() -> None:
    """The build fails on a broken link (strict) and the generated parts come from the hooks."""
    config = yaml.load((ROOT / "mkdocs.yml").read_text(), Loader=yaml.BaseLoader)  # noqa: S506
    assert config["strict"] == "true"
    assert config["hooks"] == ["scripts/docs_hooks.py"]
    assert config["theme"]["name"] == "material"
