"""Reading images and class-index masks, with the checks that turn bad files into clear errors.

A label mask is a single-channel image whose pixel values are class indices: a palette ("P")
or grayscale ("L") PNG with values in ``[0, num_classes)`` plus 255 (:data:`IGNORE_INDEX`) for
pixels that are never scored. Colour (RGB) masks — what many annotation tools export — are
refused with a message that points at :func:`convert_colour_masks`
(``deeplab data convert-masks``), which maps palette colours back to class indices.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from ..config import IGNORE_INDEX
from ..errors import DatasetError, DeeplabError, ImageReadError, LabelValueError, MaskFormatError
from ..files import atomic_file
from .palette import VOID_COLOUR

#: Image modes whose pixel values are read directly as class indices.
INDEX_MODES = ("P", "L", "1", "I;16", "I")
#: Files that `convert-masks` reads from a folder of masks.
MASK_FILE_SUFFIXES = (".png", ".bmp", ".gif")
#: How many offending values or files an error message names before summarising the rest.
SHOW_AT_MOST = 5


def read_image_array(path: str | os.PathLike[str]) -> np.ndarray:
    """An image file as RGB uint8 ``(H, W, 3)``, values 0..255 (stored pixel order, no EXIF turn:
    label masks are drawn on the stored pixels).

    Raises :class:`ImageReadError` naming the file for anything that is not a readable image.
    """
    try:
        with Image.open(path) as image:
            return np.array(image.convert("RGB"))
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        raise ImageReadError(
            f"cannot read image {path}: {_reason(error)}. "
            "Check that the file is a complete, valid image."
        ) from None


def read_mask(
    path: str | os.PathLike[str],
    num_classes: int | None = None,
    *,
    classes_file: str | os.PathLike[str] | None = None,
) -> np.ndarray:
    """A class-index mask as uint8 ``(H, W)``; values in ``[0, num_classes) ∪ {255}``.

    Values are checked when ``num_classes`` is given. Raises :class:`MaskFormatError` for a
    colour or otherwise non-index image (for a colour mask, with the ``convert-masks`` command
    that fixes it, reading the colours of ``classes_file`` when the data set has one),
    :class:`LabelValueError` for values out of range and :class:`ImageReadError` for a file
    that is not a readable image.
    """
    try:
        with Image.open(path) as image:
            mode = image.mode
            if mode in INDEX_MODES:
                values = np.array(image)
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        raise ImageReadError(
            f"cannot read mask {path}: {_reason(error)}. "
            "Check that the file is a complete, valid PNG."
        ) from None
    if mode in ("RGB", "RGBA"):
        folder = Path(path).parent
        raise MaskFormatError(
            f"{path} is an RGB colour mask, not a class-index mask. Convert the colour masks "
            f"with `{convert_masks_command(folder, classes_file)}` (class colours → class "
            f"indices) and use the converted masks in place of {folder}, or save masks as "
            "palette (P) or grayscale (L) PNGs of class indices."
        )
    if mode not in INDEX_MODES:
        raise MaskFormatError(
            f"{path} has image mode {mode!r}, not a class-index mask. Save masks as palette (P) "
            f"or grayscale (L) PNGs whose values are class indices ({IGNORE_INDEX} = ignore)."
        )
    if values.dtype != np.uint8:
        wide = values.astype(np.int64)
        if wide.size and (wide.min() < 0 or wide.max() > 255):
            outside = np.unique(wide[(wide < 0) | (wide > 255)])
            raise _label_error(path, outside, num_classes or 256)
        values = wide.astype(np.uint8)
    if num_classes is not None:
        check_label_values(values, num_classes, path)
    return values


def convert_masks_command(folder: Path, classes_file: str | os.PathLike[str] | None = None) -> str:
    """The shell command that converts the colour masks in ``folder`` into ``<folder>_index``
    (the VOC palette's colours, or those of ``classes_file``): quoted, so it runs as given."""
    words = ["deeplab", "data", "convert-masks", str(folder)]
    words += ["-o", str(folder.with_name(f"{folder.name}_index"))]
    if classes_file is not None:
        words += ["--classes", str(classes_file)]
    return shlex.join(words)


def check_label_values(mask: np.ndarray, num_classes: int, path: str | os.PathLike[str]) -> None:
    """Raise :class:`LabelValueError` if ``mask`` holds values outside
    ``[0, num_classes) ∪ {255}``; the message names ``path`` and the offending values."""
    if num_classes >= IGNORE_INDEX:
        return
    counts = np.bincount(mask.ravel(), minlength=256)
    counts[:num_classes] = 0
    counts[IGNORE_INDEX] = 0
    if counts.any():
        raise _label_error(path, np.flatnonzero(counts), num_classes)


def _label_error(
    path: str | os.PathLike[str], values: np.ndarray, num_classes: int
) -> DatasetError:
    return LabelValueError(
        f"{path} has label values outside 0..{num_classes - 1} and {IGNORE_INDEX}: "
        f"{summarise([str(int(v)) for v in values], 10)}. Fix the mask, or check that the "
        f"data set has {num_classes} classes."
    )


def classes_in_mask(mask: np.ndarray, num_classes: int) -> tuple[int, ...]:
    """Class indices (ascending) that occur in ``mask`` (uint8 ``(H, W)``), ignoring 255."""
    counts = np.bincount(mask.ravel(), minlength=256)[:num_classes]
    return tuple(int(c) for c in np.flatnonzero(counts))


def colour_to_index(
    rgb: np.ndarray, colours: np.ndarray, *, path: str | os.PathLike[str] = "mask"
) -> np.ndarray:
    """Map a colour mask back to class indices.

    ``rgb``: uint8 ``(H, W, 3)``; ``colours``: uint8 ``(K, 3)``, row ``c`` = colour of class
    ``c`` (``K <= 255``). Pixels in the void colour (224, 224, 192) become 255. Returns uint8
    ``(H, W)``. A colour that belongs to no class raises :class:`MaskFormatError` listing it.
    """
    colours = np.asarray(colours, dtype=np.uint8).reshape(-1, 3)
    keys = np.concatenate([_pack(colours), _pack(np.asarray([VOID_COLOUR], dtype=np.uint8))])
    values = np.concatenate([np.arange(len(colours)), [IGNORE_INDEX]])
    # the lowest index wins a duplicate colour: a stable sort keeps it first
    order = np.argsort(keys, kind="stable")
    keys, values = keys[order], values[order]
    packed = _pack(np.asarray(rgb, dtype=np.uint8)[..., :3])
    position = np.clip(np.searchsorted(keys, packed), 0, len(keys) - 1)
    known = keys[position] == packed
    if not known.all():
        unknown = np.unique(packed[~known])
        names = [f"({v >> 16}, {(v >> 8) & 255}, {v & 255})" for v in unknown.tolist()]
        raise MaskFormatError(
            f"{path} has colours that belong to no class: {summarise(names, SHOW_AT_MOST)}. "
            "Give every class its colour in the classes file (e.g. 'cat 64 0 0')."
        )
    return values[position].astype(np.uint8)


def _pack(rgb: np.ndarray) -> np.ndarray:
    rgb = rgb.astype(np.int32)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def convert_colour_masks(
    source: str | os.PathLike[str],
    destination: str | os.PathLike[str],
    colours: np.ndarray,
    palette: np.ndarray,
    *,
    overwrite: bool = False,
) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Convert every colour mask (PNG, BMP, GIF) under ``source`` (a folder, or one mask file)
    into a palette PNG of class indices under ``destination`` (same relative paths; a single
    file goes straight into it). Masks that already hold indices (mode P/L) are re-saved with
    unchanged values. ``colours``: uint8 ``(K, 3)`` class colours; ``palette``: uint8
    ``(256, 3)`` written into the outputs. A bad file does not stop the others: returns the
    written files and ``(file, one-line reason)`` for each failure."""
    source, destination = Path(source), Path(destination)
    if source.is_file():
        files, base = [source], source.parent
    elif source.is_dir():
        files = sorted(p for p in source.rglob("*") if p.suffix.lower() in MASK_FILE_SUFFIXES)
        base = source
    else:
        raise DatasetError(
            f"{source} does not exist. Give a folder of mask images or one mask file."
        )
    if not files:
        raise DatasetError(f"no PNG masks found in {source}. Give the folder that holds the masks.")
    if base.resolve() == destination.resolve() and not overwrite:
        raise DatasetError(
            f"converting {source} in place would replace its masks. Give another output "
            "folder, or pass --overwrite to convert in place."
        )
    targets = [destination / f.relative_to(base).with_suffix(".png") for f in files]
    existing = [t for t in targets if t.exists()]
    if existing and not overwrite:
        raise DatasetError(
            f"{len(existing)} output masks already exist: "
            f"{summarise([str(p) for p in existing], SHOW_AT_MOST)}. "
            "Pass --overwrite to replace them."
        )
    written: list[Path] = []
    failed: list[tuple[Path, str]] = []
    for src, dst in zip(files, targets, strict=True):
        try:
            indices = _as_indices(src, colours)
        except DeeplabError as error:
            failed.append((src, str(error)))
            continue
        try:
            write_index_png(dst, indices, palette)
        except OSError as error:
            failed.append(
                (
                    src,
                    f"cannot write {dst} ({error.strerror or error}). Choose a writable --output folder.",
                )
            )
            continue
        written.append(dst)
    return written, failed


def _as_indices(path: Path, colours: np.ndarray) -> np.ndarray:
    try:
        with Image.open(path) as image:
            rgb = None if image.mode in INDEX_MODES else np.array(image.convert("RGB"))
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        raise ImageReadError(
            f"cannot read mask {path}: {_reason(error)}. Check that the file is a complete, valid PNG."
        ) from None
    if rgb is None:
        return read_mask(path)
    return colour_to_index(rgb, colours, path=path)


def write_index_png(path: str | os.PathLike[str], mask: np.ndarray, palette: np.ndarray) -> None:
    """Save uint8 ``(H, W)`` class indices as a palette PNG, atomically (temporary name, then
    rename), creating parent folders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mask = np.ascontiguousarray(mask, dtype=np.uint8)
    image = Image.frombytes("P", (mask.shape[1], mask.shape[0]), mask.tobytes())
    image.putpalette(np.asarray(palette, dtype=np.uint8).reshape(-1).tolist())
    with atomic_file(path) as tmp:
        image.save(tmp, format="PNG")


def summarise(items: Sequence[str], limit: int) -> str:
    """``a, b, c`` or ``a, b, c (and 7 more)``."""
    shown = ", ".join(items[:limit])
    return shown if len(items) <= limit else f"{shown} (and {len(items) - limit} more)"


def _reason(error: BaseException) -> str:
    text = str(error).strip().rstrip(".") or type(error).__name__
    return text.splitlines()[0]
