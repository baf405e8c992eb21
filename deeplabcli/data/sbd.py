"""Build VOC "trainaug" from the SBD release (Hariharan et al., Semantic Boundaries Dataset).

SBD (``benchmark_RELEASE/dataset``) holds ``cls/<id>.mat`` files whose ``GTcls.Segmentation``
is a uint8 class-index map (0..20, no void border) plus ``train.txt``/``val.txt``.
:func:`prepare_voc` writes ``SegmentationClassAug/<id>.png`` (mode P, VOC palette): the
official VOC mask where VOC has one (VOC train and val ids), else the SBD mask converted; and
``ImageSets/Segmentation/trainaug.txt`` = SBD train + SBD val + VOC train − VOC val (sorted,
deduplicated; 10,582 ids on the full data). Re-running skips finished files; every file is
written to a temporary name and renamed.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import VOC_CLASSES
from ..errors import DatasetError, MissingDependencyError, OutputWriteError, extra_hint
from ..files import atomic_file, write_text_atomic
from .dataset import check_files_exist, read_list_file
from .masks import check_label_values, read_mask, write_index_png
from .palette import voc_palette
from .voc import find_voc_root


@dataclass
class PrepareSummary:
    """What :func:`prepare_voc` did."""

    voc_root: Path  # the VOC2012 folder
    list_path: Path  # ImageSets/Segmentation/trainaug.txt
    trainaug_ids: int  # ids in trainaug.txt
    from_sbd: int  # masks converted from SBD .mat files in this run
    from_voc: int  # official VOC masks copied in this run
    skipped: int  # masks that already existed (not rewritten)
    images_copied: int  # JPEGs copied from SBD's img/ because VOC lacked them


def find_sbd_root(path: str | os.PathLike[str]) -> Path:
    """The SBD ``dataset`` folder, given it or ``benchmark_RELEASE`` above it."""
    path = Path(path).expanduser()
    if not path.is_dir():
        raise DatasetError(
            f"SBD folder {path} does not exist. Give --sbd as the unpacked "
            "benchmark_RELEASE (or its dataset/ folder)."
        )
    for candidate in (path, path / "dataset", path / "benchmark_RELEASE" / "dataset"):
        if (candidate / "cls").is_dir():
            for name in ("train.txt", "val.txt"):
                if not (candidate / name).is_file():
                    raise DatasetError(
                        f"{candidate / name} does not exist. Give --sbd as a complete "
                        "SBD release (dataset/cls, dataset/train.txt, dataset/val.txt)."
                    )
            return candidate
    raise DatasetError(
        f"{path} is not an SBD release (no cls/ or dataset/cls/ folder inside). "
        "Give --sbd as the unpacked benchmark_RELEASE (or its dataset/ folder)."
    )


def _loadmat() -> Callable[..., dict]:
    try:
        from scipy.io import loadmat
    except ImportError:
        raise MissingDependencyError(
            f"reading the SBD release needs scipy, which is not installed. {extra_hint('sbd')}."
        ) from None
    return loadmat


def read_sbd_mask(path: Path) -> np.ndarray:
    """``GTcls.Segmentation`` of an SBD ``cls/<id>.mat`` file: uint8 ``(H, W)``, 0..20."""
    loadmat = _loadmat()
    try:
        gt = loadmat(str(path), struct_as_record=False)["GTcls"]  # (1, 1) struct array
        segmentation = np.asarray(gt.flat[0].Segmentation)
    except (OSError, ValueError, KeyError, AttributeError, TypeError, IndexError) as error:
        raise DatasetError(
            f"cannot read SBD mask {path}: {type(error).__name__}. "
            "Check that the file is an SBD cls/*.mat file with GTcls.Segmentation."
        ) from None
    if segmentation.ndim != 2 or segmentation.size == 0:
        raise DatasetError(
            f"SBD mask {path} is not a 2-D class map (shape {segmentation.shape}). "
            "Check that the file is an SBD cls/*.mat file."
        )
    if segmentation.min() < 0 or segmentation.max() > 255:
        raise DatasetError(
            f"SBD mask {path} has values outside 0..255. Check that the file is an SBD cls/*.mat file."
        )
    mask = segmentation.astype(np.uint8)
    check_label_values(mask, len(VOC_CLASSES), path)
    return mask


def trainaug_ids(
    sbd_train: list[str], sbd_val: list[str], voc_train: list[str], voc_val: list[str]
) -> list[str]:
    """SBD train + SBD val + VOC train − VOC val, sorted and deduplicated."""
    return sorted((set(sbd_train) | set(sbd_val) | set(voc_train)) - set(voc_val))


def prepare_voc(
    sbd: str | os.PathLike[str],
    voc: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    on_start: Callable[[int], None] | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> PrepareSummary:
    """Write ``SegmentationClassAug`` and ``trainaug.txt`` into the VOC folder from SBD.

    ``on_start(total)`` is called once with the number of masks to consider and
    ``on_progress(1)`` after each; existing masks are kept unless ``overwrite``.
    """
    sbd_root = find_sbd_root(sbd)
    voc_root = find_voc_root(voc)
    sets = voc_root / "ImageSets" / "Segmentation"
    lists = {}
    for name in ("train", "val"):
        if not (sets / f"{name}.txt").is_file():
            raise DatasetError(
                f"{sets / f'{name}.txt'} does not exist. Give --voc as a complete VOC 2012 "
                "trainval folder (ImageSets/Segmentation/train.txt and val.txt)."
            )
        lists[f"voc_{name}"] = read_list_file(sets / f"{name}.txt")
        lists[f"sbd_{name}"] = read_list_file(sbd_root / f"{name}.txt")
    ids = trainaug_ids(lists["sbd_train"], lists["sbd_val"], lists["voc_train"], lists["voc_val"])
    voc_ids = set(lists["voc_train"]) | set(lists["voc_val"])
    everything = sorted(set(ids) | voc_ids)
    official = voc_root / "SegmentationClass"
    check_files_exist([official / f"{i}.png" for i in sorted(voc_ids)], "VOC train/val")
    check_files_exist(
        [sbd_root / "cls" / f"{i}.mat" for i in everything if i not in voc_ids], "SBD train/val"
    )
    if any(i not in voc_ids for i in everything):
        _loadmat()  # fail before any work when scipy is missing
    try:
        images_copied = _copy_missing_images(ids, voc_root / "JPEGImages", sbd_root / "img")

        out_dir = voc_root / "SegmentationClassAug"
        out_dir.mkdir(exist_ok=True)
        palette = voc_palette()
        from_sbd = from_voc = skipped = 0
        if on_start is not None:
            on_start(len(everything))
        for image_id in everything:
            target = out_dir / f"{image_id}.png"
            if target.exists() and not overwrite:
                skipped += 1
            elif image_id in voc_ids:
                source = official / f"{image_id}.png"
                read_mask(source, len(VOC_CLASSES))  # validate before copying
                _atomic_copy(source, target)
                from_voc += 1
            else:
                write_index_png(
                    target, read_sbd_mask(sbd_root / "cls" / f"{image_id}.mat"), palette
                )
                from_sbd += 1
            if on_progress is not None:
                on_progress(1)

        list_path = sets / "trainaug.txt"
        _atomic_write_text(list_path, "".join(f"{i}\n" for i in ids))
    except OSError as error:
        where = error.filename or voc_root
        raise OutputWriteError(
            f"{where}: {error.strerror or error}. Check that the VOC folder is writable and the "
            "SBD files are readable."
        ) from None
    return PrepareSummary(voc_root, list_path, len(ids), from_sbd, from_voc, skipped, images_copied)


def _copy_missing_images(ids: list[str], jpeg_dir: Path, sbd_img: Path) -> int:
    """Copy SBD's copy of a JPEG that the VOC folder lacks; list any found in neither."""
    missing = [i for i in ids if not (jpeg_dir / f"{i}.jpg").is_file()]
    absent = [i for i in missing if not (sbd_img / f"{i}.jpg").is_file()]
    if absent:
        check_files_exist([jpeg_dir / f"{i}.jpg" for i in absent], "trainaug")
    for image_id in missing:
        _atomic_copy(sbd_img / f"{image_id}.jpg", jpeg_dir / f"{image_id}.jpg")
    return len(missing)


def _atomic_copy(source: Path, target: Path) -> None:
    with atomic_file(target) as tmp:
        shutil.copyfile(source, tmp)


def _atomic_write_text(path: Path, text: str) -> None:
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return
    write_text_atomic(path, text)
