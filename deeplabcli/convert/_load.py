"""Shared last step of every converter: build the model and load renamed tensors strictly."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from ..config import ModelConfig
from ..errors import ConversionError
from ..models import DeepLabV3


def load_converted(
    config: ModelConfig, state_dict: Mapping[str, torch.Tensor], *, source: str
) -> DeepLabV3:
    """Build ``config`` and load ``state_dict``; any missing, unexpected or mis-shaped tensor is
    a :class:`ConversionError` that lists them (nothing is silently left random)."""
    model = DeepLabV3(config)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    shapes = sorted(
        f"{k}: {tuple(state_dict[k].shape)} vs {tuple(expected[k].shape)}"
        for k in set(expected) & set(state_dict)
        if tuple(state_dict[k].shape) != tuple(expected[k].shape)
    )
    problems = []
    if missing:
        problems.append(f"missing {_short(missing)}")
    if unexpected:
        problems.append(f"unexpected {_short(unexpected)}")
    if shapes:
        problems.append(f"shape mismatch {_short(shapes)}")
    if problems:
        raise ConversionError(
            f"cannot convert {source} weights: {'; '.join(problems)}. "
            "The file does not match this architecture."
        )
    model.load_state_dict(dict(state_dict), strict=True)
    return model.eval()


def _short(items: list[str], limit: int = 6) -> str:
    more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more
