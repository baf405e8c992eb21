"""Hard-image bootstrapping (paper Sec. 4.4): duplicate the training images that contain hard
classes (by default bicycle, chair, diningtable, pottedplant, sofa) in the training list.

Which classes an image contains is read from its mask. The new list keeps the original order;
every entry whose mask holds any of the named classes is written ``copies`` times in a row. It
is a plain split list, so ``deeplab train --split <list>`` (a name or a path) reads it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..config import HARD_CLASSES
from ..errors import ConfigError, OutputWriteError
from ..files import check_writable, write_text_atomic
from . import open_dataset
from .dataset import SegmentationDataset

SUFFIX = "_bootstrap"


@dataclass
class BootstrapResult:
    output: Path  # the list written
    classes: tuple[str, ...]  # the hard classes asked for
    images_per_class: dict[str, int]  # list entries whose mask contains each class
    hard_entries: int  # entries containing any hard class (each written `copies` times)
    original_length: int
    new_length: int
    copies: int


def default_output(dataset: SegmentationDataset) -> Path:
    """``<list>_bootstrap.txt`` beside the split's list file (``ImageSets/Segmentation`` for
    VOC), or ``ROOT/splits/<split>_bootstrap.txt`` for a folder split without a list."""
    list_file = getattr(dataset, "list_file", None)
    if list_file is not None:
        return Path(list_file).with_name(f"{Path(list_file).stem}{SUFFIX}.txt")
    return Path(dataset.root) / "splits" / f"{dataset.split}{SUFFIX}.txt"  # type: ignore[attr-defined]


def check_classes(names: Sequence[str], known: Sequence[str]) -> tuple[str, ...]:
    """``names`` (stripped, de-duplicated); unknown names raise a ConfigError listing the
    valid ones."""
    cleaned = tuple(dict.fromkeys(n.strip() for n in names if n.strip()))
    if not cleaned:
        raise ConfigError("no class names given. Name at least one class, e.g. --classes chair.")
    unknown = [n for n in cleaned if n not in known]
    if unknown:
        raise ConfigError(
            f"unknown class names: {', '.join(unknown)}. Use names from: {', '.join(known)}."
        )
    return cleaned


def bootstrap_split(
    data_root: str | os.PathLike[str] | None,
    split: str = "train",
    classes: Sequence[str] = HARD_CLASSES,
    *,
    copies: int = 2,
    output: str | os.PathLike[str] | None = None,
    dataset: str = "voc",
    workers: int = 4,
    on_progress: Callable[[int], None] | None = None,
    on_total: Callable[[int], None] | None = None,
) -> BootstrapResult:
    """Write a bootstrapped copy of ``split`` (see the module docstring) and say what it did.
    ``on_total(n)`` learns how many masks will be read, ``on_progress(1)`` follows each."""
    if copies < 1:
        raise ConfigError(f"copies must be at least 1, got {copies}. Give e.g. --copies 2.")
    data = open_dataset(dataset, data_root, split)
    wanted = check_classes(classes, data.class_names)
    indices = {data.class_names.index(n) for n in wanted}
    target = Path(output).expanduser() if output is not None else default_output(data)
    source = getattr(data, "list_file", None)
    if source is not None and target.resolve() == Path(source).resolve():
        raise OutputWriteError(
            f"{target} is the list being bootstrapped. Give another output with -o."
        )
    # before the masks are read: a list can be written there (not under a file, say)
    check_writable(target.parent if target.is_file() else target, "Give another output with -o")
    if on_total is not None:
        on_total(len(set(data.mask_paths)))
    present = data.classes_present(workers=workers, on_progress=on_progress)
    lines: list[str] = []
    per_class = dict.fromkeys(wanted, 0)
    hard = 0
    for entry, found in zip(data.ids, present, strict=True):
        hits = indices.intersection(found)
        for index in hits:
            per_class[data.class_names[index]] += 1
        hard += bool(hits)
        lines.extend([entry] * (copies if hits else 1))
    _write_list(target, lines)
    return BootstrapResult(target, wanted, per_class, hard, len(data), len(lines), copies)


def _write_list(path: Path, entries: list[str]) -> None:
    try:
        write_text_atomic(path, "".join(f"{e}\n" for e in entries), mkdir=True)
    except OSError as error:
        raise OutputWriteError(f"cannot write {path} ({error.strerror}). Check the path.") from None
