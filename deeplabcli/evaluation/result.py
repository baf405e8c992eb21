"""What an evaluation produced: metrics, per-image scores, the worst images, timings."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .metrics import SegmentationMetrics


@dataclass
class ImageScore:
    """How well one image was segmented (from its own confusion matrix)."""

    index: int  # position in the data set
    id: str
    miou: float  # mean IoU over the classes in its labels or prediction; NaN: nothing labelled
    pixel_accuracy: float  # correct / labelled pixels; NaN: nothing labelled
    pixels: int  # labelled (non-ignored) pixels


@dataclass
class WorstImage:
    """One of the lowest-mIoU images, with its prediction (for the report's overlays)."""

    score: ImageScore
    prediction: np.ndarray  # uint8 (H, W) class map at the image's size


@dataclass
class EvalResult:
    """What one evaluation produced; the same on every rank (timings are this rank's)."""

    metrics: SegmentationMetrics
    model: str  # the model reference (or name) evaluated
    output_stride: int  # the OS the network ran at
    scales: tuple[float, ...]
    flip: bool
    dataset: str  # "voc" | "folder"
    split: str
    per_image: list[ImageScore]  # every evaluated image, in data set order
    worst: list[WorstImage] = field(default_factory=list)  # lowest mIoU first (if asked for)
    seconds: float = 0.0  # wall time, setup included
    load_wait: float = 0.0  # seconds the scoring loop waited for decoded images
    first_wait: float = 0.0  # of which for the first batch (loader start-up included)
    loop_seconds: float = 0.0  # seconds of the scoring loop (first batch to last)
    backend: str = "torch"  # where the network ran: "torch" | "onnxruntime" | "openvino"
    precision: str = "float32"  # in what: "float32" | "bfloat16" | "float16" | "int8"

    @property
    def images(self) -> int:
        return len(self.per_image)

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else math.nan

    @property
    def load_share(self) -> float:
        """Fraction of the scoring loop spent waiting for data (0 = never waited)."""
        return self.load_wait / self.loop_seconds if self.loop_seconds > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        """``{"miou", "pixel_accuracy", "mean_accuracy", "fw_iou", "per_class_iou", "images",
        "model", "os", "scales", "flip", "backend", ...}``; fractions in [0, 1], ``None`` for
        n/a."""
        data = self.metrics.to_dict()
        data.update(
            images=self.images,
            pixels=self.metrics.pixels,
            model=self.model,
            os=self.output_stride,
            scales=list(self.scales),
            flip=self.flip,
            backend=self.backend,
            precision=self.precision,
            dataset=self.dataset,
            split=self.split,
            seconds=round(self.seconds, 3),
            images_per_second=round(self.images_per_second, 3) if self.seconds > 0 else None,
        )
        return data
