"""Exported files as model references: ``--model model.onnx`` / ``--model model.xml``.

:func:`load_exported` reads the file's metadata (:mod:`.metadata`) and opens it in its runtime;
the :class:`ExportedModel` it returns has the ``config`` and ``provenance`` of a loaded
:class:`~deeplabcli.models.DeepLabV3`, so predict and eval take either.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import ModelConfig
from ..errors import ModelLoadError
from .extras import backend_installed
from .metadata import ExportInfo, parse_metadata
from .sessions import RuntimeNetwork, open_network

#: suffix → the runtime that reads it by default
EXPORTED_SUFFIXES = {".onnx": "onnxruntime", ".xml": "openvino"}


def is_exported_path(ref: str | os.PathLike) -> bool:
    """Whether a model reference names an exported file (by its suffix)."""
    return Path(os.fspath(ref)).suffix.lower() in EXPORTED_SUFFIXES


def exported_backend(path: str | os.PathLike, backend: str = "auto") -> str:
    """The runtime that runs exported file ``path`` for ``--backend backend``: a named runtime
    as it is; ``auto``: the file's own runtime (:data:`EXPORTED_SUFFIXES`), or OpenVINO for a
    ``.onnx`` file when ONNX Runtime is not installed but OpenVINO is."""
    if backend != "auto":
        return backend
    own = EXPORTED_SUFFIXES[Path(os.fspath(path)).suffix.lower()]
    if own == "onnxruntime" and not backend_installed(own) and backend_installed("openvino"):
        return "openvino"
    return own


@dataclass
class ExportedModel:
    """An exported network with its metadata: what predict and eval need of a model."""

    path: Path
    backend: str  # the runtime it runs on: "onnxruntime" | "openvino"
    info: ExportInfo
    network: RuntimeNetwork = field(repr=False)

    @property
    def config(self) -> ModelConfig:
        return self.info.config

    @property
    def provenance(self) -> dict[str, Any]:
        return self.info.provenance

    @property
    def precision(self) -> str:
        """What the network computes in: ``int8`` (an int8 export) or ``float32``."""
        return "int8" if self.info.int8 else "float32"

    @property
    def output_stride(self) -> int:
        return self.info.config.output_stride


def load_exported(
    path: str | os.PathLike, backend: str | None = None, *, threads: int | None = None
) -> ExportedModel:
    """Open an exported file on ``backend`` (default: its own runtime; OpenVINO also runs
    ``.onnx`` files) with the metadata it carries."""
    path = Path(os.fspath(path)).expanduser()
    suffix = path.suffix.lower()
    if suffix not in EXPORTED_SUFFIXES:
        raise ModelLoadError(f"{path} is not an exported model (.onnx or .xml).")
    if not path.is_file():
        raise ModelLoadError(f"{path} does not exist. Check the path.")
    if suffix == ".xml" and not path.with_suffix(".bin").is_file():
        raise ModelLoadError(
            f"{path} has no {path.with_suffix('.bin').name} beside it: OpenVINO IR is the .xml "
            "and its .bin. Copy both, or export again."
        )
    backend = backend or EXPORTED_SUFFIXES[suffix]
    network = open_network(path, backend, threads=threads)
    info = parse_metadata(network.metadata(), str(path))
    return ExportedModel(path=path, backend=backend, info=info, network=network)
