"""Validation during training: whole images, single scale, confusion matrix → mIoU.

A thin call into :func:`deeplabcli.engine.evaluate.evaluate` (the ``deeplab eval`` engine)
without an optimised copy: the training model itself runs, in eval mode, and is put back in
train mode afterwards. Under ``torchrun`` every rank scores its shard of the images and the
confusion matrices are summed.
"""

from __future__ import annotations

import torch

from ..data.dataset import SegmentationDataset
from ..metrics import SegmentationMetrics
from ..models import DeepLabV3
from .distributed import World, current_world
from .evaluate import evaluate


def evaluate_model(
    model: DeepLabV3,
    dataset: SegmentationDataset,
    *,
    device: torch.device | str = "cpu",
    world: World | None = None,
) -> SegmentationMetrics:
    """mIoU and friends of ``model`` (at its current output stride) on every image of
    ``dataset``; the same result on every rank."""
    return evaluate(
        model,
        dataset,
        device=device,
        optimize=False,
        amp=False,
        workers=0,
        world=world or current_world(),
    )
