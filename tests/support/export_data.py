"""Shared material of the export tests (deeplab export): the real VOC val images, preprocessed as a model wants,
and the torch logits an exported network must reproduce."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from deeplabcli.config import Preprocessing
from deeplabcli.data.images import read_image
from deeplabcli.data.masks import read_mask
from deeplabcli.runtimes.preprocess import preprocess


@dataclass
class ValImage:
    id: str
    pixels: np.ndarray  # float32 (1, 3, H', W'): the network input
    content: tuple[int, int]
    size: tuple[int, int]
    mask: np.ndarray  # uint8 (H, W), 255 = ignore


def val_ids(voc_root: Path, count: int | None = None, *, distinct_sizes: bool = False) -> list[str]:
    """The ids of the shared VOC val list (120 images), or the first ``count`` of them; with
    ``distinct_sizes``, the first ``count`` whose images all differ in size."""
    ids = (voc_root / "ImageSets" / "Segmentation" / "val.txt").read_text().split()
    if distinct_sizes:
        sizes: dict[tuple[int, int], str] = {}
        for image_id in ids:
            with Image.open(voc_root / "JPEGImages" / f"{image_id}.jpg") as image:
                sizes.setdefault(image.size, image_id)
        ids = [i for i in ids if i in sizes.values()]
    return ids[:count] if count else ids


def val_images(voc_root: Path, prep: Preprocessing, ids: list[str]) -> Iterator[ValImage]:
    """The val images ``ids`` as network inputs of ``prep`` (each at its own size for
    resize="none")."""
    for image_id in ids:
        rgb = np.asarray(read_image(voc_root / "JPEGImages" / f"{image_id}.jpg"))
        mask = read_mask(voc_root / "SegmentationClass" / f"{image_id}.png", 21)
        pixels, content = preprocess(rgb, prep)
        yield ValImage(image_id, pixels, content, rgb.shape[:2], mask)


def tiny_model(arch: str = "deeplabv3_tiny", **overrides) -> torch.nn.Module:
    """A random tiny model (seed 0, eval mode) whose classifier is scaled so that its logits
    spread like a trained model's (std ~5 rather than ~0.1): bounds such as 1e-3 on logits are
    then as strict as for the real models, and changes (an output stride) show."""
    from deeplabcli import build_model

    torch.manual_seed(0)
    model = build_model(arch, **overrides).eval()
    with torch.no_grad():
        model.head.classifier.weight.mul_(40)
        model.head.classifier.bias.mul_(40)
    return model


def torch_logits(model: torch.nn.Module, pixels: np.ndarray) -> np.ndarray:
    """Our torch model's logits float32 (1, C, H, W) for a network input (1, 3, H, W)."""
    with torch.inference_mode():
        return model(torch.from_numpy(pixels))["out"].numpy()
