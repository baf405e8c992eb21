"""``deeplab eval --report DIR``: the numbers as files and the pictures people would rather see.

::

    DIR/
        metrics.json          the ``--json`` record + the confusion matrix + the worst images
        per_class.csv         index, class, IoU, accuracy, pixel counts (n/a cells empty)
        per_image.csv         index, id, mIoU, pixel accuracy, labelled pixels
        confusion_matrix.png  heat map, each row normalised to the class's labelled pixels
        per_class_iou.png     bar chart of per-class IoU, mIoU marked, n/a classes labelled
        worst/NN_<id>.png     the lowest-mIoU images: image | ground truth | prediction

The charts need matplotlib (the ``report`` extra). The whole folder is written under a
temporary name beside DIR and renamed into place, so a report is never half-written; an
earlier report in DIR is replaced, any other folder is left alone.
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from ..config import IGNORE_INDEX
from ..data.dataset import SegmentationDataset
from ..data.images import label_font
from ..data.palette import colourise
from ..errors import MissingDependencyError, OutputWriteError
from .result import EvalResult, WorstImage

#: files that mark a folder as an earlier report (which may be replaced)
MARKER = "metrics.json"
#: long side of each panel of a worst-image picture, at most (pixels)
PANEL_SIDE = 512


def require_matplotlib() -> None:
    """Raise :class:`MissingDependencyError` when matplotlib (the charts) is not installed."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise MissingDependencyError(
            "--report needs matplotlib to draw its charts, and it is not installed. "
            'Install it with: pip install "deeplabcli[report]".'
        ) from None


def check_report_dir(path: str | os.PathLike[str]) -> Path:
    """``path`` as a Path if a report can be written there: it does not exist, is empty, or
    holds an earlier report. Raises :class:`OutputWriteError` otherwise."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputWriteError(f"{path} is a file, not a folder. Give --report a folder name.")
    if path.is_dir() and any(path.iterdir()) and not (path / MARKER).is_file():
        raise OutputWriteError(
            f"{path} already holds files that are not an eval report. Give --report a new or "
            "empty folder (an earlier report there is replaced)."
        )
    return path


def write_report(result: EvalResult, dataset: SegmentationDataset, path: str | os.PathLike) -> Path:
    """Write the report of ``result`` into folder ``path`` (see the module docstring)."""
    require_matplotlib()
    target = check_report_dir(path)
    stage = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        (stage / "worst").mkdir(parents=True)
        worst_files = [_write_worst(stage / "worst", rank, w, dataset) for rank, w in
                       enumerate(result.worst, 1)]  # fmt: skip
        _write_json(stage / MARKER, result, worst_files)
        _write_per_class(stage / "per_class.csv", result)
        _write_per_image(stage / "per_image.csv", result)
        _confusion_chart(stage / "confusion_matrix.png", result)
        _iou_chart(stage / "per_class_iou.png", result)
        _publish(stage, target)
    except OSError as error:
        raise OutputWriteError(
            f"cannot write the report to {target} ({error.strerror or error}). "
            "Give --report a writable folder."
        ) from None
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return target


def _publish(stage: Path, target: Path) -> None:
    """Rename ``stage`` to ``target``, replacing an earlier report there."""
    if not target.exists():
        os.replace(stage, target)
        return
    old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
    os.replace(target, old)
    os.replace(stage, target)
    shutil.rmtree(old, ignore_errors=True)


def _cell(value: float) -> str:
    return "" if math.isnan(value) else f"{value:.6f}"


def _write_json(path: Path, result: EvalResult, worst_files: list[str]) -> None:
    data: dict[str, Any] = result.to_json()
    data["confusion_matrix"] = result.metrics.confusion.tolist()
    data["worst_images"] = [
        {"id": w.score.id, "miou": w.score.miou, "pixel_accuracy": w.score.pixel_accuracy,
         "file": name}
        for w, name in zip(result.worst, worst_files, strict=True)
    ]  # fmt: skip
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def _write_per_class(path: Path, result: EvalResult) -> None:
    m = result.metrics
    labelled, predicted = m.confusion.sum(axis=1), m.confusion.sum(axis=0)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["index", "class", "iou", "accuracy", "label_pixels",
                         "predicted_pixels", "true_positive_pixels"])  # fmt: skip
        for c, name in enumerate(m.class_names):
            writer.writerow([c, name, _cell(m.iou[c]), _cell(m.accuracy[c]), int(labelled[c]),
                             int(predicted[c]), int(m.confusion[c, c])])  # fmt: skip


def _write_per_image(path: Path, result: EvalResult) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["index", "id", "miou", "pixel_accuracy", "labelled_pixels"])
        for s in result.per_image:
            writer.writerow([s.index, s.id, _cell(s.miou), _cell(s.pixel_accuracy), s.pixels])


# ---------------------------------------------------------------------- charts (matplotlib)
def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _confusion_chart(path: Path, result: EvalResult) -> None:
    m = result.metrics
    count = m.num_classes
    rows = m.confusion.sum(axis=1, keepdims=True).astype(np.float64)
    share = np.divide(m.confusion, rows, out=np.zeros(m.confusion.shape), where=rows > 0)
    side = min(24.0, 3.0 + 0.45 * count)
    fig = _figure(side + 1.5, side)
    ax = fig.add_subplot()
    image = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, shrink=0.8, label="share of the class's labelled pixels")
    if count <= 40:
        ticks = np.arange(count)
        ax.set_xticks(ticks, m.class_names, rotation=90)
        ax.set_yticks(ticks, m.class_names)
    if count <= 25:
        for t in range(count):
            for p in range(count):
                if share[t, p] >= 0.005:
                    colour = "white" if share[t, p] > 0.5 else "black"
                    ax.text(p, t, f"{100 * share[t, p]:.0f}", ha="center", va="center",
                            fontsize=7, color=colour)  # fmt: skip
    ax.set_xlabel("prediction")
    ax.set_ylabel("ground truth")
    ax.set_title(f"Confusion matrix (%), {result.dataset} {result.split}, {result.images} images")
    fig.savefig(path)


def _iou_chart(path: Path, result: EvalResult) -> None:
    m = result.metrics
    count = m.num_classes
    values = np.nan_to_num(m.iou, nan=0.0)
    fig = _figure(8.0, min(30.0, max(3.5, 1.5 + 0.3 * count)))
    ax = fig.add_subplot()
    positions = np.arange(count)
    ax.barh(positions, values, color=[tuple(c / 255 for c in _colour(result, i))
                                      for i in range(count)], edgecolor="black")  # fmt: skip
    ax.set_yticks(positions, m.class_names)
    ax.invert_yaxis()
    ax.set_xlim(0.0, 1.0)
    for i, value in enumerate(m.iou):
        label = "n/a (absent, not in the mean)" if math.isnan(value) else f"{value:.3f}"
        ax.text(min(values[i], 0.8) + 0.01, i, label, va="center", fontsize=8)
    if not math.isnan(m.miou):
        ax.axvline(m.miou, color="red", linestyle="--", label=f"mIoU {m.miou:.4f}")
        ax.legend(loc="lower right")
    ax.set_xlabel("IoU")
    ax.set_title(f"Per-class IoU, {result.dataset} {result.split} ({result.model})")
    fig.savefig(path)


def _colour(result: EvalResult, index: int) -> tuple[int, int, int]:
    from ..data.palette import palette_for

    rgb = palette_for(result.metrics.num_classes)[index]
    return (200, 200, 200) if not rgb.any() else tuple(int(v) for v in rgb)  # type: ignore[return-value]


# ---------------------------------------------------------------------- worst images
def _write_worst(folder: Path, rank: int, worst: WorstImage, dataset: SegmentationDataset) -> str:
    sample = dataset.load(worst.score.index)
    background = dataset.class_names[0] == "background"
    panels = [
        sample.image,
        _blend(sample.image, sample.mask, dataset.palette, background),
        _blend(sample.image, worst.prediction, dataset.palette, background),
    ]
    caption = (
        f"{worst.score.id}   mIoU {worst.score.miou:.3f}   "
        f"pixel accuracy {worst.score.pixel_accuracy:.3f}"
    )
    picture = _side_by_side(panels, ["image", "ground truth", "prediction"], caption)
    safe = worst.score.id.replace("/", "__").replace("\\", "__")
    name = f"{rank:02d}_{safe}.png"
    picture.save(folder / name, format="PNG")
    return f"worst/{name}"


def _blend(
    photo: np.ndarray, mask: np.ndarray, palette: np.ndarray, background: bool
) -> np.ndarray:
    """Class colours over the photo at 60 %; ignored pixels show the void colour and, when
    class 0 is "background", its pixels keep the photo as it is."""
    colours = colourise(mask, palette).astype(np.float32)
    blended = 0.4 * photo.astype(np.float32) + 0.6 * colours
    void = mask == IGNORE_INDEX
    blended[void] = colours[void]
    if background:
        keep = mask == 0
        blended[keep] = photo[keep]
    return np.rint(blended).astype(np.uint8)


def _side_by_side(panels: list[np.ndarray], titles: list[str], caption: str) -> Image.Image:
    """uint8 (H, W, 3) panels in a row (scaled so the long side is at most PANEL_SIDE), a
    title above each and a caption on top."""
    height, width = panels[0].shape[:2]
    ratio = min(1.0, PANEL_SIDE / max(height, width))
    size = (max(1, round(width * ratio)), max(1, round(height * ratio)))
    font = label_font(14)
    gap, top = 8, 48
    canvas = Image.new("RGB", (3 * size[0] + 4 * gap, size[1] + top + gap), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    draw.text((gap, 6), caption, fill=(0, 0, 0), font=font)
    for i, (panel, title) in enumerate(zip(panels, titles, strict=True)):
        x = gap + i * (size[0] + gap)
        image = Image.fromarray(panel)
        if image.size != size:  # nearest keeps class colours pure
            image = image.resize(size, Image.NEAREST if i else Image.BILINEAR)
        canvas.paste(image, (x, top))
        draw.text((x, top - 20), title, fill=(0, 0, 0), font=font)
    return canvas
