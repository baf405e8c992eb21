"""Segmentation metrics from a confusion matrix: pure functions, no printing.

The confusion matrix ``cm`` is int64 ``(C, C)``: ``cm[t, p]`` counts pixels whose label is
``t`` and whose prediction is ``p``; pixels labelled 255 (:data:`IGNORE_INDEX`) are not
counted. From it, per class ``c``: ``IoU = TP / (TP + FP + FN)`` and ``accuracy = TP / (TP +
FN)``. A class absent from both labels and predictions has no IoU (reported as n/a, ``NaN``
here, ``None`` in :meth:`SegmentationMetrics.to_dict`) and is left out of the mean; which
classes those were is part of the result.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..config import IGNORE_INDEX, default_class_names

Array = np.ndarray | torch.Tensor


def confusion_matrix(
    labels: Array, predictions: Array, num_classes: int, *, ignore_index: int = IGNORE_INDEX
) -> Array:
    """Count (label, prediction) pairs: labels and predictions of any integer dtype and equal
    shape → int64 ``(C, C)``, a numpy array for numpy inputs, else a tensor on the inputs'
    device. Pixels labelled ``ignore_index`` are skipped; any other label or prediction outside
    ``[0, C)`` raises ``ValueError``. CPU tensors are counted with numpy (much faster than
    torch's masked indexing); CUDA tensors stay on the device (one host sync for the check).
    """
    if labels.shape != predictions.shape:
        raise ValueError(f"labels {tuple(labels.shape)} and predictions differ in shape")
    tensors = [x for x in (labels, predictions) if isinstance(x, torch.Tensor)]
    if tensors and tensors[0].device.type != "cpu":
        return _confusion_matrix_torch(labels, predictions, num_classes, ignore_index)
    t = _as_numpy(labels).reshape(-1).astype(np.int64)
    p = _as_numpy(predictions).reshape(-1).astype(np.int64)
    keep = t != ignore_index
    t, p = t[keep], p[keep]
    if t.size and (min(t.min(), p.min()) < 0 or max(t.max(), p.max()) >= num_classes):
        raise ValueError(f"labels or predictions outside [0, {num_classes})")
    counts = np.bincount(t * num_classes + p, minlength=num_classes * num_classes)
    cm = counts.reshape(num_classes, num_classes)
    return torch.from_numpy(cm) if tensors else cm


def _as_numpy(x: Array) -> np.ndarray:
    return x.detach().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _confusion_matrix_torch(
    labels: Array, predictions: Array, num_classes: int, ignore_index: int
) -> torch.Tensor:
    device = labels.device if isinstance(labels, torch.Tensor) else predictions.device
    t = torch.as_tensor(labels, device=device).reshape(-1).to(torch.int64)
    p = torch.as_tensor(predictions, device=device).reshape(-1).to(torch.int64)
    keep = t != ignore_index
    bad = keep & ((t < 0) | (t >= num_classes) | (p < 0) | (p >= num_classes))
    if bool(bad.any()):
        raise ValueError(f"labels or predictions outside [0, {num_classes})")
    # ignored pixels go to an extra bin that is dropped (no data-dependent shapes, no sync)
    index = torch.where(keep, t * num_classes + p, num_classes * num_classes)
    counts = torch.bincount(index, minlength=num_classes * num_classes + 1)
    return counts[: num_classes * num_classes].reshape(num_classes, num_classes)


@dataclass
class SegmentationMetrics:
    """Everything derived from one confusion matrix. Fractions are in [0, 1]."""

    class_names: tuple[str, ...]
    confusion: np.ndarray  # int64 (C, C), rows = labels, columns = predictions
    iou: np.ndarray  # float64 (C,), NaN for classes absent from labels and predictions
    accuracy: np.ndarray  # float64 (C,), per-class recall; NaN for classes without labels
    miou: float  # mean of iou over the classes that are present (NaN if none)
    pixel_accuracy: float  # correctly labelled pixels / labelled pixels
    mean_accuracy: float  # mean of accuracy over classes that have labels
    fw_iou: float  # iou weighted by each class's share of the labelled pixels
    absent: tuple[int, ...]  # classes in neither labels nor predictions (n/a, not averaged)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def pixels(self) -> int:
        """Labelled (non-ignored) pixels counted."""
        return int(self.confusion.sum())

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: floats, with ``None`` for n/a values."""
        return {
            "miou": _json_float(self.miou),
            "pixel_accuracy": _json_float(self.pixel_accuracy),
            "mean_accuracy": _json_float(self.mean_accuracy),
            "fw_iou": _json_float(self.fw_iou),
            "per_class_iou": {
                n: _json_float(v) for n, v in zip(self.class_names, self.iou, strict=True)
            },
            "per_class_accuracy": {
                n: _json_float(v) for n, v in zip(self.class_names, self.accuracy, strict=True)
            },
            "absent_classes": [self.class_names[c] for c in self.absent],
        }


def _json_float(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


def compute_metrics(
    confusion: Array, class_names: tuple[str, ...] | list[str] | None = None
) -> SegmentationMetrics:
    """Per-class IoU and accuracy, mIoU, pixel accuracy, mean class accuracy and
    frequency-weighted IoU from an int64 ``(C, C)`` confusion matrix (numpy or tensor)."""
    if isinstance(confusion, torch.Tensor):
        confusion = confusion.detach().cpu().numpy()
    cm = np.asarray(confusion, dtype=np.int64)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"a confusion matrix must be square, got shape {cm.shape}")
    num_classes = cm.shape[0]
    names = tuple(class_names) if class_names is not None else default_class_names(num_classes)
    if len(names) != num_classes:
        raise ValueError(f"{len(names)} class names for {num_classes} classes")
    true_positive = np.diag(cm).astype(np.float64)
    label_count = cm.sum(axis=1).astype(np.float64)  # TP + FN
    predicted_count = cm.sum(axis=0).astype(np.float64)  # TP + FP
    union = label_count + predicted_count - true_positive
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, true_positive / union, np.nan)
        accuracy = np.where(label_count > 0, true_positive / label_count, np.nan)
    total = label_count.sum()
    present = union > 0
    labelled = label_count > 0
    miou = float(iou[present].mean()) if present.any() else math.nan
    mean_accuracy = float(accuracy[labelled].mean()) if labelled.any() else math.nan
    pixel_accuracy = float(true_positive.sum() / total) if total else math.nan
    fw_iou = float((label_count[labelled] * iou[labelled]).sum() / total) if total else math.nan
    return SegmentationMetrics(
        class_names=names,
        confusion=cm,
        iou=iou,
        accuracy=accuracy,
        miou=miou,
        pixel_accuracy=pixel_accuracy,
        mean_accuracy=mean_accuracy,
        fw_iou=fw_iou,
        absent=tuple(int(c) for c in np.flatnonzero(~present)),
    )


class ConfusionMatrix:
    """A running confusion matrix: ``update`` per batch, ``compute`` at the end.

    Accumulates on the device of the first update (a GPU evaluation never copies predictions
    back to the host); ``matrix`` is int64 ``(C, C)``.
    """

    def __init__(self, num_classes: int, *, ignore_index: int = IGNORE_INDEX) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix: torch.Tensor = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def update(self, labels: Array, predictions: Array) -> torch.Tensor:
        """Add one batch (any shape, labels and predictions alike); returns its own matrix."""
        cm = confusion_matrix(
            torch.as_tensor(labels),
            torch.as_tensor(predictions),
            self.num_classes,
            ignore_index=self.ignore_index,
        )
        if self.matrix.device != cm.device:
            self.matrix = self.matrix.to(cm.device)
        self.matrix += cm
        return cm

    def compute(
        self, class_names: tuple[str, ...] | list[str] | None = None
    ) -> SegmentationMetrics:
        return compute_metrics(self.matrix, class_names)
