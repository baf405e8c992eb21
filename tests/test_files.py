"""Atomic writes replace the target only when complete; image names are matched in any case."""

from __future__ import annotations

from pathlib import Path

import pytest

from deeplabcli.files import atomic_file, is_image_name, write_text_atomic


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "list.txt"
    target.write_text("old\n")
    with pytest.raises(RuntimeError, match="interrupted"), atomic_file(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("interrupted")
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["list.txt"]


def test_a_complete_write_replaces_and_creates_folders(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "list.txt"
    write_text_atomic(target, "new\n", mkdir=True)
    assert target.read_text() == "new\n"
    write_text_atomic(target, "newer\n")
    assert target.read_text() == "newer\n"
    assert sorted(p.name for p in target.parent.iterdir()) == ["list.txt"]


def test_image_names_in_any_case() -> None:
    assert is_image_name(Path("a/B.JPG")) and is_image_name(Path("c.webp"))
    assert not is_image_name(Path("notes.txt")) and not is_image_name(Path("mask"))
