"""Read a whole data set once and report every bad file (``deeplab data check``)."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from ..errors import DeeplabError
from .dataset import SegmentationDataset


@dataclass
class DatasetReport:
    """What :func:`check_dataset` found."""

    images: int  # samples checked (unique image/mask pairs)
    problems: list[tuple[str, str]] = field(default_factory=list)  # (id, one-line message)
    images_per_class: list[int] = field(default_factory=list)  # images containing class c
    pixels_per_class: list[int] = field(default_factory=list)  # labelled pixels of class c
    ignored_pixels: int = 0  # pixels labelled 255

    @property
    def ok(self) -> bool:
        return not self.problems


def distinct_samples(dataset: SegmentationDataset) -> list[int]:
    """Indices of the distinct (image, mask) pairs of ``dataset`` (a bootstrapped list names
    some twice)."""
    pairs = zip(dataset.image_paths, dataset.mask_paths, strict=True)
    return sorted({pair: i for i, pair in enumerate(pairs)}.values())


def check_dataset(
    dataset: SegmentationDataset,
    *,
    workers: int = 4,
    on_progress: Callable[[int], None] | None = None,
) -> DatasetReport:
    """Load every distinct sample (image and mask, fully validated) with ``workers`` threads;
    collect each failure instead of stopping at the first."""
    n = dataset.num_classes
    unique = distinct_samples(dataset)
    report = DatasetReport(images=len(unique), images_per_class=[0] * n, pixels_per_class=[0] * n)

    def one(index: int) -> tuple[int, np.ndarray | None, str | None]:
        try:
            return index, np.bincount(dataset.load(index).mask.ravel(), minlength=256), None
        except DeeplabError as error:
            return index, None, str(error)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for index, counts, problem in pool.map(one, unique):
            if problem is not None:
                report.problems.append((dataset.ids[index], problem))
            else:
                assert counts is not None
                for c in np.flatnonzero(counts[:n]):
                    report.images_per_class[c] += 1
                for c in range(n):
                    report.pixels_per_class[c] += int(counts[c])
                report.ignored_pixels += int(counts[255])
            if on_progress is not None:
                on_progress(1)
    return report
