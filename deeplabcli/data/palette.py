"""Colour palettes for class-index masks.

The PASCAL VOC palette gives class ``c`` the colour whose R, G, B bits are taken from the bits
of ``c`` (bit 0 → R, bit 1 → G, bit 2 → B), filled from the most significant bit down. Index
255 (void) is the VOC "border" colour (224, 224, 192). Masks are saved as mode "P" PNGs, so a
colour mask is at the same time a valid class-index label map.
"""

from __future__ import annotations

import colorsys

import numpy as np

from ..config import IGNORE_INDEX

VOID_COLOUR = (224, 224, 192)


def voc_colour(index: int) -> tuple[int, int, int]:
    """The VOC colour of class ``index`` (0..255).

    >>> voc_colour(0), voc_colour(1), voc_colour(15)
    ((0, 0, 0), (128, 0, 0), (192, 128, 128))
    """
    r = g = b = 0
    c = index
    for shift in range(7, -1, -1):
        r |= ((c >> 0) & 1) << shift
        g |= ((c >> 1) & 1) << shift
        b |= ((c >> 2) & 1) << shift
        c >>= 3
    return r, g, b


def voc_palette() -> np.ndarray:
    """The 256-entry VOC palette as uint8 (256, 3), exactly what VOC's own PNGs carry."""
    return np.array([voc_colour(i) for i in range(256)], dtype=np.uint8)


def generated_palette(num_classes: int) -> np.ndarray:
    """A palette for data sets other than VOC: uint8 (256, 3).

    Up to 21 classes it is the VOC palette (familiar colours); beyond that, classes get evenly
    spaced hues with alternating brightness so neighbours stay distinguishable. Index 255 keeps
    the void colour and 0 stays black.
    """
    palette = voc_palette()
    if num_classes <= 21:
        return palette
    for c in range(1, min(num_classes, IGNORE_INDEX)):
        hue = (c * 0.618033988749895) % 1.0
        value = 0.95 if c % 2 else 0.7
        rgb = colorsys.hsv_to_rgb(hue, 0.75, value)
        palette[c] = [round(255 * v) for v in rgb]
    palette[IGNORE_INDEX] = VOID_COLOUR
    return palette


def palette_for(num_classes: int) -> np.ndarray:
    """The palette used to save masks of a model or data set with ``num_classes`` classes."""
    return voc_palette() if num_classes == 21 else generated_palette(num_classes)


def colourise(mask: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """Class indices (H, W) of any integer dtype → RGB uint8 (H, W, 3) through ``palette``."""
    return palette[np.asarray(mask, dtype=np.int64) & 0xFF]


def class_outlines(mask: np.ndarray) -> np.ndarray:
    """bool (H, W): the pixels where ``mask`` (H, W) changes class towards the pixel below or to
    the right, i.e. a one-pixel line along every border between two classes. Borders with the
    void label (255) are left out: void already shows as its own light colour."""
    m = np.asarray(mask)
    void = m == IGNORE_INDEX
    edge = np.zeros(m.shape, dtype=bool)
    edge[1:, :] |= (m[1:, :] != m[:-1, :]) & ~void[1:, :] & ~void[:-1, :]
    edge[:, 1:] |= (m[:, 1:] != m[:, :-1]) & ~void[:, 1:] & ~void[:, :-1]
    return edge


def draw_outlines(rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``rgb`` uint8 (H, W, 3) with the class borders of ``mask`` (H, W) drawn as a white line
    in a black edge (:func:`class_outlines`), visible on dark and light pixels alike, so a dark
    class over a dark object still shows where it ends. Returns a new uint8 (H, W, 3) array."""
    core = class_outlines(mask)
    halo = core.copy()
    halo[1:, :] |= core[:-1, :]
    halo[:-1, :] |= core[1:, :]
    halo[:, 1:] |= core[:, :-1]
    halo[:, :-1] |= core[:, 1:]
    out = np.array(rgb, dtype=np.uint8, copy=True)
    out[halo & ~core] = 0
    out[core] = 255
    return out
