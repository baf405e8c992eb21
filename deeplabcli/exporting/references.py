"""Model references → cheap identities, torch-free, for finding their cached exports.

``deeplab predict --model NAME`` on a non-torch backend looks its export up here before it
imports torch or loads weights (:func:`lookup_reference`); the first run, which exports,
records the reference (:func:`remember_reference`).
"""

from __future__ import annotations

import os
from pathlib import Path

from ..runtimes.cache import lookup_identity, remember_identity
from ..weights.cards import default_card, find_card


def reference_identity(ref: str | os.PathLike | None) -> str | None:
    """A cheap, torch-free identity of a model reference, or None when there is none without
    loading it (Hub repos, folders): a card's name and weights sha256; a weights file's
    resolved path, size and modification time (a changed file is a new identity)."""
    if ref is None:
        ref = default_card().name
    text = os.fspath(ref)
    path = Path(text).expanduser()
    if path.is_file():
        stat = path.stat()
        return f"file:{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
    if path.exists():
        return None
    card = find_card(text)
    if card is None or not card.sha256:
        return None
    return f"card:{card.name}:{card.sha256}"


def lookup_reference(
    ref: str | os.PathLike | None, backend: str, output_stride: int | None = None
) -> Path | None:
    """The cached export of model reference ``ref`` (None: the default model) for
    ``backend`` at ``output_stride`` (None: the model's own), if an earlier run made it."""
    identity = reference_identity(ref)
    return None if identity is None else lookup_identity(identity, backend, output_stride)


def remember_reference(
    ref: str | os.PathLike | None, backend: str, output_stride: int | None, key: str
) -> None:
    """Record that reference ``ref`` exports to cache key ``key`` (see :func:`lookup_reference`)."""
    identity = reference_identity(ref)
    if identity is not None:
        remember_identity(identity, backend, output_stride, key)
