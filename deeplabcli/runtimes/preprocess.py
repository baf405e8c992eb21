"""A model's preprocessing in numpy and Pillow: RGB pixels → the network input, without torch.

The same steps as :class:`~deeplabcli.inference.Segmenter` (to float rounding, ~1e-4 on
normalised inputs), for the runtimes that do not run on torch (ONNX Runtime, OpenVINO),
for int8 calibration, and for a user of an exported file (its ``deeplabcli.preprocessing``
metadata documents the same steps):

1. :func:`placement`: where the image sits in the network input. ``resize="none"``: at its own
   size (times ``scale``); ``resize="fit"``: the long side scaled to ``size`` (times
   ``scale``), the aspect ratio kept, on a square canvas of that side.
2. :func:`resize_rgb`: bilinear resizing of the pixels as float32 (Pillow's ``"F"`` mode per
   channel). Pillow widens the filter when it shrinks an image, so downscaling is antialiased
   exactly as ``F.interpolate(..., mode="bilinear", antialias=True)`` does.
3. :func:`normalise`: ``(pixel / 255 - mean) / std`` per channel, as ``pixel · a - b``.
4. padding with zeros (the mean colour after normalisation) at the bottom and right, up to the
   canvas.

>>> x, (h, w) = preprocess(rgb, model_config.preprocessing)  # doctest: +SKIP
>>> logits = session.run(None, {"pixels": x})[0][:, :, :h, :w]  # doctest: +SKIP
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from ..config import Preprocessing


def placement(
    size: tuple[int, int], prep: Preprocessing, scale: float = 1.0
) -> tuple[tuple[int, int], tuple[int, int]]:
    """``(content, canvas)`` for an (H, W) image: the (h, w) it is resized to and the (H', W')
    of the network input it is padded to (equal for ``resize="none"``). Rounds as the
    Segmenter does (Python's ``round``)."""
    height, width = size
    if prep.resize == "fit":
        side = max(1, round(prep.size * scale))  # type: ignore[operator]
        ratio = side / max(height, width)
        content = (max(1, round(height * ratio)), max(1, round(width * ratio)))
        return content, (side, side)
    content = (max(1, round(height * scale)), max(1, round(width * scale)))
    return content, content


def resize_rgb(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 (H, W, 3) RGB → float32 (3, h, w) pixel values in 0..255 resized bilinearly to
    ``size`` = (h, w), antialiased when shrinking (no rounding back to 8 bits). An image already
    at ``size`` is only converted."""
    height, width = size
    if rgb.shape[:2] == (height, width):
        return np.ascontiguousarray(rgb.transpose(2, 0, 1), dtype=np.float32)
    out = np.empty((3, height, width), dtype=np.float32)
    for channel in range(3):
        plane = Image.fromarray(np.ascontiguousarray(rgb[:, :, channel], dtype=np.float32), "F")
        out[channel] = np.asarray(plane.resize((width, height), Image.Resampling.BILINEAR))
    return out


def normalise(pixels: np.ndarray, prep: Preprocessing) -> np.ndarray:
    """float32 (3, h, w) values 0..255 → ``(pixel / 255 - mean) / std`` per channel, in place
    when possible (computed as ``pixel · a - b`` in float32, as the Segmenter does)."""
    std = np.asarray(prep.std, dtype=np.float32).reshape(3, 1, 1)
    mean = np.asarray(prep.mean, dtype=np.float32).reshape(3, 1, 1)
    scale = (np.float32(1.0) / (np.float32(255.0) * std)).astype(np.float32)
    shift = (mean / std).astype(np.float32)
    pixels = pixels.astype(np.float32, copy=False)
    pixels *= scale
    pixels -= shift
    return pixels


def preprocess(
    rgb: np.ndarray, prep: Preprocessing, *, scale: float = 1.0
) -> tuple[np.ndarray, tuple[int, int]]:
    """One RGB image → its network input and where the image is in it.

    ``rgb``: uint8 (H, W, 3). Returns ``(x, content)``: ``x`` float32 (1, 3, H', W'),
    C-contiguous, normalised (see the module docstring), and ``content`` = (h, w), the region
    ``x[..., :h, :w]`` the image fills (the rest is zero padding, for ``resize="fit"``).
    The network's logits (1, C, H', W') cropped to ``[..., :h, :w]`` and resized to (H, W)
    give the class scores of the image. ``scale`` multiplies the input size (multi-scale
    inference); 1 is the model's own preprocessing.
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected uint8 RGB pixels (H, W, 3), got {rgb.dtype} {tuple(rgb.shape)}")
    content, canvas = placement((int(rgb.shape[0]), int(rgb.shape[1])), prep, scale)
    pixels = normalise(resize_rgb(rgb, content), prep)
    if canvas == content:
        return pixels[None], content
    x = np.zeros((1, 3, *canvas), dtype=np.float32)
    x[0, :, : content[0], : content[1]] = pixels
    return x, content


__all__ = ["normalise", "placement", "preprocess", "resize_rgb"]
