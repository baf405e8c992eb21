"""Read a whole data set once and report every problem (``deeplab data check``).

Nothing stops the check early: missing images and masks, unreadable files, colour masks, label
values out of range and image/mask size mismatches are all collected, each under its kind, so
one run shows everything that is wrong with a split. Ids listed more than once are reported
too (a bootstrapped training list does that on purpose; an evaluation would count them twice).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from ..errors import (
    DeeplabError,
    ImageReadError,
    LabelValueError,
    MaskFormatError,
    SizeMismatchError,
)
from .dataset import SegmentationDataset

#: Each kind of problem and the title of its group, in report order.
PROBLEM_KINDS: dict[str, str] = {
    "missing_image": "missing images",
    "missing_mask": "missing masks",
    "unreadable": "unreadable images or masks",
    "not_index_mask": "masks that are not class-index images (e.g. RGB colour masks)",
    "label_values": "masks with label values out of range",
    "size_mismatch": "images and masks of different sizes",
    "other": "other problems",
}
#: The kind of each error class (the first that matches).
_KIND_OF: tuple[tuple[type[DeeplabError], str], ...] = (
    (MaskFormatError, "not_index_mask"),
    (LabelValueError, "label_values"),
    (SizeMismatchError, "size_mismatch"),
    (ImageReadError, "unreadable"),
)


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one sample."""

    id: str  # the sample's id in the split list
    kind: str  # a key of PROBLEM_KINDS
    message: str  # one line naming the file and how to fix it


@dataclass
class DatasetReport:
    """What :func:`check_dataset` found."""

    images: int  # samples checked (distinct image/mask pairs)
    problems: list[Problem] = field(default_factory=list)  # in split order within each kind
    duplicates: dict[str, int] = field(default_factory=dict)  # id → times listed (> 1)
    images_per_class: list[int] = field(default_factory=list)  # images containing class c
    pixels_per_class: list[int] = field(default_factory=list)  # labelled pixels of class c
    ignored_pixels: int = 0  # pixels labelled 255

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def images_with_problems(self) -> int:
        return len({p.id for p in self.problems})

    def grouped(self) -> dict[str, list[Problem]]:
        """The problems by kind (only kinds that occur), in :data:`PROBLEM_KINDS` order."""
        groups = {kind: [p for p in self.problems if p.kind == kind] for kind in PROBLEM_KINDS}
        return {kind: found for kind, found in groups.items() if found}


def distinct_samples(dataset: SegmentationDataset) -> list[int]:
    """Indices of the distinct (image, mask) pairs of ``dataset`` (a bootstrapped list names
    some twice)."""
    pairs = zip(dataset.image_paths, dataset.mask_paths, strict=True)
    return sorted({pair: i for i, pair in enumerate(pairs)}.values())


def duplicate_ids(dataset: SegmentationDataset) -> dict[str, int]:
    """Ids the split lists more than once → how many times, in first-listed order."""
    counts = Counter(dataset.ids)
    return {i: counts[i] for i in dict.fromkeys(dataset.ids) if counts[i] > 1}


def check_dataset(
    dataset: SegmentationDataset,
    *,
    workers: int = 4,
    on_progress: Callable[[int], None] | None = None,
) -> DatasetReport:
    """Check every distinct sample (files present, image and mask fully validated) with
    ``workers`` threads; collect each problem instead of stopping at the first. ``dataset`` may
    be opened with ``check_files=False``: missing files are then reported here."""
    n = dataset.num_classes
    unique = distinct_samples(dataset)
    report = DatasetReport(
        images=len(unique),
        duplicates=duplicate_ids(dataset),
        images_per_class=[0] * n,
        pixels_per_class=[0] * n,
    )

    def one(index: int) -> tuple[list[Problem], np.ndarray | None]:
        image_id = dataset.ids[index]
        missing = [
            Problem(image_id, kind, f"{path} does not exist. Add the file or drop "
                    f"'{image_id}' from the split list.")
            for kind, path in (("missing_image", dataset.image_paths[index]),
                               ("missing_mask", dataset.mask_paths[index]))
            if not os.path.isfile(path)
        ]  # fmt: skip
        if missing:
            return missing, None
        try:
            return [], np.bincount(dataset.load(index).mask.ravel(), minlength=256)
        except DeeplabError as error:
            kind = next((k for cls, k in _KIND_OF if isinstance(error, cls)), "other")
            return [Problem(image_id, kind, str(error))], None

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for problems, counts in pool.map(one, unique):
            report.problems.extend(problems)
            if counts is not None:
                for c in np.flatnonzero(counts[:n]):
                    report.images_per_class[c] += 1
                for c in range(n):
                    report.pixels_per_class[c] += int(counts[c])
                report.ignored_pixels += int(counts[255])
            if on_progress is not None:
                on_progress(1)
    return report
