"""Videos in ``deeplab predict``: frames → masks → a video at the source's rate and size, or
per-frame PNGs (``--frames-dir``).

Video files are named explicitly (``deeplab predict clip.mp4 -o out.mp4``); folders and
patterns are searched for images only. Each video is decoded with PyAV, segmented in batches of
``--batch-size`` frames (the next batch decodes on a thread while the network runs) and encoded
frame by frame (see :mod:`.video_io`), with a progress bar in frames. A file that is not a
video fails alone; a video that ends early (truncated, damaged) keeps the frames decoded before
the break and its failure says how many were written.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import PredictConfig
from ..errors import ConfigError, DeeplabError, OutputWriteError, VideoReadError
from ..files import IMAGE_SUFFIXES, check_writable, file_identity
from ..inference import Segmenter
from ..progress import progress_bar
from .outputs import blend_classes, write_file, write_output
from .results import PredictResult, shares_of_counts
from .video_io import (
    CONTAINERS,
    VIDEO_FORMATS,
    VIDEO_SUFFIXES,
    VideoReader,
    VideoWriter,
    encoder_for,
    is_video_name,
    require_av,
)

FIX_OUTPUT = "Choose a writable output location with -o"


@dataclass(frozen=True)
class VideoJob:
    """One video and where its masks go: a video file, or a folder of frame PNGs."""

    source: Path
    output: Path
    frames: bool  # output is a folder of <frame>.png files (--frames-dir)


def split_videos(inputs: Sequence[str]) -> tuple[list[str], list[str]]:
    """``inputs`` as (video files, everything else): a video is an existing file with a video
    suffix (:data:`~.video_io.VIDEO_SUFFIXES`)."""
    videos = [text for text in inputs if is_video_name(Path(text)) and Path(text).is_file()]
    return videos, [text for text in inputs if text not in videos]


def plan_videos(
    videos: Sequence[str], config: PredictConfig, *, images: int, classes: int
) -> tuple[list[VideoJob], list[tuple[str, str]]]:
    """One :class:`VideoJob` per video, and ``(input, message)`` for videos whose output would
    replace the video itself or another video's output. ``images``: how many other inputs
    there are; ``classes``: the model's. Raises :class:`ConfigError` (or
    MissingDependencyError without PyAV) for option mistakes: a format videos cannot take,
    ``-o FILE`` with several inputs or a suffix no video is written as, ``-o`` naming a video
    together with ``--frames-dir``, an index video of more than 256 classes."""
    if not videos:
        return [], []
    require_av()
    fmt = config.format
    if fmt not in VIDEO_FORMATS:
        raise ConfigError(
            f"videos are written as overlay, palette or index masks, not --format {fmt}. "
            "Choose one of those for video inputs."
        )
    if classes > 256 and config.frames_dir is None:
        raise ConfigError(
            f"video frames hold at most 256 classes, the model has {classes}. Use --frames-dir "
            "for 16-bit index PNGs."
        )
    target = Path(config.output) if config.output is not None else None
    named = None  # the one output file that -o names
    if target is not None and not target.is_dir():
        suffix = target.suffix.lower()
        if suffix in VIDEO_SUFFIXES | IMAGE_SUFFIXES | {".npz"}:
            named = target
    if named is not None and config.frames_dir is not None:
        if named.suffix.lower() in VIDEO_SUFFIXES:
            raise ConfigError(
                f"-o {config.output} names a video but --frames-dir writes the frames as PNGs "
                "instead. Give one of them."
            )
        named = None  # -o is the images' mask file
    elif named is not None:
        if len(videos) + images > 1:
            raise ConfigError(
                f"-o {config.output} names one file but the inputs are several. Give -o a folder."
            )
        if named.suffix.lower() not in CONTAINERS:
            raise ConfigError(
                f"videos are written as .mp4, .mov (H.264) or .mkv (lossless FFV1), not "
                f"{named.suffix}. Give -o one of those names or a folder, or use --frames-dir "
                "for PNG frames."
            )
    jobs: list[VideoJob] = []
    owners: dict[Path, Path] = {}
    failures: list[tuple[str, str]] = []
    ext = ".mp4" if fmt == "overlay" else ".mkv"
    for text in videos:
        source = Path(text)
        if config.frames_dir is not None:
            out = Path(config.frames_dir) / source.stem
        elif named is not None:
            out = named
        elif target is not None:
            out = target / (source.stem + ext)
        else:
            out = source.with_name(source.stem + "_mask" + ext)
        key = out.resolve()
        if key == source.resolve() or file_identity(out) == file_identity(source):
            failures.append((text, f"{source}: its masks would replace the video itself. "
                             "Choose another output location with -o."))  # fmt: skip
        elif key in owners:
            failures.append((text, f"{source}: its masks {out} are also those of "
                             f"{owners[key]}. Predict these videos into separate folders."))  # fmt: skip
        else:
            owners[key] = source
            jobs.append(VideoJob(source, out, frames=config.frames_dir is not None))
    return jobs, failures


def predict_video(
    segmenter: Segmenter, job: VideoJob, config: PredictConfig, palette: np.ndarray,
    *, progress: bool = True,
) -> PredictResult:  # fmt: skip
    """Segment every frame of ``job.source`` and write the masks as ``config.format`` into
    ``job.output``; the result says what happened (``frames`` = frames written)."""
    start = time.perf_counter()
    source, out = job.source, job.output
    skipped = PredictResult(
        input=str(source), status="skipped", output=str(out),
        message=f"{out}: already exists, not replaced. Use --overwrite to replace it.",
    )  # fmt: skip
    taken = any(out.iterdir()) if job.frames and out.is_dir() else out.is_file()
    if taken and not config.overwrite:
        return skipped
    try:
        reader = VideoReader(source)
    except VideoReadError as error:
        return PredictResult(input=str(source), status="failed", message=str(error))
    run = _VideoRun(segmenter, reader, config, palette, job)
    try:
        # before any frame is decoded: the folder takes new files, the encoder exists
        check_writable(out if job.frames else out.parent, FIX_OUTPUT)
        if not job.frames:
            if out.is_dir():
                raise OutputWriteError(f"cannot write {out} (Is a directory). {FIX_OUTPUT}.")
            encoder_for(out.suffix.lower(), config.format, reader.size)
        with progress_bar(
            reader.expected or None, f"{source.name}", disable=not progress, unit="frame"
        ) as bar:
            if job.frames:
                run.frames_to_pngs(bar.advance)
            elif not write_file(
                out, lambda tmp: run.frames_to_video(tmp, bar.advance), overwrite=config.overwrite
            ):
                return skipped  # written by another process meanwhile
    except DeeplabError as error:
        return PredictResult(
            input=str(source), status="failed", message=f"{source}: {error}",
            frames=run.written or None,
        )  # fmt: skip
    finally:
        reader.close()
    height, width = reader.size
    result = PredictResult(
        input=str(source), status="written", output=str(out), width=width, height=height,
        classes=run.shares(), seconds=time.perf_counter() - start, frames=run.written,
    )  # fmt: skip
    if reader.ended_early(run.decoded):
        of = f" of {reader.expected}" if reader.expected else ""
        why = f" ({reader.error})" if reader.error else ""
        result.status = "failed"
        result.message = (
            f"{source}: the video ends early{why}: {run.decoded}{of} frames could be decoded; "
            f"the masks of those {run.written} frames were written to {out}. Re-copy or "
            "re-encode the video to segment all of it."
        )
    return result


class _VideoRun:
    """Decode (a thread, one batch ahead) → segment → render, for one video."""

    def __init__(
        self, segmenter: Segmenter, reader: VideoReader, config: PredictConfig,
        palette: np.ndarray, job: VideoJob,
    ) -> None:  # fmt: skip
        self.segmenter, self.reader, self.config = segmenter, reader, config
        self.palette, self.job = palette, job
        self.decoded = self.written = 0
        self.counts = np.zeros(segmenter.num_classes, dtype=np.int64)

    def batches(self) -> Iterator[list[tuple[np.ndarray, np.ndarray]]]:
        """(frame uint8 (H, W, 3), mask (H, W)) pairs, ``batch_size`` at a time."""
        frames = self.reader.frames()
        size = self.config.batch_size
        with ThreadPoolExecutor(1, thread_name_prefix="deeplab-video") as pool:
            ahead = pool.submit(lambda: list(islice(frames, size)))
            while batch := ahead.result():
                self.decoded += len(batch)
                ahead = pool.submit(lambda: list(islice(frames, size)))
                pixels = [torch.from_numpy(f).permute(2, 0, 1) for f in batch]
                masks = [m.cpu().numpy() for m in self.segmenter.masks(pixels)]
                yield list(zip(batch, masks, strict=True))

    def _count(self, mask: np.ndarray, advance: Callable[[], None]) -> None:
        self.counts += np.bincount(mask.ravel(), minlength=len(self.counts))[: len(self.counts)]
        self.written += 1
        advance()

    def frames_to_video(self, path: Path, advance: Callable[[], None]) -> None:
        """Encode the masks of every frame into ``path`` (the output's temporary name)."""
        writer = VideoWriter(path, self.job.output, self.config.format, self.reader.rate,
                             self.reader.size)  # fmt: skip
        try:
            for batch in self.batches():
                for frame, mask in batch:
                    writer.write(self._picture(frame, mask))
                    self._count(mask, advance)
            if not self.written:
                raise VideoReadError(
                    f"no frame could be decoded ({self.reader.error or 'no frames'}). Re-copy "
                    "or re-encode the video."
                )
            writer.close()
        except BaseException:
            writer.abandon()
            raise

    def frames_to_pngs(self, advance: Callable[[], None]) -> None:
        """Write each frame's mask as ``<output>/<frame index, 6 digits>.png``, exactly as
        ``deeplab predict frame.png`` would."""
        names = self.segmenter.class_names
        for batch in self.batches():
            for frame, mask in batch:
                path = self.job.output / f"{self.written:06d}.png"
                write_output(self.config.format, mask, frame, self.palette, names, path,
                             overwrite=True)  # fmt: skip
                self._count(mask, advance)
        if not self.written:
            raise VideoReadError(
                f"no frame could be decoded ({self.reader.error or 'no frames'}). Re-copy or "
                "re-encode the video."
            )

    def _picture(self, frame: np.ndarray, mask: np.ndarray) -> np.ndarray:
        fmt = self.config.format
        if fmt == "index":
            return mask.astype(np.uint8)
        if fmt == "palette":
            return self.palette[mask.astype(np.int64) & 0xFF].astype(np.uint8)
        return blend_classes(frame, mask, self.palette, self.segmenter.class_names)

    def shares(self) -> list[dict[str, Any]]:
        """Classes over all frames written, with their share of the pixels, largest first."""
        return shares_of_counts(self.counts, self.segmenter.class_names) if self.written else []
