"""Calibration images for ``--int8``: where they come from, and their network inputs.

``--calibrate`` names either

- a folder: every image file under it (sub-folders too; the suffixes ``deeplab predict``
  scans for), without labels, unless it is a custom data set (``images/``, ``masks/``,
  ``classes.txt``: then its ``all`` split, with labels); or
- a data set split ``KIND:SPLIT`` as ``deeplab eval`` names them (``voc:trainaug``,
  ``voc:train``, ``folder:all``), read from ``data_root`` (``--data-root`` or
  ``$DEEPLAB_DATA_ROOT``), with labels.

Of more images than asked for, ``count`` evenly spread over the list are used (deterministic).
Images are preprocessed exactly as predict does (:func:`~deeplabcli.runtimes.preprocess.preprocess`).
Everything is read and checked before anything is written.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..config import IGNORE_INDEX, Preprocessing
from ..data import DATASET_KINDS, open_dataset
from ..data.images import read_image
from ..errors import ConfigError, DatasetError
from ..files import is_image_name
from ..progress import message, progress_bar
from ..runtimes.preprocess import preprocess

if TYPE_CHECKING:
    from ..data.dataset import SegmentationDataset

SPEC_HINT = "Give a folder of images, or a data set split such as voc:trainaug with --data-root"


@dataclass(frozen=True)
class CalibrationSource:
    """The calibration images chosen (not read yet)."""

    spec: str  # what the user gave (--calibrate)
    images: tuple[Path, ...]
    available: int  # images the source holds (``images`` is at most ``count`` of them)
    dataset: SegmentationDataset | None = None  # the labelled data set they come from, if any
    indices: tuple[int, ...] = ()  # their positions in ``dataset``

    @property
    def labelled(self) -> bool:
        return self.dataset is not None

    def describe(self) -> str:
        labels = "with labels" if self.labelled else "without labels"
        return f"{len(self.images)} of {self.available} images from {self.spec} ({labels})"


@dataclass
class CalibrationImage:
    """One calibration image as the network sees it, with its label when there is one."""

    path: Path
    pixels: np.ndarray  # float32 (1, 3, H', W') normalised network input
    content: tuple[int, int]  # (h, w) the image fills in ``pixels``
    size: tuple[int, int]  # the image's own (H, W)
    mask: np.ndarray | None  # uint8 (H, W) class indices, 255 = ignore; None without labels


def find_calibration_images(
    spec: str | os.PathLike, data_root: str | os.PathLike | None = None, count: int = 100
) -> CalibrationSource:
    """Resolve ``--calibrate`` (see the module docstring) to at most ``count`` images; raises
    a one-line :class:`DatasetError` or :class:`ConfigError` for a source with no images."""
    if count < 1:
        raise ConfigError(f"--calibration-images must be at least 1, not {count}.")
    text = os.fspath(spec)
    path = Path(text).expanduser()
    if path.is_dir():
        if (
            (path / "images").is_dir()
            and (path / "masks").is_dir()
            and (path / "classes.txt").is_file()
        ):
            return _from_dataset("folder", path, "all", text, count)
        images = [p for p in sorted(path.rglob("*")) if is_image_name(p) and p.is_file()]
        if not images:
            raise DatasetError(
                f"--calibrate folder {path} holds no image files (.jpg, .png, .bmp, ...). "
                f"{SPEC_HINT}."
            )
        chosen = spread(images, count)
        return CalibrationSource(text, tuple(chosen), len(images))
    kind, colon, split = text.partition(":")
    if colon and kind in DATASET_KINDS and split:
        return _from_dataset(kind, data_root, split, text, count)
    what = "is a file, not a folder" if path.exists() else "is neither a folder nor a split"
    raise DatasetError(f"--calibrate {text} {what}. {SPEC_HINT}.")


def _from_dataset(
    kind: str, root: str | os.PathLike | None, split: str, spec: str, count: int
) -> CalibrationSource:
    dataset = open_dataset(kind, root, split)
    chosen = spread(list(range(len(dataset))), count)
    images = tuple(dataset.image_paths[i] for i in chosen)
    return CalibrationSource(spec, images, len(dataset), dataset, tuple(chosen))


def spread(items: Sequence, count: int) -> list:
    """``count`` items evenly spread over ``items`` (all of them when there are fewer)."""
    if len(items) <= count:
        return list(items)
    picks = np.linspace(0, len(items) - 1, count).round().astype(int)
    return [items[i] for i in picks]


def load_calibration(
    source: CalibrationSource, prep: Preprocessing, num_classes: int, *, progress: bool = True
) -> list[CalibrationImage]:
    """Read and preprocess every calibration image (a bad file raises its one-line error).
    Labels are kept only when the data set's classes are as many as the model's."""
    dataset = source.dataset
    labelled = dataset is not None and dataset.num_classes == num_classes
    if dataset is not None and not labelled:
        message(
            f"{source.spec} has labels of {dataset.num_classes} classes, the model "
            f"{num_classes}: calibrating on its images without an mIoU.",
            quiet=not progress,
        )
    out = []
    with progress_bar(len(source.images), "reading calibration images", disable=not progress,
                      unit="images") as bar:  # fmt: skip
        for i, path in enumerate(source.images):
            if labelled:  # read and checked as eval reads it (mask format, labels, size)
                sample = dataset.load(source.indices[i])  # type: ignore[union-attr]
                rgb, mask = sample.image, sample.mask
            else:
                rgb, mask = np.asarray(read_image(path), dtype=np.uint8), None
            pixels, content = preprocess(rgb, prep)
            out.append(CalibrationImage(path, pixels, content, rgb.shape[:2], mask))
            bar.advance()
    return out


def confusion(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """int64 (C, C) counts of (label, prediction) pairs; labels 255 are skipped (the maths of
    :func:`deeplabcli.evaluation.metrics.confusion_matrix`, here below evaluation's floor)."""
    t = labels.reshape(-1).astype(np.int64)
    p = predictions.reshape(-1).astype(np.int64)
    keep = t != IGNORE_INDEX
    counts = np.bincount(t[keep] * num_classes + p[keep], minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def mean_iou(cm: np.ndarray) -> float:
    """Mean IoU of a confusion matrix over the classes present in labels or predictions (as
    :func:`deeplabcli.evaluation.metrics.compute_metrics` reports it); NaN if none is."""
    tp = np.diag(cm).astype(np.float64)
    union = cm.sum(0) + cm.sum(1) - tp
    present = union > 0
    return float((tp[present] / union[present]).mean()) if present.any() else float("nan")
