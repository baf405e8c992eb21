"""File helpers shared by every reader, writer and scanner: image suffixes, JSON documents and
atomic replacement.

Atomic writes go to a hidden temporary sibling (same folder, so the rename never crosses file
systems) that replaces the target only once it is complete; on any failure the temporary is
removed and the target is untouched.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

#: Suffixes picked up when scanning a directory (explicitly named files may have any suffix).
IMAGE_SUFFIXES = frozenset((
    ".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".dib", ".gif", ".tif", ".tiff", ".webp",
    ".ppm", ".pgm", ".pbm", ".pnm", ".tga", ".avif",
))  # fmt: skip


def is_image_name(path: Path) -> bool:
    """True if ``path``'s suffix is one of :data:`IMAGE_SUFFIXES` (case-insensitive)."""
    return path.suffix.lower() in IMAGE_SUFFIXES


def temporary_sibling(path: Path) -> Path:
    """A fresh hidden name beside ``path``: ``.NAME.1a2b3c4d.tmp``."""
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")


@contextmanager
def atomic_file(path: Path, *, mkdir: bool = False) -> Iterator[Path]:
    """Yield a temporary path to write; when the block ends normally it replaces ``path``.

    >>> with atomic_file(Path("out.txt")) as tmp:  # doctest: +SKIP
    ...     tmp.write_text("done")
    """
    if mkdir:
        path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: Path, text: str, *, mkdir: bool = False) -> None:
    """``path.write_text(text)`` (UTF-8), atomically."""
    with atomic_file(path, mkdir=mkdir) as tmp:
        tmp.write_text(text, encoding="utf-8")


def fsync_file(path: Path) -> None:
    """Flush ``path``'s contents to the disk (before it is renamed into place)."""
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def read_json(path: Path, error: Callable[[str], Exception], fix: str) -> Any:
    """The parsed JSON document at ``path``. A file that cannot be read or parsed raises
    ``error("<path> is not valid JSON (<reason>). <fix>.")``: the one JSON reader of the package."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as problem:
        raise error(f"{path} is not valid JSON ({problem}). {fix}.") from None
