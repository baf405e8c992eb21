"""Outputs of ``deeplab predict``: palette, index, overlay and confidence PNGs and probability
``.npz`` files, written atomically.

:func:`write_file` (under :func:`write_png`, :func:`write_npz` and the video writer) writes to a
temporary name and renames, so no half-written file is ever left.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from ..data.images import label_font
from ..errors import ConfigError, DiskFullError, OutputWriteError
from ..files import is_disk_full, temporary_sibling


def write_png(image: Image.Image, path: str | os.PathLike[str], *, overwrite: bool) -> bool:
    """Save ``image`` as PNG at ``path`` atomically (see :func:`write_file`)."""
    return write_file(path, lambda tmp: image.save(tmp, format="PNG"), overwrite=overwrite)


def write_npz(
    probs: np.ndarray, class_names: Sequence[str], path: str | os.PathLike[str], *, overwrite: bool
) -> bool:
    """Save class probabilities (C, H, W) at ``path`` atomically (see :func:`write_file`) as a
    compressed ``.npz``: ``probs`` float16 (C, H, W) and ``classes`` (C,) strings;
    ``np.load(path)["probs"]`` reads them back (no pickle needed)."""

    def save(tmp: Path) -> None:
        with open(tmp, "wb") as handle:  # a file object: np.savez would append ".npz" to a name
            np.savez_compressed(
                handle, probs=probs.astype(np.float16), classes=np.asarray(class_names, dtype=str)
            )

    return write_file(path, save, overwrite=overwrite)


def write_file(
    path: str | os.PathLike[str], save: Callable[[Path], None], *, overwrite: bool
) -> bool:
    """``save`` a file to a temporary name in the folder of ``path``, then rename it to ``path``.

    Returns False (and writes nothing) when ``path`` exists and ``overwrite`` is False; the
    no-overwrite rename is atomic (a hard link), so concurrent writers never replace each other.
    Raises :class:`OutputWriteError` when the location cannot be written.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        return False
    tmp = temporary_sibling(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        save(tmp)
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                return False
            except OSError:  # file systems without hard links
                if path.exists():
                    return False
                os.replace(tmp, path)
        return True
    except OSError as error:
        if is_disk_full(error):
            raise DiskFullError(path) from None
        # mkdir reports a file standing where a folder is needed as "File exists"
        reason = "Not a directory" if isinstance(error, FileExistsError) else error.strerror
        raise OutputWriteError(
            f"cannot write {path} ({reason}). Choose a writable output location with -o."
        ) from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


# ---------------------------------------------------------------------- one prediction
#: formats written from class probabilities (C, H, W) rather than a class map
PROBABILITY_FORMATS = ("probs", "confidence")


def check_format(fmt: str, num_classes: int) -> None:
    """Raise :class:`ConfigError` when ``fmt`` masks cannot hold ``num_classes`` classes
    (palette and overlay images index at most 256 colours)."""
    if fmt in ("palette", "overlay") and num_classes > 256:
        raise ConfigError(
            f"{fmt} masks hold at most 256 classes, the model has {num_classes}. "
            "Use --format index."
        )


def output_suffix(fmt: str) -> str:
    """The file suffix of ``fmt`` outputs: ``.npz`` for probs, else ``.png``."""
    return ".npz" if fmt == "probs" else ".png"


def write_output(
    fmt: str,
    result: np.ndarray,
    photo: np.ndarray,
    palette: np.ndarray,
    class_names: Sequence[str],
    path: str | os.PathLike[str],
    *,
    overwrite: bool,
) -> tuple[bool, np.ndarray]:
    """Write one prediction at ``path`` as ``fmt`` (one of MASK_FORMATS): ``result`` is the
    class map (H, W) for palette/index/overlay, the probabilities float32 (C, H, W) for
    probs/confidence; ``photo`` uint8 (H, W, 3) is the image (for overlays). Returns whether it
    was written (False: ``path`` exists and not ``overwrite``) and the class map (H, W), the
    first most probable class where ``result`` holds probabilities."""
    if fmt in PROBABILITY_FORMATS:
        mask = result.argmax(axis=0).astype(np.uint8 if result.shape[0] <= 256 else np.int64)
        if fmt == "probs":
            return write_npz(result, class_names, path, overwrite=overwrite), mask
        image = confidence_png(result)
    elif fmt == "palette":
        mask, image = result, palette_png(result, palette)
    elif fmt == "index":
        mask, image = result, index_png(result)
    else:
        mask, image = result, overlay_png(photo, result, palette, tuple(class_names))
    return write_png(image, path, overwrite=overwrite), mask


# ---------------------------------------------------------------------- mask rendering
def palette_png(mask: np.ndarray, palette: np.ndarray) -> Image.Image:
    """Class indices uint8 (H, W) → mode "P" image carrying ``palette`` (uint8 (256, 3)): a
    colour picture that is at the same time a class-index label map."""
    image = Image.fromarray(np.ascontiguousarray(mask, dtype=np.uint8))
    image.putpalette(palette.astype(np.uint8).tobytes())
    return image


def index_png(mask: np.ndarray) -> Image.Image:
    """Class indices (H, W) → single-channel image: mode "L" (8-bit) up to 256 classes, else
    16-bit ("I;16")."""
    if mask.size and int(mask.max()) > 255:
        return Image.fromarray(np.ascontiguousarray(mask, dtype=np.uint16))
    return Image.fromarray(np.ascontiguousarray(mask, dtype=np.uint8))


def overlay_png(
    photo: np.ndarray,
    mask: np.ndarray,
    palette: np.ndarray,
    class_names: tuple[str, ...],
    *,
    alpha: float = 0.5,
) -> Image.Image:
    """The photo uint8 (H, W, 3) blended with the class colours (:func:`blend_classes`),
    above a legend strip of the classes present with their pixel shares.

    Returns an RGB image (H + legend height, W).
    """
    from PIL import ImageDraw

    blended = blend_classes(photo, mask, palette, class_names, alpha=alpha)
    height, width = mask.shape
    counts = np.bincount(np.asarray(mask, dtype=np.int64).ravel(), minlength=len(class_names))
    present = [int(c) for c in np.flatnonzero(counts)]
    size = int(np.clip(width / 40, 10, 28))
    font = label_font(size)
    pad, swatch = size // 2, size
    labels = [
        f"{class_names[c] if c < len(class_names) else c} {100 * counts[c] / mask.size:.1f}%"
        for c in present
    ]
    widths = [swatch + pad + int(font.getlength(label)) + 2 * pad for label in labels]
    positions, x, y = [], pad, pad
    for item in widths:
        if x > pad and x + item > width:
            x, y = pad, y + size + pad
        positions.append((x, y))
        x += item
    legend_height = y + size + pad
    canvas = Image.new("RGB", (width, height + legend_height), (255, 255, 255))
    canvas.paste(Image.fromarray(blended), (0, 0))
    draw = ImageDraw.Draw(canvas)
    for c, label, (x, y) in zip(present, labels, positions, strict=True):
        top = height + y
        draw.rectangle(
            [x, top, x + swatch, top + swatch],
            fill=tuple(int(v) for v in palette[c & 0xFF]),
            outline=(0, 0, 0),
        )
        draw.text((x + swatch + pad, top), label, fill=(0, 0, 0), font=font)
    return canvas


def blend_classes(
    photo: np.ndarray,
    mask: np.ndarray,
    palette: np.ndarray,
    class_names: Sequence[str],
    *,
    alpha: float = 0.5,
) -> np.ndarray:
    """The photo uint8 (H, W, 3) blended ``alpha`` with the colours of the classes in ``mask``
    (H, W); background pixels (class 0 when it is named "background") stay as they are.
    Returns uint8 (H, W, 3): the frames of an overlay video."""
    colours = palette[np.asarray(mask, dtype=np.int64) & 0xFF].astype(np.float32)
    blended = photo.astype(np.float32) * (1 - alpha) + colours * alpha
    if class_names and class_names[0] == "background":
        keep = mask == 0
        blended[keep] = photo[keep]
    return np.rint(blended).astype(np.uint8)


def confidence_png(probs: np.ndarray) -> Image.Image:
    """Class probabilities (C, H, W) → mode "L" image of the top-class probability, 0..1 as
    0..255 (rounded): dark where the model hesitates."""
    top = np.asarray(probs, dtype=np.float32).max(axis=0)
    return Image.fromarray(np.rint(np.clip(top, 0, 1) * 255).astype(np.uint8))
