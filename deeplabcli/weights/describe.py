"""What ``deeplab info REF`` says about a model reference, without downloading a card's weights.

A card name is described from its card (source, licence, provenance, published metric) and, when
its weights are on this machine (embedded or cached), from the loaded model as well; a card whose
weights are not cached is described from the card alone, never fetched. Any other reference (a
path, a Hub repo) is loaded and described by :func:`~.resolve.describe_model`; an exported
``.onnx``/``.xml`` file by the metadata it carries (:func:`describe_exported`). Every
description says which backend ``--backend auto`` would run the model on here, and which
runtimes are installed (:func:`describe_backends`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..runtimes.exported import exported_backend, is_exported_path, load_exported
from ..runtimes.extras import (
    RUNTIME_MODULES,
    auto_backend_for_model,
    backend_installed,
    bf16_backend,
    cpu_features,
    cuda_present,
    native_bf16,
)
from .cards import ModelCard, find_card
from .resolve import (
    Ref,
    card_is_cached,
    describe_config,
    describe_model,
    load_card_model,
    load_model,
)
from .shipped import serves


def describe_reference(ref: Ref) -> dict[str, Any]:
    """JSON-ready description of ``ref``: :func:`~.resolve.describe_model`'s keys, plus a
    ``card`` entry for card names (its keys: see :func:`describe_card`). For a card whose
    weights are not on this machine, the model keys come from the card (``parameters`` None).
    Always a ``backends`` entry (:func:`describe_backends`); for exported files ``exported``."""
    text = os.fspath(ref)
    path = Path(text).expanduser()
    if is_exported_path(text) and path.is_file():
        return describe_exported(path)
    card = None if path.exists() else find_card(text)
    if card is None:
        described = describe_model(load_model(text))
        return {**described, "backends": describe_backends(described["backbone"])}
    about = describe_card(card)
    backends = describe_backends(card.backbone, card)
    if card.is_model and about["on_this_machine"]:
        described = describe_model(load_card_model(card, quiet=True))
        return {**described, "card": about, "backends": backends}
    preprocessing = card.preprocessing
    return {
        "architecture": card.architecture,
        "backbone": card.backbone,
        "num_classes": card.num_classes,
        "classes": list(card.classes),
        "preprocessing": vars(preprocessing).copy() if preprocessing else None,
        "parameters": None,
        "provenance": {},
        "card": about,
        "backends": backends,
    }


def describe_exported(path: Path) -> dict[str, Any]:
    """An exported file described from its metadata: :func:`~.resolve.describe_model`'s keys
    (``parameters`` None), ``exported`` (file, format, int8, static size) and ``backends``."""
    backend = exported_backend(path)
    model = load_exported(path, backend)
    static = model.info.static_size
    exported = {
        "path": str(path), "format": "openvino" if path.suffix.lower() == ".xml" else "onnx",
        "int8": model.info.int8, "static_size": list(static) if static else None,
    }  # fmt: skip
    return {
        **describe_config(model.config),
        "parameters": None,
        "provenance": dict(model.provenance),
        "exported": exported,
        "backends": {
            "auto": backend,
            "precision": model.precision,
            "installed": installed_backends(),
            "cpu": cpu_features(),
        },
    }


def installed_backends() -> list[str]:
    """The backends that can run here: torch and the runtimes whose packages are installed."""
    return ["torch", *(b for b in RUNTIME_MODULES if backend_installed(b))]


def describe_backends(backbone: str | None, card: ModelCard | None = None) -> dict[str, Any]:
    """``{"auto": the backend ``deeplab predict --backend auto`` picks for a model with
    ``backbone`` (of ``card``) on this machine's device, "precision": what it runs in there,
    "installed": [...], "cpu": the CPU's model and features}``: the shipped int8 export of a
    card that has one where ONNX Runtime is installed; bfloat16 for ResNets on a CPU with
    native bfloat16 (``inference.precision``; eval runs float32)."""
    auto, precision = auto_backend_for_model("auto", backbone), "float32"
    if card is not None and serves(card):
        auto, precision = card.export.backend, "int8"  # type: ignore[union-attr]
    elif (backbone or "").startswith("resnet") and not cuda_present() and native_bf16():
        auto, precision = bf16_backend(), "bfloat16"
    return {"auto": auto, "precision": precision, "installed": installed_backends(),
            "cpu": cpu_features()}  # fmt: skip


def describe_card(card: ModelCard) -> dict[str, Any]:
    """A card as data: name, description, format, where the weights come from, licence (and the
    paths of its licence files), upstream provenance, the published metric, and whether the
    weights are on this machine (embedded or cached)."""
    metric = card.metric
    return {
        "name": card.name,
        "description": card.description,
        "format": card.format,
        "default": card.default,
        "embedded": card.embedded,
        "source": card.source,
        "sha256": card.sha256,
        "license": card.license,
        "license_files": [str(card.beside(name)) for name in card.license_files],
        "upstream": dict(card.upstream),
        "metric": str(metric) if metric else None,
        "metric_source": metric.source if metric else None,
        "on_this_machine": card_is_cached(card),
    }
