"""File integrity: sha256 (cached per file version), git blob ids, torchvision name prefixes.

A file that fails :func:`verify_file` is deleted (for a Hub snapshot symlink, its blob too) and
never read; the error says so and how to get a fresh copy.
"""

from __future__ import annotations

import hashlib
import re
import urllib.parse
from pathlib import Path

from ..errors import IntegrityError

_HASH_PREFIX = re.compile(r"-([0-9a-f]{6,64})\.[^.]+$")  # torchvision: name-<sha256 prefix>.ext
_CHUNK = 1 << 20


_DIGESTS: dict[tuple[str, int, int], str] = {}


def _digest_key(path: Path) -> tuple[str, int, int]:
    stat = path.stat()
    return (str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)


def remember_digest(path: Path, digest: str) -> None:
    """Record the sha256 of a file just verified under another name and renamed to ``path``."""
    _DIGESTS[_digest_key(path)] = digest


def sha256_file(path: Path, *, fresh: bool = False) -> str:
    """Hex sha256 of a file; remembered per path, size and mtime within this process unless
    ``fresh`` (verification always hashes afresh)."""
    key = _digest_key(path)
    if fresh or key not in _DIGESTS:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(_CHUNK), b""):
                digest.update(chunk)
        _DIGESTS[key] = digest.hexdigest()
    return _DIGESTS[key]


def git_blob_sha1(path: Path) -> str:
    """The git object id of a file's content (the Hub's ETag of small, non-LFS files)."""
    digest = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def hash_prefix_from_name(url: str) -> str | None:
    """The sha256 prefix in a torchvision-style file name (``resnet50-0676ba61.pth``)."""
    match = _HASH_PREFIX.search(urllib.parse.urlsplit(url).path.rsplit("/", 1)[-1])
    return match.group(1) if match else None


def verify_file(
    path: Path,
    *,
    what: str,
    sha256: str | None = None,
    sha256_prefix: str | None = None,
    size: int | None = None,
    git_sha1: str | None = None,
) -> str:
    """Check ``path`` against every expectation given; return its sha256.

    On a mismatch the file is deleted and :class:`IntegrityError` raised: it is never loaded.
    """
    actual_size = path.stat().st_size
    problem = None
    digest = sha256_file(path, fresh=True)
    if size is not None and actual_size != size:
        problem = f"has {actual_size} bytes instead of {size}"
    elif sha256 is not None and digest != sha256.lower():
        problem = f"has sha256 {digest[:12]}… instead of {sha256[:12]}…"
    elif sha256_prefix is not None and not digest.startswith(sha256_prefix.lower()):
        problem = f"has sha256 {digest[:12]}…, its name says {sha256_prefix}…"
    elif git_sha1 is not None and git_blob_sha1(path) != git_sha1.lower():
        problem = "does not match the Hub's checksum"
    if problem:
        _DIGESTS.pop(_digest_key(path), None)
        _remove(path)
        raise IntegrityError(
            f"{what} {problem} (corrupted or truncated download); it was deleted from the cache. "
            "Run the command again to download it afresh, or check your mirror."
        )
    return digest


def _remove(path: Path) -> None:
    """Delete a cached file; for a Hub snapshot symlink, its blob too."""
    try:
        target = path.resolve()
        path.unlink(missing_ok=True)
        if target != path:
            target.unlink(missing_ok=True)
    except OSError:
        pass
