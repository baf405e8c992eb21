"""Tiled inference (``--tile SIZE --tile-overlap FRACTION``): images larger than the model's
window are kept at their own resolution (times each scale) and cut into overlapping windows.

Windows are spread evenly over each side, the first at 0 and the last ending at the border, so
every pixel is covered and neighbours overlap by at least ``overlap × SIZE`` pixels. The logits
of the windows are blended with weights (see :func:`blend_weights`) into one map; the runs
(scales × flips) are then combined as for whole images (paper Sec. 4.3). Everything streams in
bands of rows, top to bottom: the sums of one row of windows (classes × window height × image
width) and bands of final rows, never a full-size float map per window or per run, so the
memory of a 6000×4000 photo is bounded by its window batch and that one row of windows.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from ..config import InferenceConfig
from ..errors import ConfigError
from ..models.heads import bilinear_source_index
from .scores import BAND_ELEMENTS, first_argmax

#: raw windows, float 0..255 (N, 3, h, w) → their logits (N, C, h, w)
WindowRunner = Callable[[torch.Tensor], torch.Tensor]
#: (images float 0..255 (N, 3, H, W), content (h, w), canvas (H', W'), flipped) → the logits
#: (N, C, h, w) of a network input ``canvas`` holding the images resized to ``content``, run
#: left-right flipped (and flipped back) if ``flipped``: the Segmenter's preprocessing + network
NetworkRunner = Callable[[torch.Tensor, tuple[int, int], tuple[int, int], bool], torch.Tensor]
#: (image size (H, W), scale) → (content, canvas) of a whole-image run
Placement = Callable[[tuple[int, int], float], tuple[tuple[int, int], tuple[int, int]]]


@dataclass(frozen=True)
class Tiling:
    """How a :class:`~deeplabcli.inference.Segmenter` tiles: window side (pixels), the overlap
    of neighbouring windows (a fraction of the side, in [0, 1)) and the blend of their logits."""

    size: int
    overlap: float
    blend: str = "falloff"  # "falloff" | "mean" (mmseg's count-normalised sum)

    def needed(self, size: tuple[int, int], scales: Sequence[float]) -> bool:
        """True if an (H, W) image is larger than the window at one of ``scales`` (an image
        that fits the window at every scale runs whole, exactly as without tiles)."""
        return any(max(scaled_size(size, s)) > self.size for s in scales)


def tiling_for(
    options: InferenceConfig, output_stride: int, input_size: int | None
) -> Tiling | None:
    """The :class:`Tiling` of ``options`` (None without ``tile``) for a network at
    ``output_stride`` whose inputs are ``input_size`` pixels square (None: any size). Raises
    :class:`ConfigError` for a window smaller than the output stride (not one feature)."""
    if options.tile is None:
        return None
    if options.tile < output_stride:
        raise ConfigError(
            f"--tile {options.tile} is smaller than the model's output stride ({output_stride}): "
            f"a window would not hold one feature. Use --tile of at least {output_stride}, "
            f"e.g. {input_size or 513} (the {'model' if input_size else 'usual'} input size)."
        )
    return Tiling(options.tile, options.tile_overlap, options.tile_blend)


def scaled_size(size: tuple[int, int], scale: float) -> tuple[int, int]:
    """(H, W) times ``scale``, rounded, at least 1 × 1."""
    return max(1, round(size[0] * scale)), max(1, round(size[1] * scale))


def window_starts(length: int, window: int, overlap: float) -> list[int]:
    """Starts of the windows of ``window`` pixels that cover ``[0, length)``: ``[0]`` when one
    window suffices, else evenly spread from 0 to ``length - window`` with as few windows as
    keep neighbours overlapping by at least ``floor(window × overlap)`` pixels.

    >>> window_starts(10, 6, 0.5)
    [0, 2, 4]
    """
    if length <= window:
        return [0]
    stride = max(1, math.floor(window * (1 - overlap)))
    count = math.ceil((length - window) / stride) + 1
    return [round(i * (length - window) / (count - 1)) for i in range(count)]


def falloff(length: int) -> torch.Tensor:
    """Weights (length,) of one window side for the "falloff" blend: a tent, 1 in the middle
    falling linearly to ``1 / ceil(length / 2)`` at both borders (never 0, so pixels at the
    image border, seen by one window only, keep their logits)."""
    position = torch.arange(length, dtype=torch.float32)
    return (torch.minimum(position, length - 1 - position) + 1) / math.ceil(length / 2)


def blend_weights(height: int, width: int, blend: str) -> torch.Tensor:
    """Weights float32 (height, width) of a window's logits: ``falloff(height) ⊗ falloff(width)``
    for "falloff" (a pixel near a window border takes its scores mostly from the window where
    it is central, which saw more context), ones for "mean" (every window counts the same, as
    in mmseg's slide inference). The blend divides by the sum of weights at each pixel."""
    if blend == "mean":
        return torch.ones(height, width)
    if blend == "falloff":
        return falloff(height)[:, None] * falloff(width)[None, :]
    raise ValueError(f"unknown blend {blend!r}")


def window_bands(
    source: torch.Tensor,
    tiling: Tiling,
    run: WindowRunner,
    *,
    batch: int,
) -> Iterator[torch.Tensor]:
    """Blended logits of ``source`` (3, H, W) (uint8, or float in 0..255) cut into windows of
    ``tiling.size`` (smaller sides where the image is smaller): consecutive row bands, float32
    (C, rows, W) on the source's device, together covering all H rows, top to bottom.

    Windows go through ``run`` ``batch`` at a time. The sums live in one (C, window rows, W)
    buffer that starts at the current window row: once a row of windows is in, the rows above
    the next window row are final and are yielded (normalised, in bands of at most
    :data:`~.scores.BAND_ELEMENTS` values), and the rows the next windows overlap move up.
    """
    height, width = int(source.shape[-2]), int(source.shape[-1])
    rows_h, cols_w = min(tiling.size, height), min(tiling.size, width)
    tops = window_starts(height, rows_h, tiling.overlap)
    lefts = window_starts(width, cols_w, tiling.overlap)
    weight = blend_weights(rows_h, cols_w, tiling.blend).to(source.device)
    scores: torch.Tensor | None = None  # (C, rows_h, W): sums of weighted logits from `top`
    total = torch.zeros(rows_h, width, device=source.device)  # (rows_h, W): sums of weights
    for k, top in enumerate(tops):
        for first in range(0, len(lefts), batch):
            chunk = lefts[first : first + batch]
            raw = torch.stack([source[:, top : top + rows_h, x : x + cols_w] for x in chunk])
            logits = run(raw.float())  # (N, C, rows_h, cols_w)
            if scores is None:
                scores = logits.new_zeros(logits.shape[1], rows_h, width)
            for left, window in zip(chunk, logits, strict=True):
                scores[:, :, left : left + cols_w].add_(window * weight)
                total[:, left : left + cols_w].add_(weight)
        assert scores is not None
        done = (tops[k + 1] if k + 1 < len(tops) else height) - top  # rows no window adds to
        step = max(1, BAND_ELEMENTS // (scores.shape[0] * width))
        for start in range(0, done, step):
            rows = slice(start, min(done, start + step))
            yield scores[:, rows] / total[rows]
        keep = rows_h - done  # rows the next window row overlaps: to the top of the buffer
        scores[:, :keep] = scores[:, done:].clone()
        total[:keep] = total[done:].clone()
        scores[:, keep:] = 0
        total[keep:] = 0


def resize_bands(
    bands: Iterator[torch.Tensor],
    source: tuple[int, int],
    size: tuple[int, int],
    align_corners: bool,
) -> Iterator[torch.Tensor]:
    """The bilinear resize to ``size`` (H, W) of a map of ``source`` (h, w) given as consecutive
    row bands (C, rows, w): consecutive bands (C, rows', W), equal to ``F.interpolate`` of the
    whole map up to float rounding, each yielded as soon as the source rows it needs are in.
    Bands pass through unchanged when the sizes are equal."""
    if tuple(source) == tuple(size):
        yield from bands
        return
    height, width = size
    held: torch.Tensor | None = None  # source rows [start, start + held rows)
    start = emitted = 0  # first held source row; output rows yielded so far
    for band in bands:
        if held is None:
            if band.shape[1] == source[0]:  # the whole map in one band: resize it at once
                yield F.interpolate(
                    band[None], size=size, mode="bilinear", align_corners=align_corners
                )[0]
                return
            y0, y1, fy = bilinear_source_index(height, source[0], align_corners, band.device)
            x0, x1, fx = bilinear_source_index(width, source[1], align_corners, band.device)
            held = band
        else:
            held = torch.cat([held, band], 1)
        end = start + held.shape[1]  # output row y is ready once its lower source row y1 is in
        ready = height if end >= source[0] else int((y1 < end).sum())
        if ready > emitted:
            rows = slice(emitted, ready)
            top, bottom = (
                held.index_select(1, y0[rows] - start),
                held.index_select(1, y1[rows] - start),
            )
            vertical = torch.lerp(top, bottom, fy[rows].view(1, -1, 1))
            yield torch.lerp(
                vertical.index_select(2, x0), vertical.index_select(2, x1), fx.view(1, 1, -1)
            )
            emitted = ready
        if emitted < height:  # drop the source rows no later output row reads
            keep = int(y0[emitted])
            held, start = held[:, keep - start :], keep


class _Rows:
    """Takes rows from consecutive bands (C, rows, W) in any chunk sizes, top to bottom."""

    def __init__(self, bands: Iterator[torch.Tensor]) -> None:
        self.bands = bands
        self.held: torch.Tensor | None = None

    def take(self, count: int) -> torch.Tensor:
        parts: list[torch.Tensor] = []
        while count > 0:
            if self.held is None or self.held.shape[1] == 0:
                self.held = next(self.bands)
            part = self.held[:, :count]
            self.held = self.held[:, part.shape[1] :]
            parts.append(part)
            count -= part.shape[1]
        return parts[0] if len(parts) == 1 else torch.cat(parts, 1)


def combine_bands(
    runs: Sequence[Iterator[torch.Tensor]], size: tuple[int, int], want: str
) -> torch.Tensor:
    """Combine runs given as consecutive bands of logits (C, rows, W) at the image size (H, W):
    one run is used as logits, several by averaging their softmax probabilities (paper
    Sec. 4.3). ``want`` "mask": the class map (H, W) (uint8 below 256 classes, else int64);
    "probs": the probabilities float32 (C, H, W). The runs are read side by side, one band of
    rows at a time."""
    height, width = size
    feeders = [_Rows(run) for run in runs]
    out: torch.Tensor | None = None
    step = 1  # until the class count is known
    start = 0
    while start < height:
        count = min(step, height - start)
        parts = [feeder.take(count) for feeder in feeders]
        if len(parts) == 1:
            scores = parts[0] if want == "mask" else parts[0].softmax(0)
        else:
            scores = sum(p.softmax(0) for p in parts) / len(parts)  # type: ignore[assignment]
        if out is None:  # the class count is known once the first band is in
            classes = scores.shape[0]
            step = max(1, BAND_ELEMENTS // (classes * width))
            shape = (height, width) if want == "mask" else (classes, height, width)
            dtype = torch.uint8 if classes < 256 else torch.int64
            out = scores.new_empty(shape, dtype=dtype if want == "mask" else torch.float32)
        if want == "mask":
            out[start : start + count] = first_argmax(scores)
        else:
            out[:, start : start + count] = scores
        start += count
    assert out is not None
    return out


def tiled_map(
    pixels: torch.Tensor,
    tiling: Tiling,
    *,
    scales: Sequence[float],
    flip: bool,
    run: NetworkRunner,
    placement: Placement,
    fit: bool,
    batch: int,
    align_corners: bool,
    want: str,
) -> torch.Tensor:
    """The class map (H, W) (``want="mask"``) or probabilities float32 (C, H, W) (``"probs"``)
    of one image ``pixels`` (3, H, W) (uint8, or float in 0..255), run at each of ``scales``
    (and flipped, with ``flip``) through ``run``. A run whose scaled image fits the window is
    a whole-image run (at its ``placement``); the others are tiled, ``batch`` windows per call,
    each window padded to a ``tiling.size`` square for ``fit`` models (fixed-size inputs)."""
    size = (int(pixels.shape[-2]), int(pixels.shape[-1]))
    runs: list[Iterator[torch.Tensor]] = []
    for scale in scales:
        scaled = scaled_size(size, scale)
        for flipped in (False, True) if flip else (False,):
            if max(scaled) <= tiling.size:
                content, canvas = placement(size, scale)
                logits = run(pixels[None].float(), content, canvas, flipped)[0].contiguous()
                runs.append(resize_bands(iter([logits]), content, size, align_corners))
                continue
            source = pixels
            if scaled != size:
                source = F.interpolate(
                    pixels[None].float(), size=scaled, mode="bilinear", antialias=True
                )[0]

            def windows(raw: torch.Tensor, flipped: bool = flipped) -> torch.Tensor:
                content = (int(raw.shape[-2]), int(raw.shape[-1]))
                return run(raw, content, (tiling.size,) * 2 if fit else content, flipped)

            bands = window_bands(source, tiling, windows, batch=batch)
            runs.append(resize_bands(bands, scaled, size, align_corners))
    return combine_bands(runs, size, want)
