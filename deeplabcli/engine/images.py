"""Reading images robustly and writing PNGs atomically.

:func:`read_image` turns any file Pillow can decode (JPEG, PNG, BMP, TIFF, WebP, GIF, ...; in
grayscale, RGBA, CMYK, palette or 16-bit form) into an 8-bit RGB image with its EXIF orientation
applied, or raises :class:`~deeplabcli.errors.ImageReadError` with a one-line reason.
:func:`write_png` writes to a temporary name and renames, so no half-written file is ever left.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from pathlib import Path
from struct import error as struct_error

import numpy as np
from PIL import Image, ImageFont, ImageOps, UnidentifiedImageError

from ..errors import ImageReadError, OutputWriteError
from ..files import temporary_sibling

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


def label_font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's default font at ``size`` pixels, or its bitmap font where Pillow has no FreeType
    (or predates sized default fonts, Pillow < 10.1)."""
    try:
        return ImageFont.load_default(size=size)
    except (ImportError, OSError, TypeError):
        return ImageFont.load_default()


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
