"""Validation during training: whole images, single scale, confusion matrix → mIoU.

Uses the shared inference core (:class:`~deeplabcli.engine.inference.Segmenter`, so the model's
own preprocessing applies) without an optimised copy: the training model itself runs, in eval
mode, and is put back in train mode afterwards. Under ``torchrun`` every rank scores its shard
of the images and the confusion matrices are summed.
"""

from __future__ import annotations

import torch

from ..data.dataset import SegmentationDataset
from ..metrics import ConfusionMatrix, SegmentationMetrics, compute_metrics
from ..models import DeepLabV3
from .distributed import World, all_reduce_sum, current_world, shard
from .inference import Segmenter


def evaluate_model(
    model: DeepLabV3,
    dataset: SegmentationDataset,
    *,
    device: torch.device | str = "cpu",
    world: World | None = None,
) -> SegmentationMetrics:
    """mIoU and friends of ``model`` (at its current output stride) on every image of
    ``dataset``; the same result on every rank."""
    world = world or current_world()
    segmenter = Segmenter(model, optimize=False, device=device, amp=False)
    matrix = ConfusionMatrix(dataset.num_classes)
    for index in shard(range(len(dataset)), world):
        sample = dataset.load(index)
        pixels = torch.from_numpy(sample.image).permute(2, 0, 1)
        prediction = segmenter.masks([pixels])[0]
        matrix.update(torch.from_numpy(sample.mask).to(prediction.device), prediction)
    confusion = all_reduce_sum(matrix.matrix.cpu())
    return compute_metrics(confusion, dataset.class_names)
