"""The precision the torch network runs in (``amp``): float32, or autocast where the device
computes a narrower type natively and the model is large enough to gain from it.

``amp=None`` (predict's default) means the device's fast precision: float16 autocast on CUDA,
and on a CPU with native bfloat16 instructions (AVX512-BF16 or AMX-BF16) bfloat16 autocast for
large models (more than ``config.constants.SMALL_MODEL_BYTES`` of parameters: ResNets), whose
convolutions then run on those instructions. Measured with ``benchmarks/runtime_speed.py
--section resnet`` (ResNet-101, torchvision head, 513², 2 AVX512-BF16 cores): bfloat16 about
2× the float32 network; small models (MobileNetV2) gain little, and run on ONNX Runtime by
default anyway. ``amp=False`` (eval's default) is float32 everywhere; ``amp=True`` asks for the
narrower type on either device.
"""

from __future__ import annotations

import torch
from torch import nn

from ..config.constants import SMALL_MODEL_BYTES
from ..runtimes import extras

#: parameters above this many bytes make a model "large" (the streams' threshold)
LARGE_MODEL_BYTES = SMALL_MODEL_BYTES


def autocast_dtype(
    amp: bool | None, device: torch.device, model: nn.Module | None
) -> torch.dtype | None:
    """The autocast type of the torch network of ``model`` on ``device`` for ``amp`` (see the
    module docstring), or None for float32."""
    if amp is False:
        return None
    if device.type == "cuda":
        return torch.float16
    if device.type != "cpu":
        return None
    if amp is True:
        return torch.bfloat16
    large = model is not None and _parameter_bytes(model) > LARGE_MODEL_BYTES
    return torch.bfloat16 if large and extras.native_bf16() else None


def narrow_precision(
    model: object, amp: bool | None, device: torch.device, backend: str
) -> torch.dtype | None:
    """The narrower type a Segmenter runs ``model`` in on ``backend``: torch autocasts
    (:func:`autocast_dtype`), OpenVINO runs an exported torch model in bfloat16 for the same
    rule, ONNX Runtime and exported files run as they are (None)."""
    if not isinstance(model, nn.Module) or backend not in ("torch", "openvino"):
        return None
    dtype = autocast_dtype(amp, device, model)
    return dtype if backend == "torch" or dtype == torch.bfloat16 else None


def precision_name(model: object, narrow: torch.dtype | None) -> str:
    """``float32``, ``bfloat16``, ``float16`` or ``int8`` (an int8 export)."""
    if narrow is not None:
        return str(narrow).removeprefix("torch.")
    return getattr(model, "precision", "float32")  # an ExportedModel's own


def _parameter_bytes(model: nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


__all__ = ["LARGE_MODEL_BYTES", "autocast_dtype", "narrow_precision", "precision_name"]
