"""What ``deeplab predict`` reports: one :class:`PredictResult` per input, and the summary.

The records of a written, skipped or failed image are made here (:func:`write_result`,
:func:`skipped_result`, :func:`failed_result`) for both paths of ``deeplab predict``: the
torch pipeline (:mod:`.pipeline`) and the torch-free one (:mod:`.light`), so their messages
are the same by construction.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import DeeplabError
from .outputs import write_output

if TYPE_CHECKING:
    from .inputs import Job


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
    backend: str | None = None  # where the network ran ("torch", "onnxruntime", "openvino")
    precision: str | None = None  # in what: "float32", "bfloat16", "float16" or "int8"

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
            if self.backend is not None:
                record["backend"] = self.backend
            if self.precision is not None:
                record["precision"] = self.precision
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


def write_result(
    job: Job,
    fmt: str,
    result: np.ndarray,
    photo: np.ndarray,
    palette: np.ndarray,
    class_names: Sequence[str],
    *,
    overwrite: bool,
    seconds: float,
) -> PredictResult:
    """Write one image's prediction for ``job`` (see :func:`~.outputs.write_output`: ``result``
    is the class map (H, W) or the probabilities float32 (C, H, W); ``photo`` uint8 (H, W, 3))
    and return its record; ``seconds`` is what the image took before writing."""
    start = time.perf_counter()
    try:
        written, mask = write_output(
            fmt, result, photo, palette, class_names, job.output, overwrite=overwrite
        )
        if not written:
            return skipped_result(job, "written by another process while this one ran")
    except DeeplabError as error:
        return failed_result(job, str(error), output=str(job.output))
    return PredictResult(
        input=str(job.source),
        status="written",
        output=str(job.output),
        width=mask.shape[1],
        height=mask.shape[0],
        classes=class_shares(mask, class_names),
        seconds=seconds + time.perf_counter() - start,
    )


def skipped_result(job: Job, why: str = "already exists") -> PredictResult:
    """The record of an image whose mask is not written because it exists (``why``)."""
    return PredictResult(
        input=str(job.source),
        status="skipped",
        output=str(job.output),
        message=f"{job.output}: {why}, not replaced. Use --overwrite to replace it.",
    )


def failed_result(job: Job, message: str, *, output: str | None = None) -> PredictResult:
    """The record of an image that failed: ``message`` after the image's path."""
    return PredictResult(
        input=str(job.source), status="failed", output=output, message=f"{job.source}: {message}"
    )
