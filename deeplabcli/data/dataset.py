"""The data set every source (VOC, custom folders) becomes: a list of (id, image, mask) files.

Cheap checks happen when a data set is opened (root, split list, every listed file exists);
per-file checks (readable image, class-index mask, label range, image/mask size) happen when a
sample is read, so a run over a data set with one bad file names that file and stops.

Two ways to read a :class:`SegmentationDataset`:

- evaluation: ``dataset.load(i)`` (or indexing without a transform) gives a :class:`Sample`
  with the whole image at its original size, its mask, id and paths;
- training: ``dataset.with_transform(TrainTransform(...))[(i, seed)]`` gives
  ``{"image": float32 (3, S, S), "mask": int64 (S, S), "index": i}``; the augmentation is a
  pure function of ``seed`` (see :class:`SeededSampler`), so runs resume bit-exactly.

Batches come from :class:`SegmentationLoader`, which turns an error raised in a worker process
back into the original one-line :class:`~deeplabcli.errors.DeeplabError`.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, get_worker_info
from torch.utils.data._utils.collate import default_collate

from ..errors import DatasetError, DeeplabError, SizeMismatchError
from .masks import SHOW_AT_MOST, classes_in_mask, read_image_array, read_mask, summarise


@dataclass
class Sample:
    """One image and its label mask at their original size."""

    index: int  # position in the data set (ids may repeat in bootstrapped lists)
    id: str  # the id from the split list (file stem, possibly with sub-folders)
    image: np.ndarray  # uint8 (H, W, 3) RGB, 0..255
    mask: np.ndarray  # uint8 (H, W) class indices, 255 = ignore
    image_path: Path
    mask_path: Path


@dataclass
class LoadFailure:
    """A sample that failed to load in a worker process; re-raised by SegmentationLoader."""

    index: int
    error: DeeplabError


class PairedTransform(Protocol):
    def __call__(
        self, image: np.ndarray, mask: np.ndarray, generator: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor]: ...


class SegmentationDataset(Dataset):
    """Images with class-index masks, in split-list order (duplicates kept).

    Subclasses (:class:`~deeplabcli.data.voc.VOCSegmentation`,
    :class:`~deeplabcli.data.folder.FolderDataset`) only work out the file lists and classes.
    """

    def __init__(
        self,
        *,
        name: str,
        split: str,
        ids: Sequence[str],
        image_paths: Sequence[Path],
        mask_paths: Sequence[Path],
        class_names: Sequence[str],
        palette: np.ndarray,
        transform: PairedTransform | None = None,
        classes_file: Path | None = None,
        check_files: bool = True,
    ) -> None:
        if not len(ids) == len(image_paths) == len(mask_paths):
            raise ValueError("ids, image_paths and mask_paths must have the same length")
        if not ids:
            raise DatasetError(
                f"split '{split}' of {name} has no images. Give a split with images."
            )
        self.name = name  # e.g. "voc" or "folder", for reports
        self.split = split
        self.ids = list(ids)
        self.image_paths = [Path(p) for p in image_paths]
        self.mask_paths = [Path(p) for p in mask_paths]
        self.class_names = tuple(class_names)
        self.palette = np.asarray(palette, dtype=np.uint8)  # (256, 3) RGB per class index
        self.transform = transform
        self.classes_file = classes_file  # where the class colours come from (None: VOC's)
        #: set by SegmentationLoader: in worker processes, return LoadFailure instead of raising
        self.capture_worker_errors = False
        if check_files:  # off only for `deeplab data check`, which reports missing files itself
            check_files_exist(self.image_paths + self.mask_paths, split)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(split={self.split!r}, images={len(self)}, "
            f"classes={self.num_classes})"
        )

    def with_transform(self, transform: PairedTransform | None) -> SegmentationDataset:
        """A shallow copy that applies ``transform`` when indexed."""
        other = copy.copy(self)
        other.transform = transform
        return other

    def load_mask(self, index: int) -> np.ndarray:
        """The validated mask of sample ``index``: uint8 ``(H, W)``."""
        return read_mask(self.mask_paths[index], self.num_classes, classes_file=self.classes_file)

    def load(self, index: int) -> Sample:
        """Sample ``index`` at its original size, validated (readable image, class-index mask,
        labels in range, same size as the image)."""
        image_path, mask_path = self.image_paths[index], self.mask_paths[index]
        image = read_image_array(image_path)
        mask = self.load_mask(index)
        if image.shape[:2] != mask.shape:
            (h, w), (mh, mw) = image.shape[:2], mask.shape
            raise SizeMismatchError(
                f"image and mask sizes differ for '{self.ids[index]}': {image_path} is "
                f"{w}x{h}, {mask_path} is {mw}x{mh}. Give every mask its image's exact size."
            )
        return Sample(index, self.ids[index], image, mask, image_path, mask_path)

    def __getitem__(self, key: int | tuple[int, int]) -> Any:
        """``dataset[i]`` or ``dataset[(i, seed)]``: a :class:`Sample` without a transform,
        else ``{"image": float32 (3, H, W), "mask": int64 (H, W), "index": i}`` where the
        transform's random draws come from a generator seeded with ``seed``."""
        if isinstance(key, (tuple, list)):
            index, seed = int(key[0]), int(key[1])
        else:
            index, seed = int(key), None
        try:
            sample = self.load(index)
        except DeeplabError as error:
            if self.capture_worker_errors and get_worker_info() is not None:
                return LoadFailure(index, error)
            raise
        if self.transform is None:
            return sample
        generator = None if seed is None else torch.Generator().manual_seed(seed)
        image, mask = self.transform(sample.image, sample.mask, generator)
        return {"image": image, "mask": mask, "index": index}

    def classes_present(
        self, *, workers: int = 4, on_progress: Callable[[int], None] | None = None
    ) -> list[tuple[int, ...]]:
        """For every sample (in data set order), the class indices its mask contains (255
        ignored). Reads only the masks, each file once, with ``workers`` threads; calls
        ``on_progress(1)`` per mask read."""
        unique = list(dict.fromkeys(self.mask_paths))
        by_path: dict[Path, tuple[int, ...]] = {}

        def one(path: Path) -> tuple[Path, tuple[int, ...]]:
            mask = read_mask(path, self.num_classes, classes_file=self.classes_file)
            return path, classes_in_mask(mask, self.num_classes)

        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            for path, classes in pool.map(one, unique):
                by_path[path] = classes
                if on_progress is not None:
                    on_progress(1)
        return [by_path[p] for p in self.mask_paths]


def check_files_exist(paths: Sequence[Path], split: str) -> None:
    """Raise :class:`DatasetError` listing the first few missing files and their count."""
    missing = [str(p) for p in dict.fromkeys(paths) if not os.path.isfile(p)]
    if missing:
        raise DatasetError(
            f"{len(missing)} files listed by split '{split}' are missing: "
            f"{summarise(missing, SHOW_AT_MOST)}. Check the data root and the split list."
        )


def read_list_file(path: Path) -> list[str]:
    """Entries of a split list: the first word of each line; blank lines and ``#`` comments are
    skipped; order and duplicates are kept (bootstrapped lists repeat ids)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise DatasetError(
            f"cannot read split list {path}: {error.__class__.__name__}. "
            "Give a text file with one image id per line."
        ) from None
    entries = []
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        if words:
            entries.append(words[0])
    return entries


# ------------------------------------------------------------------ training order and seeds
def sample_seed(seed: int, *keys: int) -> int:
    """A well-mixed 63-bit seed derived from ``seed`` and non-negative integer ``keys``
    (a pure function: the same inputs give the same seed on every machine)."""
    state = np.random.SeedSequence([seed, *keys]).generate_state(2, dtype=np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1]))


class SeededSampler(Sampler):
    """Training order as a pure function of ``seed``: yields ``(index, augmentation_seed)``.

    Position ``p`` of the stream (0, 1, 2, ...) falls in epoch ``p // num_items``; each epoch
    is a permutation drawn from ``sample_seed(seed, 0, epoch)`` (identity if not ``shuffle``),
    and the sample at ``p`` is augmented with ``sample_seed(seed, 1, p)``. ``total`` positions
    are produced (iterations × global batch), from ``start`` on (resume), and under
    distributed training rank ``r`` of ``world_size`` takes the positions ``p ≡ r``.
    """

    def __init__(
        self,
        num_items: int,
        seed: int,
        total: int,
        *,
        start: int = 0,
        shuffle: bool = True,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if num_items < 1 or total < 0 or not 0 <= start <= total or not 0 <= rank < world_size:
            raise ValueError("invalid SeededSampler arguments")
        self.num_items, self.seed, self.total, self.start = num_items, seed, total, start
        self.shuffle, self.rank, self.world_size = shuffle, rank, world_size

    def _order(self, epoch: int) -> list[int]:
        if not self.shuffle:
            return list(range(self.num_items))
        generator = torch.Generator().manual_seed(sample_seed(self.seed, 0, epoch))
        return torch.randperm(self.num_items, generator=generator).tolist()

    def positions(self) -> range:
        first = self.start + (self.rank - self.start) % self.world_size
        return range(first, self.total, self.world_size)

    def __len__(self) -> int:
        return len(self.positions())

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch, order = -1, []
        for position in self.positions():
            if position // self.num_items != epoch:
                epoch = position // self.num_items
                order = self._order(epoch)
            yield order[position % self.num_items], sample_seed(self.seed, 1, position)


# ------------------------------------------------------------------ batching
def collate(items: list[Any]) -> Any:
    """Batch training dicts with torch's default collate; keep :class:`Sample` lists as lists
    (whole images differ in size); pass the first :class:`LoadFailure` through unchanged."""
    for item in items:
        if isinstance(item, LoadFailure):
            return item
    if items and isinstance(items[0], Sample):
        return list(items)
    return default_collate(items)


class SegmentationLoader(DataLoader):
    """A DataLoader over a :class:`SegmentationDataset` whose worker errors stay clean.

    A :class:`~deeplabcli.errors.DeeplabError` raised while reading a sample in a worker
    process is re-raised here as itself (one line, naming the file), not wrapped in torch's
    multi-line worker traceback. ``collate_fn`` defaults to :func:`collate`.
    """

    def __init__(self, dataset: SegmentationDataset, **kwargs: Any) -> None:
        kwargs.setdefault("collate_fn", collate)
        dataset.capture_worker_errors = True
        super().__init__(dataset, **kwargs)

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        for batch in super().__iter__():
            if isinstance(batch, LoadFailure):
                raise batch.error
            yield batch
