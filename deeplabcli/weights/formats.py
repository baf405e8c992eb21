"""Reading weight files safely and telling which ecosystem a state dict comes from.

Pickled files (``.pth``/``.pt``/``.bin``) are only ever opened with
``torch.load(weights_only=True)``: a file that needs anything beyond tensors and plain
containers (i.e. one whose unpickling could run code) is refused with :class:`UnsafeFileError`.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..errors import ConversionError, ModelLoadError, UnsafeFileError

PICKLE_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")

#: layer3 unit count → torchvision DeepLabv3 architecture
_TORCHVISION_LAYER3_UNITS = {6: "deeplabv3_resnet50", 23: "deeplabv3_resnet101"}
#: layer3 unit count → plain ResNet name (ImageNet backbones)
_RESNET_LAYER3_UNITS = {6: "resnet50", 23: "resnet101", 1: "resnet_tiny"}


def safe_torch_load(path: Path) -> dict[str, torch.Tensor]:
    """The state dict in a pickled PyTorch file, read with ``weights_only=True`` (CPU tensors).

    Checkpoints that wrap the weights (``{"model": ...}`` or ``{"state_dict": ...}``) are
    unwrapped. Raises :class:`UnsafeFileError` for files that would need code execution and
    :class:`ModelLoadError` for files that are not PyTorch weights at all.
    """
    import pickle

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if "weights only load failed" in str(error).lower() and _is_pickle(path, str(error)):
            raise UnsafeFileError(
                f"{path} contains Python objects other than tensors, and unpickling it could run "
                "arbitrary code, so it was refused. Use a plain state dict or a .safetensors file "
                "from a source you trust."
            ) from None
    except Exception:  # any other failure: not a weights file we can read
        pass
    else:
        return as_state_dict(data, path)
    raise ModelLoadError(
        f"{path} is not a readable PyTorch weights file. Check the path or re-download it."
    )


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """All tensors of a ``.safetensors`` file (on CPU); unreadable files are a ModelLoadError."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as error:
        raise ModelLoadError(
            f"{path} is not a readable safetensors file ({error}). Re-download or re-create it."
        ) from None


def safetensors_metadata(path: Path) -> dict[str, str]:
    """The string metadata of a ``.safetensors`` file ({} when unreadable or absent)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            return dict(handle.metadata() or {})
    except (SafetensorError, OSError, ValueError):
        return {}


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a weights file: ``.safetensors`` read directly, pickles (``.pth``, ``.pt``,
    ``.bin``, ``.ckpt``) only as tensors (:func:`safe_torch_load`). The one weight-file reader."""
    if path.suffix.lower() == ".safetensors":
        return read_safetensors(path)
    return safe_torch_load(path)


def _is_pickle(path: Path, message: str) -> bool:
    """Whether a file the weights-only unpickler refused really is a pickle (a zip written by
    ``torch.save``, or a pickle stream with a protocol header) rather than, say, a text file."""
    if "GLOBAL" in message:
        return True
    with open(path, "rb") as handle:
        return handle.read(2) in (b"PK", *(bytes([0x80, v]) for v in range(2, 6)))


def as_state_dict(data: Any, path: Path) -> dict[str, torch.Tensor]:
    """A flat ``{name: tensor}`` dict from what a weights file held."""
    if isinstance(data, Mapping):
        for key in ("model", "state_dict", "model_state_dict"):
            inner = data.get(key)
            if isinstance(inner, Mapping) and inner and _all_tensors(inner):
                data = inner
                break
        if data and _all_tensors(data):
            return {str(k): v for k, v in data.items()}
    raise ModelLoadError(
        f"{path} does not hold a state dict (a mapping of names to tensors). "
        "Save the model's state_dict(), or pass a checkpoint directory."
    )


def _all_tensors(mapping: Mapping) -> bool:
    return all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in mapping.items())


def layout(state_dict: Mapping[str, torch.Tensor]) -> str:
    """Which model a state dict is: ``torchvision`` (DeepLabv3 ResNet segmentation),
    ``transformers`` (MobileNetV2 segmentation), ``resnet`` (an ImageNet ResNet backbone),
    ``ours`` (a deeplabcli DeepLabV3) or ``unknown``."""
    keys = set(state_dict)
    if "classifier.4.weight" in keys and any(k.startswith("backbone.layer3.") for k in keys):
        return "torchvision"
    if any(k.startswith("mobilenet_v2.") for k in keys) and any(
        k.startswith("segmentation_head.") for k in keys
    ):
        return "transformers"
    if "head.classifier.weight" in keys and any(k.startswith("backbone.") for k in keys):
        return "ours"
    if "conv1.weight" in keys and any(k.startswith("layer3.") for k in keys):
        return "resnet"
    return "unknown"


def _layer3_units(state_dict: Mapping[str, torch.Tensor], prefix: str) -> int:
    pattern = re.compile(rf"^{re.escape(prefix)}layer3\.(\d+)\.")
    return len({m.group(1) for k in state_dict if (m := pattern.match(k))})


def torchvision_arch(state_dict: Mapping[str, torch.Tensor]) -> str:
    """``deeplabv3_resnet50`` or ``deeplabv3_resnet101``, told apart by layer3's unit count."""
    units = _layer3_units(state_dict, "backbone.")
    try:
        return _TORCHVISION_LAYER3_UNITS[units]
    except KeyError:
        raise ConversionError(
            f"a torchvision DeepLabv3 state dict with {units} units in layer3 matches neither "
            "ResNet-50 (6) nor ResNet-101 (23). Use a deeplabv3_resnet50/101 checkpoint."
        ) from None


def resnet_name(state_dict: Mapping[str, torch.Tensor]) -> str:
    """The ResNet a plain (ImageNet) backbone state dict belongs to, by layer3's unit count."""
    units = _layer3_units(state_dict, "")
    try:
        return _RESNET_LAYER3_UNITS[units]
    except KeyError:
        raise ModelLoadError(
            f"a ResNet state dict with {units} units in layer3 matches no supported backbone. "
            "Use ResNet-50 or ResNet-101 weights."
        ) from None


def backbone_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An ImageNet ResNet state dict without its classifier (``fc.*``): what the dilated ResNet
    backbone loads."""
    return {k: v for k, v in state_dict.items() if not k.startswith("fc.")}
