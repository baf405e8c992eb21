"""Affine-quantised weights in a safetensors file: integer codes + scales, exact on load.

A weight stored packed is three tensors instead of one: ``<key>.qcodes`` (uint8 or int8, in
PyTorch's layout), ``<key>.qscale`` (float64, one value or one per output channel, axis 0) and
``<key>.qzero`` (int64 zero points, the same length). Loading computes
``scale · (codes − zero_point)`` in float64 and rounds once to float32 with
:func:`deeplabcli.weights.convert.tflite_graph.dequantize`, the function the TFLite converter
dequantises with, so a packed copy of a converted quantised model loads bit-identical to the conversion, at a quarter
of the float32 size. Tensors without the suffixes are stored and loaded as they are.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ModelLoadError
from ..files import atomic_file
from ..models import DeepLabV3
from .checkpoint import METADATA_CONFIG_KEY, checkpoint_config_dict
from .convert.tflite_graph import dequantize

CODES, SCALE, ZERO = ".qcodes", ".qscale", ".qzero"


def pack_weight(
    key: str, codes: np.ndarray, scale: np.ndarray, zero_point: np.ndarray
) -> dict[str, torch.Tensor]:
    """The three tensors that store weight ``key``: ``codes`` uint8/int8 (O, ...) in PyTorch's
    layout, ``scale`` float64 and ``zero_point`` integers, each of length 1 or O."""
    if codes.dtype not in (np.uint8, np.int8):
        raise ValueError(f"{key}: codes must be uint8 or int8, not {codes.dtype}")
    scale = np.asarray(scale, dtype=np.float64).reshape(-1)
    zero = np.zeros(1, dtype=np.int64) if zero_point is None or not np.size(zero_point) else (
        np.asarray(zero_point, dtype=np.int64).reshape(-1)
    )  # fmt: skip
    if scale.size not in (1, codes.shape[0]) or zero.size not in (1, scale.size):
        raise ValueError(f"{key}: {scale.size} scales for {codes.shape[0]} output channels")
    return {
        key + CODES: torch.from_numpy(np.array(codes, order="C", copy=True)),
        key + SCALE: torch.from_numpy(scale),
        key + ZERO: torch.from_numpy(np.broadcast_to(zero, scale.shape).copy()),
    }


def is_packed(tensors: Mapping[str, torch.Tensor]) -> bool:
    """Whether any tensor of ``tensors`` is stored packed."""
    return any(key.endswith(CODES) for key in tensors)


def unpack(tensors: Mapping[str, torch.Tensor], where: str) -> dict[str, torch.Tensor]:
    """A plain state dict: every packed weight dequantised to float32 (shape of its codes),
    every other tensor as stored. A packed weight missing its scale or zero point, or with
    the wrong number of them, is a :class:`ModelLoadError` naming ``where``."""
    state: dict[str, torch.Tensor] = {}
    parts = {key for key in tensors if key.endswith((SCALE, ZERO))}
    for key, value in tensors.items():
        if key in parts:
            continue
        if not key.endswith(CODES):
            state[key] = value
            continue
        name = key[: -len(CODES)]
        scale, zero = tensors.get(name + SCALE), tensors.get(name + ZERO)
        if scale is None or zero is None:
            raise ModelLoadError(
                f"{where}: packed weight {name!r} lacks its scale or zero point. "
                "The file is damaged; re-create it."
            )
        if value.dtype not in (torch.uint8, torch.int8):
            raise ModelLoadError(
                f"{where}: packed weight {name!r} has {value.dtype} codes instead of uint8 or "
                "int8. The file is damaged; re-create it."
            )
        if scale.numel() not in (1, value.shape[0]) or zero.numel() != scale.numel():
            raise ModelLoadError(
                f"{where}: packed weight {name!r} has {scale.numel()} scales and {zero.numel()} "
                f"zero points for {value.shape[0]} channels. The file is damaged; re-create it."
            )
        # the converter's own function: the same float64 arithmetic, bit for bit (and numpy's
        # single-threaded loops are faster here than torch's first calls)
        real = dequantize(value.numpy(), scale.numpy(), zero.numpy(), axis=0)
        state[name] = torch.from_numpy(real)
    orphans = sorted(p for p in parts if p.rsplit(".", 1)[0] + CODES not in tensors)
    if orphans:
        raise ModelLoadError(
            f"{where}: {', '.join(orphans[:3])} belong to no packed weight. "
            "The file is damaged; re-create it."
        )
    return state


def save_packed(
    model: DeepLabV3,
    codes: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
    path: Path,
    provenance: Mapping[str, Any],
) -> None:
    """Write ``model`` as one ``.safetensors`` file in our format (the checkpoint config in its
    metadata) with the weights named in ``codes`` packed (``key → (codes, scale, zero_point)``)
    and every other tensor as float32. The bytes depend only on the inputs (one metadata key,
    no time stamp), so the file can be regenerated and compared by sha256. Raises ValueError if
    a packed weight would not load bit-identical to the model's own tensor."""
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tensors: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key in codes:
            tensors.update(pack_weight(key, *codes[key]))
        else:
            tensors[key] = value.clone()
    restored = unpack(tensors, str(path))
    changed = [k for k in state if not _same_bits(restored[k], state[k])]
    if changed or set(restored) != set(state):
        raise ValueError(f"packing changes {', '.join(changed[:3]) or 'the tensor names'}")
    document = checkpoint_config_dict(model, provenance)
    with atomic_file(path) as tmp:
        save_file(tensors, str(tmp), metadata={METADATA_CONFIG_KEY: json.dumps(document)})


def _same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal dtype, shape and bytes (so 0.0 and -0.0 differ, and NaNs compare)."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    return a.reshape(-1).view(torch.uint8).equal(b.reshape(-1).view(torch.uint8))
