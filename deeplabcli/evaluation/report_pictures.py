"""The pictures of an eval report: the confusion matrix, the per-class IoU chart and the worst
images (image | ground truth | prediction, with class outlines and a legend).

Charts use matplotlib's object API (no pyplot, no GUI backend); long titles and model names are
wrapped, never cut. Worst-image pictures are drawn with Pillow.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from ..config import IGNORE_INDEX
from ..data.dataset import SegmentationDataset
from ..data.images import label_font
from ..data.palette import colourise, draw_outlines, palette_for
from .result import EvalResult, WorstImage

#: long side of each panel of a worst-image picture, at most (pixels)
PANEL_SIDE = 512


def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _wrapped(text: str, width: int) -> str:
    """``text`` broken into lines of at most ``width`` characters (long names split, not cut)."""
    return "\n".join(textwrap.wrap(text, width, break_on_hyphens=False)) or text


def _title(result: EvalResult, what: str, width: int) -> str:
    protocol = f"{result.dataset} {result.split}, {result.images} images, OS {result.output_stride}"
    return "\n".join([what, _wrapped(protocol, width), _wrapped(f"model: {result.model}", width)])


def confusion_chart(path: Path, result: EvalResult) -> None:
    """Write :func:`confusion_figure` as a PNG."""
    confusion_figure(result).savefig(path)


def confusion_figure(result: EvalResult) -> Any:
    """Heat map of the confusion matrix in percent of each class's labelled pixels (rows sum to
    100), colour bar 0–100, the percentage written in every cell of 0.5 % or more."""
    m = result.metrics
    count = m.num_classes
    rows = m.confusion.sum(axis=1, keepdims=True).astype(np.float64)
    percent = 100 * np.divide(m.confusion, rows, out=np.zeros(m.confusion.shape), where=rows > 0)
    side = min(24.0, 3.0 + 0.45 * count)
    fig = _figure(side + 1.5, side + 0.6)
    ax = fig.add_subplot()
    image = ax.imshow(percent, cmap="Blues", vmin=0.0, vmax=100.0)
    bar = fig.colorbar(image, ax=ax, shrink=0.8, ticks=[0, 20, 40, 60, 80, 100])
    bar.set_label("% of the class's labelled pixels")
    if count <= 40:
        ticks = np.arange(count)
        ax.set_xticks(ticks, m.class_names, rotation=90)
        ax.set_yticks(ticks, m.class_names)
    if count <= 25:
        for t in range(count):
            for p in range(count):
                if percent[t, p] >= 0.5:
                    colour = "white" if percent[t, p] > 50 else "black"
                    ax.text(p, t, f"{percent[t, p]:.0f}", ha="center", va="center",
                            fontsize=7, color=colour)  # fmt: skip
    ax.set_xlabel("prediction")
    ax.set_ylabel("ground truth")
    ax.set_title(_title(result, "Confusion matrix (% of each row)", int(9 * side)), fontsize=10)
    return fig


def iou_chart(path: Path, result: EvalResult) -> None:
    """Write :func:`iou_figure` as a PNG."""
    iou_figure(result).savefig(path)


def iou_figure(result: EvalResult) -> Any:
    """Horizontal bars of per-class IoU in the class colours, each value written beside its bar
    (never on it), n/a classes labelled, the mIoU as a dashed line with its legend below."""
    m = result.metrics
    count = m.num_classes
    values = np.nan_to_num(m.iou, nan=0.0)
    fig = _figure(8.0, min(30.0, max(4.0, 2.4 + 0.3 * count)))
    ax = fig.add_subplot()
    positions = np.arange(count)
    colours = [tuple(c / 255 for c in class_colour(result.metrics.num_classes, i))
               for i in range(count)]  # fmt: skip
    ax.barh(positions, values, color=colours, edgecolor="black")
    ax.set_yticks(positions, m.class_names)
    ax.invert_yaxis()
    ax.set_xlim(0.0, 1.32)  # room right of a full bar for its label
    ax.set_xticks([0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
    ax.spines[["top", "right"]].set_visible(False)
    for i, value in enumerate(m.iou):
        label = "n/a (absent, not in the mean)" if math.isnan(value) else f"{value:.3f}"
        ax.text(
            values[i] + 0.015,
            i,
            label,
            va="center",
            fontsize=8,
            zorder=3,
            bbox={"facecolor": "white", "edgecolor": "none", "pad": 1},
        )  # over the mIoU line
    if not math.isnan(m.miou):
        ax.axvline(m.miou, color="red", linestyle="--", label=f"mIoU {m.miou:.4f}")
        fig.legend(loc="outside lower center", frameon=False)
    ax.set_xlabel("IoU")
    ax.set_title(_title(result, "Per-class IoU", 70), fontsize=10, loc="left")
    return fig


def class_colour(num_classes: int, index: int) -> tuple[int, int, int]:
    """The colour class ``index`` is drawn in; black (background) shows as light grey."""
    rgb = palette_for(num_classes)[index]
    return (200, 200, 200) if not rgb.any() else tuple(int(v) for v in rgb)  # type: ignore[return-value]


# ---------------------------------------------------------------------- worst images
def write_worst(folder: Path, rank: int, worst: WorstImage, dataset: SegmentationDataset) -> str:
    """Write the picture of the ``rank``-th worst image into ``folder``; returns its name
    relative to the report (``worst/NN_<id>.png``)."""
    sample = dataset.load(worst.score.index)
    caption = (
        f"{worst.score.id}   mIoU {worst.score.miou:.3f}   "
        f"pixel accuracy {worst.score.pixel_accuracy:.3f}"
    )
    picture = worst_picture(
        sample.image, sample.mask, worst.prediction, dataset.palette, dataset.class_names, caption
    )
    safe = worst.score.id.replace("/", "__").replace("\\", "__")
    name = f"{rank:02d}_{safe}.png"
    picture.save(folder / name, format="PNG")
    return f"worst/{name}"


def worst_picture(
    photo: np.ndarray,
    label: np.ndarray,
    prediction: np.ndarray,
    palette: np.ndarray,
    class_names: tuple[str, ...] | list[str],
    caption: str,
) -> Image.Image:
    """image | ground truth | prediction side by side: ``photo`` uint8 (H, W, 3), ``label`` and
    ``prediction`` class maps (H, W) drawn over it with outlines; a caption on top and a legend
    of every class in either map (void included when labelled) below."""
    height, width = label.shape
    ratio = min(1.0, PANEL_SIDE / max(height, width))
    size = (max(1, round(width * ratio)), max(1, round(height * ratio)))
    image = Image.fromarray(photo)
    small = np.asarray(image.resize(size, Image.BILINEAR)) if image.size != size else photo
    maps = [_resized(m, size) for m in (label, prediction)]  # nearest: pure classes
    background = bool(class_names) and class_names[0] == "background"
    panels = [small, *(blend(small, m, palette, background) for m in maps)]
    present = sorted(set(np.unique(maps[0]).tolist()) | set(np.unique(maps[1]).tolist()))
    return _side_by_side(panels, ["image", "ground truth", "prediction"], caption,
                         _legend(present, palette, class_names))  # fmt: skip


def _resized(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if (mask.shape[1], mask.shape[0]) == size:
        return np.asarray(mask)
    return np.asarray(Image.fromarray(np.asarray(mask, dtype=np.uint8)).resize(size, Image.NEAREST))


def blend(photo: np.ndarray, mask: np.ndarray, palette: np.ndarray, background: bool) -> np.ndarray:
    """Class colours over the photo at 60 % with each class outlined (white in a black edge);
    ignored pixels show the void colour and, when class 0 is "background", its pixels keep the
    photo as it is. uint8 (H, W, 3)."""
    colours = colourise(mask, palette).astype(np.float32)
    blended = 0.4 * photo.astype(np.float32) + 0.6 * colours
    void = mask == IGNORE_INDEX
    blended[void] = colours[void]
    if background:
        keep = mask == 0
        blended[keep] = photo[keep]
    return draw_outlines(np.rint(blended).astype(np.uint8), mask)


def _legend(
    present: list[int], palette: np.ndarray, class_names: tuple[str, ...] | list[str]
) -> list[tuple[tuple[int, int, int], str]]:
    names = {IGNORE_INDEX: "void (ignored)"}
    background = bool(class_names) and class_names[0] == "background"
    if background:  # its pixels keep the photo: say so instead of showing black
        names[0] = "background (photo as is)"
    return [
        ((255, 255, 255) if background and c == 0 else tuple(int(v) for v in palette[c & 0xFF]),
         names.get(c, class_names[c] if c < len(class_names) else f"class {c}"))
        for c in present
    ]  # type: ignore[misc]  # fmt: skip


def _side_by_side(
    panels: list[np.ndarray],
    titles: list[str],
    caption: str,
    legend: list[tuple[tuple[int, int, int], str]],
) -> Image.Image:
    """uint8 (h, w, 3) panels of one size in a row, a title above each, a caption on top and
    the legend (colour swatch + class name, wrapped over as many rows as needed) below."""
    h, w = panels[0].shape[:2]
    font = label_font(14)
    gap, top, swatch = 8, 48, 14
    width = 3 * w + 4 * gap
    items = [(colour, name, swatch + 6 + int(font.getlength(name)) + 3 * gap)
             for colour, name in legend]  # fmt: skip
    rows, x = 1, gap
    for *_, item in items:
        if x > gap and x + item > width:
            rows, x = rows + 1, gap
        x += item
    legend_top = top + h + gap
    canvas = Image.new("RGB", (width, legend_top + rows * (swatch + gap) + gap), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    draw.text((gap, 6), caption, fill=(0, 0, 0), font=font)
    for i, (panel, title) in enumerate(zip(panels, titles, strict=True)):
        x = gap + i * (w + gap)
        canvas.paste(Image.fromarray(panel), (x, top))
        draw.text((x, top - 20), title, fill=(0, 0, 0), font=font)
    x, y = gap, legend_top
    for colour, name, item in items:
        if x > gap and x + item > width:
            x, y = gap, y + swatch + gap
        draw.rectangle([x, y, x + swatch, y + swatch], fill=colour, outline=(0, 0, 0))
        draw.text((x + swatch + 6, y - 1), name, fill=(0, 0, 0), font=font)
        x += item
    return canvas
