"""Data: PASCAL VOC 2012 (+ SBD trainaug), custom folders, paired transforms, palettes.

>>> from deeplabcli.data import open_dataset
>>> val = open_dataset("voc", "VOCdevkit", "val")          # doctest: +SKIP
>>> sample = val.load(0)  # Sample: id, image uint8 (H, W, 3), mask uint8 (H, W), paths

Names are imported lazily, so ``deeplabcli.data.palette`` stays cheap to import.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from .._exports import lazy_exports
from ..config import DATASETS as DATASET_KINDS  # the kinds open_dataset (--dataset) accepts

if TYPE_CHECKING:
    from .dataset import PairedTransform, SegmentationDataset


#: environment variable read when no data root is given
DATA_ROOT_ENV = "DEEPLAB_DATA_ROOT"

_EXPORTS: dict[str, str] = {
    "Sample": "dataset",
    "SegmentationDataset": "dataset",
    "SegmentationLoader": "dataset",
    "SeededSampler": "dataset",
    "collate": "dataset",
    "sample_seed": "dataset",
    "VOCSegmentation": "voc",
    "FolderDataset": "folder",
    "ClassSpec": "folder",
    "read_classes_file": "folder",
    "TrainTransform": "transforms",
    "EvalTransform": "transforms",
    "normalise": "transforms",
    "read_image_array": "masks",
    "read_mask": "masks",
    "colour_to_index": "masks",
    "convert_colour_masks": "masks",
    "write_index_png": "masks",
    "prepare_voc": "sbd",
    "voc_palette": "palette",
    "palette_for": "palette",
    "colourise": "palette",
}

_names, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = ["DATASET_KINDS", "DATA_ROOT_ENV", "open_dataset", *_names]


def open_dataset(
    kind: str,
    root: str | os.PathLike[str] | None,
    split: str,
    *,
    transform: PairedTransform | None = None,
    check_files: bool = True,
) -> SegmentationDataset:
    """Open a data set: ``kind`` is ``"voc"`` or ``"folder"``; ``root`` defaults to
    ``$DEEPLAB_DATA_ROOT``; ``split`` is a split name or the path of a list file.
    ``check_files=False`` opens it even when listed images or masks are missing (for
    :func:`~deeplabcli.data.check.check_dataset`, which reports them with everything else)."""
    from ..errors import ConfigError, DatasetError

    if kind not in DATASET_KINDS:
        raise ConfigError(f"unknown data set {kind!r}. Use one of: {', '.join(DATASET_KINDS)}.")
    root = root or os.environ.get(DATA_ROOT_ENV) or None
    if root is None:
        raise DatasetError(
            f"no data root given. Pass --data-root or set {DATA_ROOT_ENV} to the data set folder."
        )
    if kind == "voc":
        from .voc import VOCSegmentation

        return VOCSegmentation(root, split, transform=transform, check_files=check_files)
    from .folder import FolderDataset

    return FolderDataset(root, split, transform=transform, check_files=check_files)
