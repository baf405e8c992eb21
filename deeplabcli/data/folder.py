"""Custom data sets: a folder of images, a folder of class-index masks and a classes file.

::

    ROOT/
        classes.txt     one class per line, in index order: "name", "name R G B" or
                        "name #RRGGBB" (colours are optional; used for masks and overlays)
        images/<stem>.jpg|.png|.bmp|.tif|.webp|...   (sub-folders allowed; the suffixes
                              `deeplab predict` scans for)
        masks/<stem>.png      class indices 0..N-1 (mode P or L), 255 = ignore; same
                              relative path as the image
        splits/<name>.txt     optional: stems (relative paths, suffix optional), one per line

The split ``all`` (the default) is every image under ``images/`` (unless ``splits/all.txt``
exists); any other name reads ``splits/<name>.txt``, and the path of a list file works too.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import IGNORE_INDEX
from ..errors import DatasetError
from ..files import IMAGE_SUFFIXES
from .dataset import PairedTransform, SegmentationDataset, read_list_file
from .masks import SHOW_AT_MOST, summarise
from .palette import palette_for

MASK_SUFFIXES = (".png", ".bmp", ".tif", ".tiff", ".gif")
LAYOUT_HINT = "A custom data set is ROOT/images, ROOT/masks and ROOT/classes.txt"
_HEX = re.compile(r"^#([0-9a-fA-F]{6})$")


@dataclass(frozen=True)
class ClassSpec:
    """One line of a classes file."""

    name: str
    colour: tuple[int, int, int] | None = None  # RGB 0..255, None = from the default palette


def read_classes_file(path: str | os.PathLike[str]) -> list[ClassSpec]:
    """Parse a classes file: one class per line in index order, ``name``, ``name R G B`` or
    ``name #RRGGBB``; names may contain spaces; blank lines and lines starting with ``#`` are
    skipped."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DatasetError(
            f"classes file {path} does not exist. Write one class name per line, in index order "
            "(optionally followed by its colour, e.g. 'cat 64 0 0')."
        ) from None
    except (OSError, UnicodeDecodeError) as error:
        raise DatasetError(
            f"cannot read classes file {path}: {type(error).__name__}. Save it as UTF-8 text."
        ) from None
    specs: list[ClassSpec] = []
    for number, line in enumerate(lines, 1):
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        specs.append(_parse_class_line(words, f"{path} line {number}"))
    if not specs:
        raise DatasetError(f"classes file {path} lists no classes. Write one class name per line.")
    if len(specs) > IGNORE_INDEX:
        raise DatasetError(
            f"classes file {path} lists {len(specs)} classes; at most {IGNORE_INDEX} fit in a "
            f"mask ({IGNORE_INDEX} means ignore). Merge or drop classes."
        )
    names = [s.name for s in specs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise DatasetError(
            f"classes file {path} names {', '.join(duplicates)} more than once. "
            "Give every class a distinct name."
        )
    return specs


def _parse_class_line(words: list[str], where: str) -> ClassSpec:
    match = _HEX.match(words[-1])
    if match and len(words) > 1:
        value = int(match.group(1), 16)
        return ClassSpec(" ".join(words[:-1]), (value >> 16, (value >> 8) & 255, value & 255))
    if len(words) >= 4 and all(re.fullmatch(r"-?\d+", w) for w in words[-3:]):
        rgb = tuple(int(w) for w in words[-3:])
        if any(not 0 <= v <= 255 for v in rgb):
            raise DatasetError(
                f"{where}: colour values must be 0..255, got {' '.join(words[-3:])}. "
                "Write colours as 'name R G B' or 'name #RRGGBB'."
            )
        return ClassSpec(" ".join(words[:-3]), rgb)  # type: ignore[arg-type]
    if words[-1].startswith("#"):
        raise DatasetError(
            f"{where}: {words[-1]!r} is not a colour. "
            "Write colours as 'name R G B' or 'name #RRGGBB'."
        )
    return ClassSpec(" ".join(words))


def class_palette(specs: list[ClassSpec]) -> np.ndarray:
    """uint8 ``(256, 3)``: the classes' own colours where given, else the default palette."""
    palette = palette_for(len(specs)).copy()
    for index, spec in enumerate(specs):
        if spec.colour is not None:
            palette[index] = spec.colour
    return palette


def find_folder_root(root: str | os.PathLike[str]) -> Path:
    root = Path(root).expanduser()
    if not root.is_dir():
        what = "is a file, not a folder" if root.exists() else "does not exist"
        raise DatasetError(
            f"data root {root} {what}. Give --data-root (or DEEPLAB_DATA_ROOT) as the "
            "folder that holds images/, masks/ and classes.txt."
        )
    for sub in ("images", "masks"):
        if not (root / sub).is_dir():
            raise DatasetError(f"{root} has no {sub}/ folder. {LAYOUT_HINT}.")
    return root


class FolderDataset(SegmentationDataset):
    """A custom data set in the layout of the module docstring."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        split: str = "all",
        *,
        transform: PairedTransform | None = None,
        check_files: bool = True,
    ) -> None:
        root = find_folder_root(root)
        self.root = root
        self.classes = read_classes_file(root / "classes.txt")
        images = _index_images(root / "images")
        list_file = _find_split_file(root, split)
        if list_file is None:
            if not images:
                raise DatasetError(
                    f"no images found in {root / 'images'}. Add images "
                    "(JPEG, PNG, BMP, TIFF, WebP, ...)."
                )
            stems = sorted(images)
        else:
            stems = [_strip_image_suffix(e) for e in read_list_file(list_file)]
            if not stems:
                raise DatasetError(
                    f"split '{split}' ({list_file}) lists no images. "
                    "Add image stems to it, one per line."
                )
        self.list_file = list_file
        image_paths = [images.get(s, root / "images" / f"{s}.jpg") for s in stems]
        mask_paths = [_find_mask(root / "masks", s) for s in stems]
        if list_file is None and check_files:
            unmasked = [str(p) for p in dict.fromkeys(mask_paths) if not p.is_file()]
            if unmasked:
                raise DatasetError(
                    f"{len(unmasked)} masks are missing: {summarise(unmasked, SHOW_AT_MOST)}. "
                    "Add a mask with each image's name, or list the images to use in "
                    "splits/<name>.txt."
                )
        super().__init__(
            name="folder",
            split=split,
            ids=stems,
            image_paths=image_paths,
            mask_paths=mask_paths,
            class_names=[c.name for c in self.classes],
            palette=class_palette(self.classes),
            transform=transform,
            classes_file=root / "classes.txt",
            check_files=check_files,
        )


def _index_images(folder: Path) -> dict[str, Path]:
    """stem (relative path without suffix, "/"-separated) → image file."""
    found: dict[str, Path] = {}
    for path in sorted(folder.rglob("*")):
        if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
            found.setdefault(path.relative_to(folder).with_suffix("").as_posix(), path)
    return found


def _strip_image_suffix(entry: str) -> str:
    path = Path(entry)
    return path.with_suffix("").as_posix() if path.suffix.lower() in IMAGE_SUFFIXES else entry


def _find_mask(folder: Path, stem: str) -> Path:
    for suffix in MASK_SUFFIXES:
        candidate = folder / f"{stem}{suffix}"
        if candidate.is_file():
            return candidate
    return folder / f"{stem}.png"


def _find_split_file(root: Path, split: str) -> Path | None:
    """None for the implicit ``all`` split."""
    path = root / "splits" / f"{split}.txt"
    if path.is_file():
        return path
    if split == "all":
        return None
    given = Path(split).expanduser()
    if given.is_file():
        return given
    if os.sep in split or "/" in split or given.suffix == ".txt":
        raise DatasetError(f"split list {split} does not exist. Give an existing list file.")
    names = ["all", *sorted(p.stem for p in (root / "splits").glob("*.txt") if p.stem != "all")]
    raise DatasetError(
        f"split '{split}' not found: {path} does not exist. Use one of: {', '.join(names)}, "
        "or give the path of a list file."
    )
