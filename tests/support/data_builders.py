"""Tiny data sets written into tmp_path for the data tests (VOC layout, custom folders)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image

from deeplabcli.data.palette import voc_palette


def save_mask(path: Path, mask: np.ndarray, mode: str = "P") -> Path:
    """uint8 (H, W) class indices → PNG in mode P (VOC palette) or L."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(np.asarray(mask, dtype=np.uint8))
    if mode == "P":
        image = image.convert("P")
        image.putpalette(voc_palette().reshape(-1).tolist())
    image.save(path)
    return path


def save_image(path: Path, rgb: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(rgb, dtype=np.uint8)).save(path)
    return path


def random_mask(rng: np.random.Generator, size: tuple[int, int], num_classes: int) -> np.ndarray:
    """Blocky class map (H, W) with a 255 border, like VOC's."""
    h, w = size
    coarse = rng.integers(0, num_classes, size=(h // 4 + 1, w // 4 + 1))
    mask = np.kron(coarse, np.ones((4, 4), dtype=np.int64))[:h, :w].astype(np.uint8)
    mask[0, :] = 255
    return mask


def make_voc(
    root: Path,
    splits: dict[str, Iterable[str]],
    *,
    size: tuple[int, int] = (24, 32),
    aug_only: Iterable[str] = (),
    seed: int = 0,
) -> Path:
    """``root/VOCdevkit/VOC2012`` with JPEGs, official masks for every id in ``splits`` and
    ``SegmentationClassAug`` masks for those ids plus ``aug_only`` ids. Returns VOC2012."""
    rng = np.random.default_rng(seed)
    voc = root / "VOCdevkit" / "VOC2012"
    sets = voc / "ImageSets" / "Segmentation"
    sets.mkdir(parents=True)
    official = sorted({i for ids in splits.values() for i in ids})
    for image_id in [*official, *aug_only]:
        save_image(voc / "JPEGImages" / f"{image_id}.jpg", rng.integers(0, 256, (*size, 3)))
        mask = random_mask(rng, size, 21)
        if image_id in official:
            save_mask(voc / "SegmentationClass" / f"{image_id}.png", mask)
        aug = mask.copy()
        aug[aug == 255] = 0
        save_mask(voc / "SegmentationClassAug" / f"{image_id}.png", aug)
    for name, ids in splits.items():
        (sets / f"{name}.txt").write_text("".join(f"{i}\n" for i in ids))
    return voc


def make_folder(
    root: Path,
    stems: Iterable[str] = ("a", "b", "c"),
    *,
    classes: str = "background\ncat 64 0 0\ndog #00ff00\n",
    size: tuple[int, int] = (20, 30),
    seed: int = 0,
) -> Path:
    """A custom data set: ROOT/classes.txt, ROOT/images/<stem>.png, ROOT/masks/<stem>.png."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir(parents=True)
    (root / "classes.txt").write_text(classes)
    num_classes = sum(1 for line in classes.splitlines() if line.strip())
    for stem in stems:
        save_image(root / "images" / f"{stem}.png", rng.integers(0, 256, (*size, 3)))
        save_mask(root / "masks" / f"{stem}.png", random_mask(rng, size, num_classes), "L")
    return root
