"""``deeplab eval --report DIR``: the numbers as files and the pictures people would rather see.

::

    DIR/
        metrics.json          the ``--json`` record + the confusion matrix + the worst images
        per_class.csv         index, class, IoU, accuracy, pixel counts (n/a cells empty)
        per_image.csv         index, id, mIoU, pixel accuracy, labelled pixels
        confusion_matrix.png  heat map, each row normalised to the class's labelled pixels
        per_class_iou.png     bar chart of per-class IoU, mIoU marked, n/a classes labelled
        worst/NN_<id>.png     the lowest-mIoU images: image | ground truth | prediction,
                              classes outlined, with a legend of the classes shown
        index.html            one page with all of it (summary, per-class table, charts,
                              worst images); needs no network

The pictures are drawn by :mod:`.report_pictures`, the page by :mod:`.report_html`. The charts
need matplotlib (the ``report`` extra). DIR must be new, empty or an earlier report;
the location is probed before any work. Every file is written under a hidden temporary folder
inside DIR, then renamed into place one by one, ``metrics.json`` last: it lists the files the
report wrote (``report_files``), and only those are ever replaced or removed by the next report
there. Anything else in DIR (notes, other folders) is left as it is.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import re
import shutil
from pathlib import Path
from typing import Any

from ..data.dataset import SegmentationDataset
from ..errors import DiskFullError, MissingDependencyError, OutputWriteError, extra_hint
from ..files import check_writable, is_disk_full, stale_temporaries, temporary_sibling
from .report_html import write_index_html
from .report_pictures import PANEL_SIDE, confusion_chart, iou_chart, write_worst
from .result import EvalResult

__all__ = ["MARKER", "PANEL_SIDE", "check_report_dir", "report_files", "write_report"]

#: the file that marks a folder as an earlier report and lists the files it wrote
MARKER = "metrics.json"
#: what every report writes, besides its worst/NN_<id>.png pictures
FIXED_FILES = (MARKER, "per_class.csv", "per_image.csv", "confusion_matrix.png",
               "per_class_iou.png", "index.html")  # fmt: skip
#: what a report wrote before metrics.json listed its files (those reports are still known)
_UNLISTED_FILES = (MARKER, "per_class.csv", "per_image.csv", "confusion_matrix.png",
                   "per_class_iou.png")  # fmt: skip
_WORST_FILE = re.compile(r"worst/[^/\\]+\.png")
#: the hidden folder a report is staged in, inside DIR: .report.1a2b3c4d.tmp
_STAGE = "report"


def require_matplotlib() -> None:
    """Raise :class:`MissingDependencyError` when matplotlib (the charts) is not installed."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise MissingDependencyError(
            "--report needs matplotlib to draw its charts, and it is not installed. "
            f"{extra_hint('report')}."
        ) from None


def check_report_dir(path: str | os.PathLike[str]) -> Path:
    """``path`` as a Path if a report can be written there: it does not exist, is empty, or
    holds an earlier report. Raises :class:`OutputWriteError` otherwise."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputWriteError(f"{path} is a file, not a folder. Give --report a folder name.")
    staged = {p.name for p in stale_temporaries(path, {_STAGE})}  # left by a killed report
    others = path.is_dir() and any(p.name not in staged for p in path.iterdir())
    if others and report_files(path) is None:
        raise OutputWriteError(
            f"{path} already holds files that are not an eval report. Give --report a new or "
            "empty folder (an earlier report there is replaced)."
        )
    check_writable(path, "Give --report a writable folder")
    return path


def report_files(path: Path) -> set[str] | None:
    """The files (relative paths) the report in folder ``path`` wrote, or None when ``path``
    holds no report. Only names a report writes count, whatever its metrics.json says."""
    try:
        data = json.loads((Path(path) / MARKER).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(data, dict) or "confusion_matrix" not in data:
        return None
    listed = data.get("report_files")
    if not isinstance(listed, list):  # written before the list existed
        worst = data.get("worst_images")
        pictures = [w.get("file") for w in worst if isinstance(w, dict)] if isinstance(
            worst, list) else []  # fmt: skip
        listed = [*_UNLISTED_FILES, *pictures]
    return {MARKER, *(n for n in listed if isinstance(n, str) and _is_report_name(n))}


def _is_report_name(name: str) -> bool:
    return name in FIXED_FILES or _WORST_FILE.fullmatch(name) is not None


def write_report(result: EvalResult, dataset: SegmentationDataset, path: str | os.PathLike) -> Path:
    """Write the report of ``result`` into folder ``path`` (see the module docstring)."""
    require_matplotlib()
    target = check_report_dir(path)
    earlier = report_files(target) or set()
    created = not target.exists()
    stage = temporary_sibling(target / _STAGE)
    published = False
    try:
        (stage / "worst").mkdir(parents=True)
        worst_files = [write_worst(stage / "worst", rank, w, dataset) for rank, w in
                       enumerate(result.worst, 1)]  # fmt: skip
        _write_per_class(stage / "per_class.csv", result)
        _write_per_image(stage / "per_image.csv", result)
        confusion_chart(stage / "confusion_matrix.png", result)
        iou_chart(stage / "per_class_iou.png", result)
        write_index_html(stage / "index.html", result, worst_files)
        _write_json(stage / MARKER, result, worst_files)
        _publish(stage, target, [*FIXED_FILES, *worst_files], earlier)
        published = True
    except OSError as error:
        if is_disk_full(error):
            raise DiskFullError(target) from None
        raise OutputWriteError(
            f"cannot write the report to {target} ({error.strerror or error}). "
            "Give --report a writable folder."
        ) from None
    finally:
        shutil.rmtree(stage, ignore_errors=True)
        if created and not published:  # leave no empty folder behind
            for folder in (target / "worst", target):
                with contextlib.suppress(OSError):
                    folder.rmdir()  # only when empty
    return target


def _publish(stage: Path, target: Path, files: list[str], earlier: set[str]) -> None:
    """Move the report's ``files`` from ``stage`` into ``target`` (``metrics.json`` last), then
    remove the files of the ``earlier`` report there that this one does not write. A file in
    the way that no report wrote refuses the whole report before anything is moved."""
    for name in files:
        if name not in earlier and os.path.lexists(target / name):
            raise OutputWriteError(
                f"{target / name} was not written by an earlier report, so it is not replaced. "
                "Move it away, or give --report another folder."
            )
    (target / "worst").mkdir(exist_ok=True)
    for name in sorted(files, key=lambda n: n == MARKER):
        os.replace(stage / name, target / name)
    for name in sorted(earlier - set(files)):
        (target / name).unlink(missing_ok=True)


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
    data["report_files"] = [*FIXED_FILES, *worst_files]  # what the next report may replace
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
