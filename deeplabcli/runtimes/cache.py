"""The cache of exported networks, so a model on a non-torch backend is exported once.

Exports are kept as ``<key>.onnx`` (or ``<key>.xml`` + ``.bin``) in
``$DEEPLAB_EXPORT_CACHE`` (default ``$XDG_CACHE_HOME/deeplabcli/exported``, i.e.
``~/.cache/deeplabcli/exported``). The key hashes the weights and configuration themselves
(:mod:`deeplabcli.exporting.cache` computes it, with torch); beside it, a small alias file per
model reference (a card, a weights file; :mod:`deeplabcli.exporting.references`) maps the
reference to its key, so that :func:`lookup_identity` finds the export of ``--model NAME`` without importing torch or
loading the weights: that is what makes a one-photo ``deeplab predict`` fast.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from ..files import write_text_atomic

CACHE_ENV = "DEEPLAB_EXPORT_CACHE"
#: backend → the suffix of the file it runs from the cache
CACHE_SUFFIX = {"onnxruntime": ".onnx", "openvino": ".xml"}


def cache_dir() -> Path:
    """Where exported networks are cached (see the module docstring)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser()
    return base / "deeplabcli" / "exported"


def cached_file(key: str, backend: str) -> Path:
    """The cache path of export ``key`` for ``backend``."""
    return cache_dir() / f"{key}{CACHE_SUFFIX[backend]}"


def is_complete(path: Path) -> bool:
    """Whether a cached export is all there (OpenVINO IR needs its .bin too)."""
    return path.is_file() and (path.suffix != ".xml" or path.with_suffix(".bin").is_file())


def _alias_path(identity: str, backend: str, output_stride: int | None) -> Path:
    digest = hashlib.sha256(f"{identity}|{backend}|os={output_stride}".encode()).hexdigest()
    return cache_dir() / "refs" / f"{digest[:32]}.json"


def lookup_identity(identity: str, backend: str, output_stride: int | None = None) -> Path | None:
    """The cached export of the model reference with ``identity`` (see
    :func:`deeplabcli.exporting.references.reference_identity`) for ``backend``
    (``output_stride`` as asked: None = the model's own), if an earlier run made it."""
    alias = _alias_path(identity, backend, output_stride)
    try:
        key = json.loads(alias.read_text())["key"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    path = cached_file(str(key), backend)
    return path if is_complete(path) else None


def remember_identity(identity: str, backend: str, output_stride: int | None, key: str) -> None:
    """Record that the reference with ``identity`` exports to ``key`` (for
    :func:`lookup_identity`)."""
    alias = _alias_path(identity, backend, output_stride)
    document = {"key": key, "identity": identity, "backend": backend, "os": output_stride}
    write_text_atomic(alias, json.dumps(document), mkdir=True)
