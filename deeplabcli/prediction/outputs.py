"""Mask outputs of ``deeplab predict``: palette, index and overlay PNGs, written atomically.

:func:`write_png` writes to a temporary name and renames, so no half-written file is ever left.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np
from PIL import Image

from ..data.images import label_font
from ..errors import OutputWriteError
from ..files import temporary_sibling


def write_png(image: Image.Image, path: str | os.PathLike[str], *, overwrite: bool) -> bool:
    """Save ``image`` as PNG at ``path`` via a temporary name in the same folder, then rename.

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
        image.save(tmp, format="PNG")
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
        # mkdir reports a file standing where a folder is needed as "File exists"
        reason = "Not a directory" if isinstance(error, FileExistsError) else error.strerror
        raise OutputWriteError(
            f"cannot write {path} ({reason}). Choose a writable output location with -o."
        ) from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


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
    """The photo uint8 (H, W, 3) blended with the class colours (background pixels stay as
    they are), above a legend strip of the classes present with their pixel shares.

    Returns an RGB image (H + legend height, W).
    """
    from PIL import ImageDraw

    colours = palette[np.asarray(mask, dtype=np.int64) & 0xFF].astype(np.float32)
    blended = photo.astype(np.float32) * (1 - alpha) + colours * alpha
    keep = np.zeros(mask.shape, dtype=bool)
    if class_names and class_names[0] == "background":
        keep = mask == 0
    blended[keep] = photo[keep]
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
    canvas.paste(Image.fromarray(np.rint(blended).astype(np.uint8)), (0, 0))
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
