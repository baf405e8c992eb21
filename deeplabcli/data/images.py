"""Reading photos robustly: any Pillow format and mode → 8-bit RGB, EXIF orientation applied.

:func:`read_image` turns any file Pillow can decode (JPEG, PNG, BMP, TIFF, WebP, GIF, ...; in
grayscale, RGBA, CMYK, palette or 16-bit form) into an 8-bit RGB image with its EXIF orientation
applied, or raises :class:`~deeplabcli.errors.ImageReadError` with a one-line reason.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from struct import error as struct_error

import numpy as np
from PIL import Image, ImageFont, ImageOps, UnidentifiedImageError

from ..errors import ImageReadError

# Images above Image.MAX_IMAGE_PIXELS are refused by read_image itself, so Pillow's warning for
# those between 1× and 2× the limit would only repeat the error.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


def _fail(path: Path | str, reason: str) -> ImageReadError:
    return ImageReadError(f"{path}: {reason}.")


def read_image(path: str | os.PathLike[str]) -> Image.Image:
    """Decode ``path`` into a loaded 8-bit RGB image, EXIF orientation applied.

    Raises :class:`ImageReadError` ("<path>: <reason>. <fix>.") for a missing, unreadable,
    empty, truncated or non-image file, and for images above Pillow's decompression-bomb limit
    (``PIL.Image.MAX_IMAGE_PIXELS``).
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise _fail(path, "no such file. Check the path") from None
    except OSError as error:
        raise _fail(path, f"cannot read it ({error.strerror}). Check the path") from None
    if path.is_dir():
        raise _fail(path, "is a directory, not an image. Give image files or a folder of images")
    if size == 0:
        raise _fail(path, "file is empty (0 bytes). Re-copy or re-download the image")
    try:
        with Image.open(path) as image:
            _check_pixels(path, image.size)
            image.load()
            return to_rgb(_exif_upright(image))
    except ImageReadError:
        raise
    except PermissionError:
        raise _fail(path, "cannot read it (permission denied). Check its permissions") from None
    except UnidentifiedImageError:
        raise _fail(
            path, "not an image (unknown format). Give a JPEG, PNG, BMP, TIFF or WebP file"
        ) from None
    except Image.DecompressionBombError:
        raise _fail(path, _too_large_reason(None)) from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, struct_error) as error:
        detail = str(error).rstrip(".") or type(error).__name__
        raise _fail(
            path, f"image is truncated or corrupt: {detail}. Re-copy or re-download the image"
        ) from None


def _too_large_reason(size: tuple[int, int] | None) -> str:
    limit = Image.MAX_IMAGE_PIXELS
    what = f"{size[0]}×{size[1]} = {size[0] * size[1]:,} pixels" if size else "too many pixels"
    return (
        f"image is too large ({what}, above Pillow's decompression-bomb limit of {limit:,}). "
        "Downscale it first"
    )


def _check_pixels(path: Path, size: tuple[int, int]) -> None:
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and size[0] * size[1] > limit:
        raise _fail(path, _too_large_reason(size))


def _exif_upright(image: Image.Image) -> Image.Image:
    """Apply the EXIF orientation tag; an unreadable EXIF block leaves the image as stored."""
    try:
        return ImageOps.exif_transpose(image)
    except (OSError, SyntaxError, ValueError, TypeError, KeyError, struct_error):
        return image


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode → 8-bit "RGB". 16/32-bit and float grayscale are scaled to 0..255
    (16-bit by 1/257); alpha channels are dropped; palette images go through RGBA so a
    transparency entry is handled the same way."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode.startswith("I") or mode == "F":
        values = np.asarray(image, dtype=np.float64)
        peak = values.max() if values.size else 0.0
        if mode.startswith("I;16"):
            top = 65535.0
        elif mode == "F":
            top = 1.0 if peak <= 1.0 else 255.0
        else:  # 32-bit integers: 8-bit values, or 16-bit ones (some PNG decoders)
            top = 255.0 if peak <= 255 else 65535.0
        gray = np.clip(np.rint(values * (255.0 / top)), 0, 255).astype(np.uint8)
        return Image.fromarray(gray).convert("RGB")
    if mode in ("P", "PA"):
        return image.convert("RGBA").convert("RGB")
    return image.convert("RGB")


def label_font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's default font at ``size`` pixels, or its bitmap font where Pillow has no FreeType
    (or predates sized default fonts, Pillow < 10.1)."""
    try:
        return ImageFont.load_default(size=size)
    except (ImportError, OSError, TypeError):
        return ImageFont.load_default()
