"""What ``deeplab predict`` reports: one :class:`PredictResult` per input, and the summary."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class PredictResult:
    """What happened to one input: ``status`` is "written", "skipped" or "failed"."""

    input: str
    status: str
    output: str | None = None
    message: str = ""  # one line for "skipped" and "failed": what happened, what to do
    width: int | None = None
    height: int | None = None
    classes: list[dict[str, Any]] = field(default_factory=list)  # index, name, share in [0, 1]
    seconds: float = 0.0  # decode + this image's share of its batch's compute + encode/write
    frames: int | None = None  # videos: frames written (also for a video that ended early)

    def to_json(self) -> dict[str, Any]:
        """A JSON record: always input/status, then the fields that apply to the status."""
        record: dict[str, Any] = {"input": self.input, "status": self.status}
        if self.output is not None:
            record["output"] = self.output
        if self.frames is not None:
            record["frames"] = self.frames
        if self.status == "written":
            record.update(width=self.width, height=self.height, classes=self.classes)
            record["seconds"] = round(self.seconds, 4)
        else:
            record["message"] = self.message
        return record


@dataclass
class PredictSummary:
    """This process's results and the counts over all processes."""

    results: list[PredictResult]
    written: int
    skipped: int
    failed: int
    seconds: float
    frames: int = 0  # video frames written, over all processes

    @property
    def failures(self) -> list[PredictResult]:
        return [r for r in self.results if r.status == "failed"]


def class_shares(mask: np.ndarray, class_names: Sequence[str]) -> list[dict[str, Any]]:
    """Classes present in ``mask`` (H, W) with their share of the pixels, largest first."""
    counts = np.bincount(mask.ravel().astype(np.int64), minlength=len(class_names))
    return shares_of_counts(counts, class_names)


def shares_of_counts(counts: np.ndarray, class_names: Sequence[str]) -> list[dict[str, Any]]:
    """:func:`class_shares` from pixel counts per class (C,), e.g. summed over video frames."""
    present = sorted(np.flatnonzero(counts), key=lambda c: (-counts[c], c))
    total = int(counts.sum())
    return [
        {
            "index": int(c),
            "name": class_names[c] if c < len(class_names) else str(c),
            "share": round(float(counts[c]) / total, 6),
        }
        for c in present
    ]
