"""File helpers shared by every reader, writer and scanner: image suffixes, JSON documents,
atomic replacement, a full disk, and one writer at a time.

Atomic writes go to a hidden temporary sibling ``.NAME.<8 hex>.tmp`` (same folder, so the rename
never crosses file systems) that replaces the target only once it is complete; on any failure the
temporary is removed and the target is untouched. The file gets the permissions the umask
gives any new file (:func:`new_file_mode`), not those of the library that wrote the temporary
(safetensors writes 0600, ``mkdtemp`` makes 0700). A full disk, however the writing library
reports it, becomes one :class:`~deeplabcli.errors.DiskFullError` naming the file. Temporaries
that a killed process left behind are found by their name (:func:`stale_temporaries`).

:func:`exclusive_lock` lets one process at a time write a directory (an advisory ``flock`` that
the kernel releases when the process dies, however it dies); :func:`file_identity` tells
whether an output would replace one of the inputs; :func:`check_writable` probes an output
location before any work is done.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import tempfile
import time
import uuid
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .errors import DiskFullError, OutputWriteError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks, see exclusive_lock
    fcntl = None  # type: ignore[assignment]

#: Suffixes picked up when scanning a directory (explicitly named files may have any suffix).
IMAGE_SUFFIXES = frozenset((
    ".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".dib", ".gif", ".tif", ".tiff", ".webp",
    ".ppm", ".pgm", ".pbm", ".pnm", ".tga", ".avif",
))  # fmt: skip


def is_image_name(path: Path) -> bool:
    """True if ``path``'s suffix is one of :data:`IMAGE_SUFFIXES` (case-insensitive)."""
    return path.suffix.lower() in IMAGE_SUFFIXES


#: errno values that mean "the disk (or the user's quota) is full"
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
#: how libraries that do not raise OSError (safetensors, torch's zip writer) word a full disk
_DISK_FULL_TEXT = re.compile(r"No space left on device|Disk quota exceeded|os error 28\b")
_TEMPORARY = re.compile(r"\.(?P<name>.+)\.[0-9a-f]{8}\.tmp")


def temporary_sibling(path: Path) -> Path:
    """A fresh hidden name beside ``path``: ``.NAME.1a2b3c4d.tmp``."""
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")


def stale_temporaries(directory: Path, names: Collection[str]) -> list[Path]:
    """The temporaries of :func:`temporary_sibling` for ``names`` in ``directory``
    (``.train_state.pt.1a2b3c4d.tmp`` for ``train_state.pt``), sorted; nothing else matches.
    Only the one writer of ``directory`` may remove them (see :func:`exclusive_lock`)."""
    if not Path(directory).is_dir():
        return []
    found = []
    for entry in Path(directory).iterdir():
        match = _TEMPORARY.fullmatch(entry.name)
        if match and match["name"] in names:
            found.append(entry)
    return sorted(found)


def is_disk_full(error: BaseException) -> bool:
    """True if ``error`` (or an exception it was raised from) says the disk is full: an
    OSError with ENOSPC/EDQUOT, or a library's own error carrying that OS message."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in DISK_FULL_ERRNOS:
            return True
        if not isinstance(current, OSError) and _DISK_FULL_TEXT.search(str(current)):
            return True
        current = current.__cause__ or current.__context__
    return False


@contextmanager
def disk_full_as_error(path: Path) -> Iterator[None]:
    """Turn a full disk while the block writes ``path`` into :class:`DiskFullError`."""
    try:
        yield
    except DiskFullError:
        raise
    except Exception as error:
        if is_disk_full(error):
            raise DiskFullError(path) from None
        raise


@contextmanager
def atomic_file(path: Path, *, mkdir: bool = False) -> Iterator[Path]:
    """Yield a temporary path to write; when the block ends normally it replaces ``path``.
    A full disk raises :class:`DiskFullError` naming ``path``; the temporary is always removed.

    >>> with atomic_file(Path("out.txt")) as tmp:  # doctest: +SKIP
    ...     tmp.write_text("done")
    """
    tmp = temporary_sibling(path)
    try:
        with disk_full_as_error(path):
            if mkdir:
                path.parent.mkdir(parents=True, exist_ok=True)
            yield tmp
            if tmp.is_file():
                os.chmod(tmp, new_file_mode())
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def process_umask() -> int:
    """This process's umask, read without changing it where the system tells it
    (``/proc/self/status``); elsewhere it is set and restored at once."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def new_file_mode(*, directory: bool = False) -> int:
    """The permission bits the umask gives a new file (0o666 & ~umask) or directory (0o777)."""
    return (0o777 if directory else 0o666) & ~process_umask()


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


# ---------------------------------------------------------------------- outputs vs inputs
def file_identity(path: Path) -> tuple[int, int] | None:
    """``(device, inode)`` of the file ``path`` names (links followed), or None when nothing is
    there: two paths name one file exactly when their identities are equal (as
    :func:`os.path.samefile` decides), whatever links, ``..`` or spellings lead to it."""
    try:
        status = os.stat(path)
    except (OSError, ValueError):
        return None
    return status.st_dev, status.st_ino


def check_writable(path: Path, fix: str) -> None:
    """Raise :class:`OutputWriteError` ``cannot write to PATH (<reason>). <fix>.`` unless a file
    or folder can be created at ``path``: the nearest existing folder at or above it accepts a
    new entry (probed with an empty hidden folder that is removed at once)."""
    path = Path(path)
    here = path
    while not here.exists() and here != here.parent:
        if here.is_symlink():  # a dangling link: its target folder is missing
            break
        here = here.parent
    if here.exists() and not here.is_dir():
        where = "is a file" if here == path else f"is under the file {here}"
        raise OutputWriteError(f"cannot write to {path} (it {where}). {fix}.")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".deeplab-probe.", dir=here))
    except OSError as error:
        reason = error.strerror or type(error).__name__
        if error.errno == errno.ENOENT:  # an existing folder that refuses entries (/proc)
            reason = "this folder does not accept new files"
        raise OutputWriteError(f"cannot write to {path} ({reason}). {fix}.") from None


# ---------------------------------------------------------------------- one writer at a time
@contextmanager
def exclusive_lock(path: Path, busy: Callable[[int | None], Exception]) -> Iterator[None]:
    """Hold an exclusive advisory lock on the file ``path`` for the block; the file holds this
    process's PID while it is locked and is removed when the block ends.

    Another process holding it raises ``busy(pid)`` (``pid`` None when it cannot be read).
    The lock is ``fcntl.flock``: the kernel drops it when its holder dies, so a process killed
    by SIGKILL leaves at most a stale file, which the next process locks as usual. Where
    ``fcntl`` does not exist (Windows) the block runs unlocked.
    """
    if fcntl is None:  # pragma: no cover
        yield
        return
    descriptor = _lock(Path(path), busy)
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # while still locked: a waiter re-checks that its file is this one
        os.close(descriptor)


def _lock(path: Path, busy: Callable[[int | None], Exception]) -> int:
    while True:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _holder(descriptor)
            os.close(descriptor)
            raise busy(pid) from None
        except BaseException:
            os.close(descriptor)
            raise
        # the holder may have removed the file between our open and flock: lock the new one
        if file_identity(path) == _fd_identity(descriptor):
            break
        os.close(descriptor)
    os.ftruncate(descriptor, 0)
    os.write(descriptor, f"{os.getpid()}\n".encode())
    return descriptor


def _fd_identity(descriptor: int) -> tuple[int, int]:
    status = os.fstat(descriptor)
    return status.st_dev, status.st_ino


def _holder(descriptor: int, attempts: int = 20) -> int | None:
    """The PID in a lock file another process holds (it writes it just after locking)."""
    for _ in range(attempts):
        text = os.pread(descriptor, 32, 0).decode("ascii", "replace").strip()
        if text.isdigit():
            return int(text)
        time.sleep(0.05)
    return None
