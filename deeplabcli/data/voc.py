"""PASCAL VOC 2012 segmentation in its standard layout (+ the SBD "trainaug" labels).

::

    VOCdevkit/VOC2012/
        JPEGImages/<id>.jpg
        SegmentationClass/<id>.png        official labels (palette PNG, 255 = void border)
        SegmentationClassAug/<id>.png     trainaug labels (official + SBD; `deeplab data prepare-voc`)
        ImageSets/Segmentation/<split>.txt

The data root may be given as ``.../VOCdevkit`` or ``.../VOCdevkit/VOC2012`` (or the folder
holding ``VOCdevkit``). ``train``, ``val`` and ``trainval`` read ``SegmentationClass``;
``trainaug`` reads ``SegmentationClassAug``; any other list (a name in ``ImageSets/
Segmentation`` or the path of a list file) reads the official labels when every listed id has
one, else the trainaug labels.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..config import VOC_CLASSES
from ..errors import DatasetError
from .dataset import PairedTransform, SegmentationDataset, read_list_file
from .palette import voc_palette

OFFICIAL_SPLITS = ("train", "val", "trainval")
AUG_SPLITS = ("trainaug",)
LABEL_DIRS = {"official": "SegmentationClass", "aug": "SegmentationClassAug"}


def find_voc_root(root: str | os.PathLike[str]) -> Path:
    """The ``VOC2012`` folder for a data root given as ``VOCdevkit``, ``VOCdevkit/VOC2012`` or
    the folder that holds ``VOCdevkit``."""
    root = Path(root).expanduser()
    if not root.is_dir():
        what = "is a file, not a folder" if root.exists() else "does not exist"
        raise DatasetError(
            f"data root {root} {what}. Give --data-root (or DEEPLAB_DATA_ROOT) as "
            ".../VOCdevkit or .../VOCdevkit/VOC2012."
        )
    for candidate in (root, root / "VOC2012", root / "VOCdevkit" / "VOC2012"):
        if (candidate / "JPEGImages").is_dir():
            return candidate
    raise DatasetError(
        f"{root} is not a PASCAL VOC 2012 folder (no JPEGImages or VOC2012/JPEGImages inside). "
        "Give --data-root as .../VOCdevkit or .../VOCdevkit/VOC2012."
    )


def voc_split_names(voc: Path) -> list[str]:
    """Names of the split lists in ``ImageSets/Segmentation`` (sorted)."""
    folder = voc / "ImageSets" / "Segmentation"
    return sorted(p.stem for p in folder.glob("*.txt")) if folder.is_dir() else []


def find_split_file(voc: Path, split: str) -> Path:
    """The list file for ``split``: a name in ``ImageSets/Segmentation`` or a file path."""
    path = voc / "ImageSets" / "Segmentation" / f"{split}.txt"
    if path.is_file():
        return path
    given = Path(split).expanduser()
    if given.is_file():
        return given
    if os.sep in split or "/" in split or given.suffix == ".txt":
        raise DatasetError(f"split list {split} does not exist. Give an existing list file.")
    if split in AUG_SPLITS:
        raise DatasetError(
            f"split '{split}' not found: {path} does not exist. Create the trainaug labels and "
            f"list with `deeplab data prepare-voc --sbd PATH --voc {voc}`."
        )
    names = ", ".join(voc_split_names(voc)) or "none found"
    raise DatasetError(
        f"split '{split}' not found: {path} does not exist. Use one of: {names}, "
        "or give the path of a list file."
    )


def _voc_id(entry: str) -> str:
    """``2007_000032`` from ``2007_000032`` or ``/JPEGImages/2007_000032.jpg`` (DeepLab lists)."""
    return Path(entry).stem if ("/" in entry or "." in entry) else entry


class VOCSegmentation(SegmentationDataset):
    """PASCAL VOC 2012 segmentation: 21 classes, 255 = void.

    ``labels``: ``"auto"`` (see the module docstring), ``"official"`` (``SegmentationClass``)
    or ``"aug"`` (``SegmentationClassAug``).
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        split: str = "val",
        *,
        labels: str = "auto",
        transform: PairedTransform | None = None,
        check_files: bool = True,
    ) -> None:
        if labels not in ("auto", *LABEL_DIRS):
            raise ValueError(f"labels must be 'auto', 'official' or 'aug', not {labels!r}")
        voc = find_voc_root(root)
        list_file = find_split_file(voc, split)
        ids = [_voc_id(entry) for entry in read_list_file(list_file)]
        if not ids:
            raise DatasetError(
                f"split '{split}' ({list_file}) lists no images. Add image ids to it, one per line."
            )
        if labels == "auto":
            labels = self._auto_labels(voc, split, list_file, ids)
        label_dir = voc / LABEL_DIRS[labels]
        if labels == "aug" and not label_dir.is_dir():
            raise DatasetError(
                f"{label_dir} does not exist. Create the trainaug labels with "
                f"`deeplab data prepare-voc --sbd PATH --voc {voc}`."
            )
        self.root = voc
        self.list_file = list_file
        self.labels = labels  # "official" or "aug"
        super().__init__(
            name="voc",
            split=split,
            ids=ids,
            image_paths=[voc / "JPEGImages" / f"{i}.jpg" for i in ids],
            mask_paths=[label_dir / f"{i}.png" for i in ids],
            class_names=VOC_CLASSES,
            palette=voc_palette(),
            transform=transform,
            check_files=check_files,
        )

    @staticmethod
    def _auto_labels(voc: Path, split: str, list_file: Path, ids: list[str]) -> str:
        if split in OFFICIAL_SPLITS:
            return "official"
        if split in AUG_SPLITS or list_file.stem in AUG_SPLITS:
            return "aug"
        official = voc / LABEL_DIRS["official"]
        if all((official / f"{i}.png").is_file() for i in dict.fromkeys(ids)):
            return "official"
        aug = voc / LABEL_DIRS["aug"]
        if aug.is_dir() and all((aug / f"{i}.png").is_file() for i in dict.fromkeys(ids)):
            return "aug"
        return "official"  # the missing-files error then lists what is absent
