"""Runtimes: exported networks (ONNX, OpenVINO IR) run by ONNX Runtime or OpenVINO, without
torch. An exported file carries our metadata (:mod:`.metadata`), so it is a model reference of
its own (:func:`load_exported`); :mod:`.extras` says which runtimes are installed and what the
CPU can do, and picks the backend ``auto`` means.

Floor: beside models and data (it needs only the configuration and the ground floor).
"""

from __future__ import annotations

from .._exports import lazy_exports

#: public name → module that defines it
_EXPORTS: dict[str, str] = {
    "ExportedModel": "exported",
    "load_exported": "exported",
    "onnx_metadata": "metadata",
    "is_exported_path": "exported",
    "RuntimeNetwork": "sessions",
    "open_network": "sessions",
    "backend_installed": "extras",
    "require_backend": "extras",
    "auto_backend": "extras",
    "cpu_features": "extras",
    "cuda_present": "extras",
    "model_metadata": "metadata",
    "parse_metadata": "metadata",
}

__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
