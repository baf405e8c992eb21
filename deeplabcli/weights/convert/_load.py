"""Shared last step of every converter: build the model and load renamed tensors strictly."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from ...config import ModelConfig
from ...errors import ConversionError
from ...models import DeepLabV3, load_strict


def load_converted(
    config: ModelConfig,
    state_dict: Mapping[str, torch.Tensor],
    *,
    source: str,
    provenance: dict[str, Any] | None = None,
) -> DeepLabV3:
    """Build ``config`` and load ``state_dict``; any missing, unexpected or mis-shaped tensor is
    a :class:`ConversionError` that lists them (nothing is silently left random)."""
    model = DeepLabV3(config, provenance=provenance)
    load_strict(
        model,
        state_dict,
        source=f"the {source} weights",
        error=lambda problems: ConversionError(
            f"cannot convert {source} weights: {problems}. "
            "The file does not match this architecture."
        ),
    )
    return model.eval()
