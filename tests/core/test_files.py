"""File stamps: a change is seen after an edit in place or a rename over the file."""

from __future__ import annotations

import os
from pathlib import Path

from calhooks.service.core.files import file_stamp, file_stamp_or_none


def test_same_file_same_stamp(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text("version: 1\n")
    assert file_stamp(path) == file_stamp(path)


def test_an_edit_in_place_changes_the_stamp(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text("version: 1\n")
    before = file_stamp(path)
    path.write_text("version: 1\nrules: []\n")
    assert file_stamp(path) != before


def test_a_rename_over_the_file_changes_the_stamp(tmp_path: Path) -> None:
    """Kubernetes swaps a mounted Secret by renaming a new file over the old one."""
    path = tmp_path / "secrets.json"
    path.write_text("{}")
    before = file_stamp(path)
    fresh = tmp_path / "fresh.json"
    fresh.write_text("{}")  # same size, possibly the same mtime: only the inode differs
    os.replace(fresh, path)
    assert file_stamp(path) != before


def test_a_missing_file_has_no_stamp(tmp_path: Path) -> None:
    assert file_stamp_or_none(tmp_path / "absent") is None
