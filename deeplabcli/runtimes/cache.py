"""The cache of exported networks, so a model on a non-torch backend is exported once.

Exports are kept as ``<key>.onnx`` (or ``<key>.xml`` + ``.bin``) in
``$DEEPLAB_EXPORT_CACHE`` (default ``$XDG_CACHE_HOME/deeplabcli/exported``, i.e.
``~/.cache/deeplabcli/exported``). The key hashes the weights and configuration themselves
(:mod:`deeplabcli.exporting.cache` computes it, with torch); beside it, a small alias file per
model reference (a card, a weights file; :mod:`deeplabcli.exporting.references`) maps the
reference to its key, so that :func:`lookup_identity` finds the export of ``--model NAME`` without importing torch or
loading the weights: that is what makes a one-photo ``deeplab predict`` fast. ``optimized/``
keeps ONNX Runtime's optimised graph of each file it runs (:func:`optimized_file`), so a
session starts without optimising the graph again.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from .. import __version__
from ..files import write_text_atomic
from .extras import cpu_features

CACHE_ENV = "DEEPLAB_EXPORT_CACHE"
#: bump when the exported graph changes for the same weights (cache keys and aliases include it)
EXPORT_REVISION = 2
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


def optimized_file(source: Path, runtime: str) -> Path:
    """Where ``runtime`` (a name and version, e.g. ``onnxruntime-1.23.2``) keeps its optimised
    form of the graph in ``source`` on this machine: ``optimized/<where>-<which>.onnx``,
    ``where`` hashing the source's resolved path, the runtime and the CPU (optimised graphs use
    the CPU's vector width, so a cache shared by machines keeps one per CPU), ``which`` the
    source's size and modification time (a changed source gets a new file; see
    :func:`stale_optimized`)."""
    source = Path(source).resolve()
    stat = source.stat()
    cpu = cpu_features()
    where = f"{source}|{runtime}|{cpu['model']}|{','.join(cpu['features'])}"  # type: ignore[arg-type]
    which = f"{stat.st_size}|{stat.st_mtime_ns}"
    name = f"{_digest(where, 24)}-{_digest(which, 8)}.onnx"
    return cache_dir() / "optimized" / name


def stale_optimized(path: Path) -> list[Path]:
    """The other optimised forms of the same source, runtime and CPU as ``path`` (made from
    earlier versions of the source): safe to remove once ``path`` is written."""
    prefix = path.name.split("-", 1)[0]
    return sorted(p for p in path.parent.glob(f"{prefix}-*.onnx") if p != path)


def _digest(text: str, length: int) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def _alias_path(identity: str, backend: str, output_stride: int | None) -> Path:
    # the version and export revision too: after an upgrade that changes the exported graph,
    # a reference must not keep finding the old export
    salt = f"{__version__}|rev={EXPORT_REVISION}"
    digest = hashlib.sha256(f"{identity}|{backend}|os={output_stride}|{salt}".encode()).hexdigest()
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
