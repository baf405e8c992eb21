"""A small real file system that fills up: a tmpfs mounted for one test (Linux, as root)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


@contextmanager
def small_tmpfs(where: Path, size: str) -> Iterator[Path]:
    """Mount a tmpfs of ``size`` (``"2m"``) at ``where`` for the block and unmount it after;
    skips the test, saying why, where the platform does not allow it (not Linux, not root, no
    ``mount``, a container without the capability)."""
    if sys.platform != "linux" or shutil.which("mount") is None:
        pytest.skip("a full-disk test needs Linux and mount(8); the simulated ENOSPC tests ran")
    where.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        reason = mounted.stderr.strip() or f"mount exited with {mounted.returncode}"
        pytest.skip(f"cannot mount a {size} tmpfs here ({reason}); the simulated ENOSPC tests ran")
    try:
        yield where
    finally:
        subprocess.run(["umount", "--lazy", str(where)], check=True)


def resize_tmpfs(where: Path, size: str) -> None:
    """Grow (or shrink, down to what it holds) the tmpfs mounted at ``where``."""
    subprocess.run(["mount", "-o", f"remount,size={size}", str(where)], check=True)


def fill(where: Path, leave: int = 0) -> Path:
    """Write a file into ``where`` until the disk is full (less ``leave`` bytes); returns it."""
    filler = where / "filler.bin"
    block = b"\0" * 65536
    with open(filler, "wb", buffering=0) as handle:
        try:
            while shutil.disk_usage(where).free > leave + len(block):
                handle.write(block)
        except OSError:
            pass
    return filler
