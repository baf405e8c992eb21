"""Synthetic segmentation data for the training tests: coloured shapes on noise.

Every image is noise with up to three shapes (a red square, a green disc, a blue triangle); the
mask is derived from the drawing, so a model can learn it quickly and exactly. Written in the
VOC layout (JPEGImages, SegmentationClass PNGs in mode P, ImageSets/Segmentation/*.txt) or the
custom-folder layout (images/, masks/, classes.txt, splits/*.txt).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from deeplabcli.data.palette import voc_palette

SHAPE_CLASSES = ("background", "square", "disc", "triangle")
COLOURS = {1: (220, 40, 40), 2: (40, 200, 60), 3: (50, 70, 230)}


def draw_sample(rng: np.random.Generator, size: int = 96) -> tuple[np.ndarray, np.ndarray]:
    """RGB uint8 (size, size, 3) and its mask uint8 (size, size) with classes 0..3."""
    image = rng.normal(128, 40, (size, size, 3)).clip(0, 255)
    mask = np.zeros((size, size), np.uint8)
    yy, xx = np.mgrid[:size, :size]
    for cls in rng.permutation([1, 2, 3])[: rng.integers(1, 4)]:
        r = int(rng.integers(size // 8, size // 4))
        cy, cx = (int(v) for v in rng.integers(r, size - r, 2))
        if cls == 1:
            region = (abs(yy - cy) <= r) & (abs(xx - cx) <= r)
        elif cls == 2:
            region = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        else:
            region = (yy <= cy + r) & (yy >= cy - r) & (abs(xx - cx) <= (yy - (cy - r)) / 2)
        mask[region] = cls
        image[region] = np.asarray(COLOURS[int(cls)]) + rng.normal(0, 20, (int(region.sum()), 3))
    return image.clip(0, 255).astype(np.uint8), mask


def _save_mask(path: Path, mask: np.ndarray) -> None:
    image = Image.fromarray(mask).convert("P")
    image.putpalette(voc_palette().reshape(-1).tolist())
    image.save(path)


def make_shapes_voc(root: Path, splits: dict[str, int], *, size: int = 96, seed: int = 0) -> Path:
    """``root/VOCdevkit/VOC2012`` with ``splits`` = {name: image count}; returns VOCdevkit.
    Class indices 0..3 fall in VOC's 21 (background, aeroplane, bicycle, bird)."""
    rng = np.random.default_rng(seed)
    voc = root / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / sub).mkdir(parents=True, exist_ok=True)
    for name, count in splits.items():
        ids = [f"{name}_{i:04d}" for i in range(count)]
        for image_id in ids:
            image, mask = draw_sample(rng, size)
            Image.fromarray(image).save(voc / "JPEGImages" / f"{image_id}.jpg", quality=95)
            _save_mask(voc / "SegmentationClass" / f"{image_id}.png", mask)
        (voc / "ImageSets" / "Segmentation" / f"{name}.txt").write_text(
            "".join(f"{i}\n" for i in ids)
        )
    return root / "VOCdevkit"


def make_shapes_folder(
    root: Path, splits: dict[str, int], *, size: int = 96, seed: int = 0
) -> Path:
    """A custom data set (4 classes: background, square, disc, triangle) with ``splits``."""
    rng = np.random.default_rng(seed)
    for sub in ("images", "masks", "splits"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    (root / "classes.txt").write_text("\n".join(SHAPE_CLASSES) + "\n")
    for name, count in splits.items():
        stems = [f"{name}_{i:04d}" for i in range(count)]
        for stem in stems:
            image, mask = draw_sample(rng, size)
            Image.fromarray(image).save(root / "images" / f"{stem}.png")
            _save_mask(root / "masks" / f"{stem}.png", mask)
        (root / "splits" / f"{name}.txt").write_text("".join(f"{s}\n" for s in stems))
    return root
