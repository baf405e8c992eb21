"""Per-image network outputs → class maps and probabilities at the image's own size.

A :class:`ScoreRuns` holds the logits of every run over one image (one per scale and flip) at
the runs' own resolutions, and resizes and combines them on demand, one band of rows at a time,
so the class map of a big photo never needs a full-size (C, H, W) float buffer.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.nn import functional as F

from ..models.heads import bilinear_source_index

#: Elements of one (C, rows, W) float buffer when resizing scores in row bands (32 MB).
BAND_ELEMENTS = 1 << 23


class ScoreRuns:
    """The logits of every run (scale × flip) over one image, at the runs' own resolutions;
    resized bilinearly to the image size and combined on demand, one band of rows at a time.

    A single run is used as logits (argmax needs no softmax); several runs are combined by
    averaging their softmax probabilities (paper Sec. 4.3).
    """

    def __init__(self, size: tuple[int, int], align_corners: bool, *, combine: bool) -> None:
        self.size = size  # (H, W) of the original image
        self.align_corners = align_corners
        self.combine = combine
        self.logits: list[torch.Tensor] = []  # float32 (C, h, w) per run

    def add(self, logits: torch.Tensor) -> None:
        """Add one run's logits (C, h, w); kept contiguous, since bilinear resizing and
        :func:`first_argmax` of channels-last slices are several times slower on the CPU."""
        self.logits.append(logits.contiguous())

    def argmax(self) -> torch.Tensor:
        """Class map (H, W) on the logits' device: uint8 below 256 classes, else int64."""
        first = self.logits[0]
        dtype = torch.uint8 if first.shape[0] < 256 else torch.int64
        out = torch.empty(self.size, dtype=dtype, device=first.device)
        for rows, scores in self._bands():
            out[rows] = first_argmax(scores)
        return out

    def probabilities(self) -> torch.Tensor:
        """Class probabilities float32 (C, H, W) on the logits' device."""
        first = self.logits[0]
        out = torch.empty((first.shape[0], *self.size), dtype=torch.float32, device=first.device)
        for rows, scores in self._bands():
            out[:, rows] = scores if self.combine else scores.softmax(0)
        return out

    def _bands(self) -> Iterator[tuple[slice, torch.Tensor]]:
        """(rows, scores (C, len(rows), W)) covering the image: logits for a single run, the
        mean of the runs' probabilities otherwise."""
        height, width = self.size
        classes = self.logits[0].shape[0]
        step = max(1, BAND_ELEMENTS // (classes * width))
        for start in range(0, height, step):
            rows = slice(start, min(height, start + step))
            if not self.combine:
                yield rows, resize_rows(self.logits[0], self.size, rows, self.align_corners)
                continue
            total = None
            for logits in self.logits:
                probs = resize_rows(logits, self.size, rows, self.align_corners).softmax(0)
                total = probs if total is None else total.add_(probs)
            yield rows, total.div_(len(self.logits))  # type: ignore[union-attr]


def resize_rows(
    x: torch.Tensor, size: tuple[int, int], rows: slice, align_corners: bool
) -> torch.Tensor:
    """Rows ``rows`` of the bilinear resize of ``x`` (C, h, w) to ``size`` (H, W):
    (C, len(rows), W), equal to ``F.interpolate(x[None], size)[0, :, rows]`` up to float
    rounding (exactly that when ``rows`` covers every row)."""
    height, width = size
    if tuple(x.shape[-2:]) == (height, width):
        return x[:, rows]
    if rows.indices(height)[:2] == (0, height):
        return F.interpolate(x[None], size=size, mode="bilinear", align_corners=align_corners)[0]
    y0, y1, fy = (
        t[rows] for t in bilinear_source_index(height, x.shape[1], align_corners, x.device)
    )
    x0, x1, fx = bilinear_source_index(width, x.shape[2], align_corners, x.device)
    vertical = torch.lerp(x.index_select(1, y0), x.index_select(1, y1), fy.view(1, -1, 1))
    return torch.lerp(vertical.index_select(2, x0), vertical.index_select(2, x1), fx.view(1, 1, -1))


def first_argmax(scores: torch.Tensor) -> torch.Tensor:
    """``scores.argmax(0)`` for (C, H, W) scores, the first class winning ties, computed with
    plain max reductions: several times faster than ``argmax`` on the CPU, where index-returning
    reductions over the outer dimension are not vectorised. uint8 below 256 classes, else int64.
    """
    classes = scores.shape[0]
    dtype = torch.uint8 if classes < 256 else torch.int64
    scores = scores.contiguous()
    # classes, ..., 1 where a class reaches the maximum: the largest marks the first such class
    rank = torch.arange(classes, 0, -1, dtype=dtype, device=scores.device).view(classes, 1, 1)
    hits = (scores == scores.amax(0, keepdim=True)).to(dtype).mul_(rank)
    return (classes - hits.amax(0)).clamp_(max=classes - 1)  # NaN rows: the last class
