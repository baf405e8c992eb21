"""Local weight files and directories → models, one function per format.

Used by :mod:`deeplabcli.weights.resolve` for paths, Hub snapshots and model cards alike. Bare state
dicts are recognised by their parameter names (:func:`deeplabcli.weights.formats.layout`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from .. import files
from ..errors import ModelLoadError
from ..models import DeepLabV3
from .checkpoint import (
    CONFIG_NAME,
    METADATA_CONFIG_KEY,
    config_from_document,
    is_checkpoint_config,
    load_checkpoint,
    load_state_dict_strict,
    make_provenance,
)
from .formats import (
    PICKLE_SUFFIXES,
    layout,
    read_safetensors,
    read_weights,
    safe_torch_load,
    safetensors_metadata,
    torchvision_arch,
)
from .integrity import sha256_file
from .packed import is_packed, unpack

TRANSFORMERS_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
MODELS_HINT = "Run `deeplab models` to list model names"


def load_path(path: Path) -> DeepLabV3:
    if path.is_dir():
        return load_directory(path)
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        return load_safetensors_file(path)
    if suffix in PICKLE_SUFFIXES:
        return from_state_dict(safe_torch_load(path), path, str(path.resolve()))
    if suffix == ".tflite":
        return load_tflite(path)
    raise ModelLoadError(
        f"{path} is not a model file (expected a checkpoint directory or a .safetensors, .pth, "
        f".pt or .tflite file). {MODELS_HINT}."
    )


def read_json(path: Path) -> Any:
    """A model file's JSON document (config.json); unreadable JSON is a ModelLoadError."""
    return files.read_json(path, ModelLoadError, "Check the file")


def load_directory(path: Path) -> DeepLabV3:
    config_path = path / CONFIG_NAME
    if not config_path.is_file():
        raise ModelLoadError(
            f"{path} has no {CONFIG_NAME}, so it is neither a deeplabcli checkpoint nor a "
            f"transformers model directory. Pass a checkpoint directory or a weights file; "
            f"{MODELS_HINT.lower()}."
        )
    document = read_json(config_path)
    if isinstance(document, dict) and is_checkpoint_config(document):
        return load_checkpoint(path)
    if isinstance(document, dict) and "model_type" in document:
        weights = next((path / n for n in TRANSFORMERS_WEIGHTS if (path / n).is_file()), None)
        if weights is None:
            raise ModelLoadError(
                f"{path} has a transformers config but no model.safetensors or "
                "pytorch_model.bin. Copy the weights file next to config.json."
            )
        provenance = make_provenance(str(path.resolve()), converted_from="transformers")
        return from_transformers_config(document, read_weights(weights), provenance, str(path))
    raise ModelLoadError(
        f"{config_path} is neither a deeplabcli checkpoint config nor a transformers config. "
        f"Pass a checkpoint directory; {MODELS_HINT.lower()}."
    )


def load_safetensors_file(path: Path) -> DeepLabV3:
    """A model from one ``.safetensors`` file: ours (the config in its metadata; weights plain
    or packed, see :mod:`.packed`) or a bare state dict recognised by its names."""
    embedded = safetensors_metadata(path).get(METADATA_CONFIG_KEY)
    tensors = read_safetensors(path)
    if is_packed(tensors):
        tensors = unpack(tensors, str(path))
    if embedded:
        try:
            document = json.loads(embedded)
        except json.JSONDecodeError:
            document = None
        return build_ours(document, tensors, str(path))
    return from_state_dict(tensors, path, str(path.resolve()))


def build_ours(document: Any, state_dict: Mapping[str, torch.Tensor], where: str) -> DeepLabV3:
    """Our model from a parsed checkpoint config document and its state dict."""
    config, provenance = config_from_document(document, where)
    model = DeepLabV3(config, provenance=provenance)
    load_state_dict_strict(model, state_dict, where=where)
    return model


def from_state_dict(state_dict: Mapping[str, torch.Tensor], path: Path, source: str) -> DeepLabV3:
    """A model from a bare state dict, recognised by its parameter names."""
    kind = layout(state_dict)
    if kind == "torchvision":
        from .convert import from_torchvision

        provenance = make_provenance(source, converted_from="torchvision")
        return from_torchvision(state_dict, torchvision_arch(state_dict), provenance=provenance)
    sibling = path.parent / CONFIG_NAME
    if kind == "transformers" and sibling.is_file():
        provenance = make_provenance(source, converted_from="transformers")
        return from_transformers_config(read_json(sibling), state_dict, provenance, str(path))
    if kind == "ours" and sibling.is_file():
        return build_ours(read_json(sibling), state_dict, str(path))
    reasons = {
        "resnet": "is an ImageNet ResNet backbone, not a segmentation model. Use it to "
        "initialise training (load_backbone_weights), or pass a segmentation model",
        "transformers": f"holds transformers weights without their {CONFIG_NAME}. "
        f"Put the transformers {CONFIG_NAME} next to it",
        "ours": f"holds deeplabcli weights without their {CONFIG_NAME}. "
        "Load the whole checkpoint directory instead",
    }
    reason = reasons.get(
        kind,
        "is not a known layout (torchvision DeepLabv3, transformers MobileNetV2 or deeplabcli). "
        "Convert it to a deeplabcli checkpoint first",
    )
    raise ModelLoadError(f"{path} {reason}.")


def check_transformers_config(config_dict: Any, where: str) -> None:
    """Refuse, before any weights are fetched, transformers models we cannot convert."""
    if not isinstance(config_dict, dict) or config_dict.get("model_type") != "mobilenet_v2":
        kind = config_dict.get("model_type") if isinstance(config_dict, dict) else None
        raise ModelLoadError(
            f"{where} is a transformers {kind!r} model; only MobileNetV2 segmentation models "
            f"(model_type 'mobilenet_v2') convert. {MODELS_HINT}."
        )


def from_transformers_config(
    config_dict: Any, state_dict: Mapping[str, torch.Tensor], provenance: dict, where: str
) -> DeepLabV3:
    """Our model from a transformers MobileNetV2 segmentation config and state dict."""
    check_transformers_config(config_dict, where)
    from .convert.transformers import from_transformers

    return from_transformers(dict(state_dict), config_dict, provenance=provenance)


def load_tflite(path: Path) -> DeepLabV3:
    """A TensorFlow Lite DeepLab model, converted (the converter names a missing extra)."""
    from .convert.tflite import from_tflite

    provenance = make_provenance(
        str(path.resolve()), converted_from="tflite", sha256=sha256_file(path)
    )
    return from_tflite(path, provenance=provenance)
