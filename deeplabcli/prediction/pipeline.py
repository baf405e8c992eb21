"""``deeplab predict`` as a library: image files, folders, globs and videos → masks.

:func:`predict_files` plans one output per input image (see :func:`plan_outputs`), decodes
inputs and writes outputs on background threads while the network runs on batches of images
whose network inputs have equal sizes (on the calling thread, or on a CPU on several streams
side by side: see :func:`choose_streams`), and keeps going past bad inputs: each
one becomes a failed :class:`PredictResult` whose message names the file and the reason. Under
``torchrun`` the images are sharded across ranks, so each output is written exactly once.
Videos go frame by frame through :mod:`.video` after the images.

The in-memory forms, :func:`predict` and :func:`predict_batch`, live in :mod:`.arrays`.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass

import numpy as np
import torch

from ..config import PredictConfig
from ..data.images import read_image
from ..data.palette import palette_for
from ..distributed import all_reduce_sum, device_for, process_group, shard
from ..errors import DeeplabError
from ..inference import Segmenter, is_out_of_memory
from ..inference.backends import InferenceModel, plan_backend
from ..inference.streams import choose_streams, compute_streams, planned_streams, submit
from ..progress import progress_bar
from .inputs import Job, plan_outputs
from .outputs import PROBABILITY_FORMATS, check_format, output_suffix
from .results import (
    PredictResult,
    PredictSummary,
    class_shares,  # noqa: F401  (still importable from here)
    write_result,
)
from .results import failed_result as _failed
from .results import skipped_result as _exists
from .video import plan_videos, predict_video, split_videos


@dataclass
class _Decoded:
    job: Job
    pixels: torch.Tensor  # uint8 (3, H, W)
    seconds: float

    @property
    def size(self) -> tuple[int, int]:
        return int(self.pixels.shape[1]), int(self.pixels.shape[2])


def predict_files(
    model: InferenceModel | Segmenter,
    inputs: Sequence[str],
    config: PredictConfig | None = None,
    *,
    on_result: Callable[[PredictResult], None] | None = None,
    progress: bool = True,
    inplace: bool = False,
    reference: str | os.PathLike | bool | None = False,
) -> PredictSummary:
    """Segment every image named by ``inputs`` (files, folders searched recursively, globs) and
    write one mask per image as ``config`` says. ``on_result`` is called on the calling thread
    as each input finishes; a progress bar shows for more than one image unless ``progress`` is
    False. Option mistakes raise :class:`ConfigError`; bad inputs become failed results.

    ``model`` may also be a ready :class:`Segmenter` (reused across calls); its own output
    stride, scales, flip and device are then used, so ``config`` must leave those unset.
    ``inplace`` optimises ``model`` itself rather than a copy (see :class:`Segmenter`).
    ``model`` may be an exported file (:func:`~deeplabcli.runtimes.load_exported`), and
    ``config.backend`` another runtime (``reference``: see :class:`Segmenter`); every written
    record names the backend that ran.
    """
    config = config or PredictConfig()
    options = (config.output_stride, config.scales, config.flip, config.device, config.tile)
    if isinstance(model, Segmenter) and options != (None, (1.0,), False, "auto", None):
        raise ValueError("a ready Segmenter brings its own OS, scales, flip, device and tiles")
    check_format(config.format, model.config.num_classes)
    start = time.perf_counter()
    if isinstance(model, Segmenter):
        backend, device = model.backend, model.device
    else:
        backend, device = plan_backend(model, config)
    videos, images = split_videos(inputs)
    videos_planned, video_problems = plan_videos(
        videos, config, images=len(images), classes=model.config.num_classes
    )
    with process_group(device) as world:
        jobs, problems = (
            plan_outputs(images, config.output, output_suffix(config.format))
            if images or not videos
            else ([], [])
        )
        jobs, video_jobs = shard(jobs, world), shard(videos_planned, world)
        early = [
            PredictResult(input=name, status="failed", message=message)
            for name, message in (problems + video_problems if world.is_main else [])
        ]
        if isinstance(model, Segmenter):
            segmenter = model
        else:
            batches = -(-len(jobs) // config.batch_size)  # a runtime's threads are set now
            options = config.inference.replace(
                device=device_for(world, device), backend=backend,
                streams=planned_streams(model, config, backend, batches),
            )  # fmt: skip
            segmenter = Segmenter(model, options, inplace=inplace, reference=reference)
        results: list[PredictResult] = []
        total = len(jobs) + len(early)
        with progress_bar(
            total, "Predicting", disable=not progress or total <= 1 or not world.is_main, unit="img"
        ) as bar:

            def finish(result: PredictResult) -> None:
                if result.status == "written":
                    result.backend, result.precision = segmenter.backend, segmenter.precision
                results.append(result)
                if on_result is not None:
                    on_result(result)
                bar.advance()

            for failure in early:
                finish(failure)
            _Pipeline(segmenter, config, finish).run(jobs)
        palette, show = palette_for(segmenter.num_classes), progress and world.is_main
        for video in video_jobs:  # each with its own progress bar, in frames
            results.append(predict_video(segmenter, video, config, palette, progress=show))
            if results[-1].status == "written":
                results[-1].backend, results[-1].precision = segmenter.backend, segmenter.precision
            if on_result is not None:
                on_result(results[-1])
        counts = torch.tensor(
            [sum(r.status == s for r in results) for s in ("written", "skipped", "failed")]
            + [sum(r.frames or 0 for r in results)]
        )
        written, skipped, failed, frames = (int(v) for v in all_reduce_sum(counts))
    seconds = time.perf_counter() - start
    return PredictSummary(results, written, skipped, failed, seconds, frames)


class _Pipeline:
    """Decode (threads) → batch → network (this thread, or ``streams`` threads side by side)
    → render and write (threads). Results are reported on this thread."""

    def __init__(
        self,
        segmenter: Segmenter,
        config: PredictConfig,
        finish: Callable[[PredictResult], None],
    ) -> None:
        self.segmenter = segmenter
        self.config = config
        self.finish = finish
        self.palette = palette_for(segmenter.num_classes)

    def run(self, jobs: Sequence[Job]) -> None:
        todo = []
        for job in jobs:
            if job.output.exists() and not self.config.overwrite:
                self.finish(_exists(job))
            else:
                todo.append(job)
        batches = -(-len(todo) // self.config.batch_size)
        self.streams = choose_streams(
            self.segmenter, self.config.streams, batches, self.config.batch_size
        )
        # decoded images waiting for the network
        self.window = max(4, 2 * self.config.batch_size * self.streams)
        queue = iter(todo)
        loads: deque[Future[_Decoded | PredictResult]] = deque()
        running: deque[tuple[list[_Decoded], Future[tuple[list[np.ndarray], float]]]] = deque()
        writes: deque[Future[PredictResult]] = deque()
        pending: list[_Decoded] = []
        with (
            ThreadPoolExecutor(self.config.workers, thread_name_prefix="deeplab-io") as pool,
            compute_streams(self.streams) as compute,
        ):
            while True:
                while len(loads) + len(pending) < self.window and (job := next(queue, None)):
                    loads.append(pool.submit(_decode, job, self.segmenter.check_size))
                batch = (
                    self._next_batch(pending, more_coming=bool(loads))
                    if len(running) < self.streams
                    else []
                )
                if batch:
                    running.append((batch, submit(compute, self._masks, batch)))
                elif running and (running[0][1].done() or not loads):
                    self._collect(*running.popleft(), pool, writes)
                elif loads:
                    if running:  # whichever comes first: a decoded image or a finished batch
                        wait([loads[0], running[0][1]], return_when=FIRST_COMPLETED)
                        if not loads[0].done():
                            continue
                    loaded = loads.popleft().result()
                    if isinstance(loaded, PredictResult):
                        self.finish(loaded)
                    else:
                        pending.append(loaded)
                else:
                    break
                while writes and writes[0].done():
                    self.finish(writes.popleft().result())
            while writes:
                self.finish(writes.popleft().result())

    def _next_batch(self, pending: list[_Decoded], *, more_coming: bool) -> list[_Decoded]:
        """Up to batch_size pending images sharing the oldest one's network input size; empty
        while more could still join and the window is not full."""
        if not pending:
            return []
        key = self.segmenter.batch_key(pending[0].size)
        same = [d for d in pending if self.segmenter.batch_key(d.size) == key]
        size = self.config.batch_size
        if len(same) < size and more_coming and len(pending) < self.window:
            return []
        batch = same[:size]
        for item in batch:
            pending.remove(item)
        return batch

    def _masks(self, batch: list[_Decoded]) -> tuple[list[np.ndarray], float]:
        """The batch's class maps (or probabilities, for probs/confidence) and the seconds they
        took (runs on a compute stream)."""
        start = time.perf_counter()
        probs = self.config.format in PROBABILITY_FORMATS
        run = self.segmenter.probability_maps if probs else self.segmenter.masks
        masks = [m.cpu().numpy() for m in run([d.pixels for d in batch])]
        return masks, time.perf_counter() - start

    def _collect(
        self,
        batch: list[_Decoded],
        future: Future[tuple[list[np.ndarray], float]],
        pool: ThreadPoolExecutor,
        writes: deque[Future[PredictResult]],
    ) -> None:
        try:
            masks, seconds = future.result()
        except (RuntimeError, MemoryError) as error:
            if not is_out_of_memory(error):
                raise
            if len(batch) > 1:  # retry one image at a time, here
                for item in batch:
                    self._collect([item], submit(None, self._masks, [item]), pool, writes)
                return
            height, width = batch[0].size
            message = (
                f"ran out of memory segmenting this {width}×{height} image on "
                f"{self.segmenter.device.type}. Downscale it, or use fewer --scales."
            )
            self.finish(_failed(batch[0].job, message))
            return
        share = seconds / len(batch)
        for item, mask in zip(batch, masks, strict=True):
            writes.append(pool.submit(self._write, item, mask, item.seconds + share))
        while len(writes) > self.window:  # bound the masks waiting to be written
            self.finish(writes.popleft().result())

    def _write(self, item: _Decoded, result: np.ndarray, seconds: float) -> PredictResult:
        photo = item.pixels.permute(1, 2, 0).numpy()
        return write_result(
            item.job, self.config.format, result, photo, self.palette,
            self.segmenter.class_names, overwrite=self.config.overwrite, seconds=seconds,
        )  # fmt: skip


def _decode(job: Job, check: Callable[[tuple[int, int]], None]) -> _Decoded | PredictResult:
    """Read ``job``'s image and ``check`` its (H, W) (the segmenter's scale limit), so a bad
    image fails alone instead of taking its batch down."""
    start = time.perf_counter()
    try:
        image = read_image(job.source)
    except DeeplabError as error:
        return PredictResult(input=str(job.source), status="failed", message=str(error))
    try:
        check((image.height, image.width))
    except DeeplabError as error:
        return _failed(job, str(error))
    pixels = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1)
    return _Decoded(job, pixels, time.perf_counter() - start)
