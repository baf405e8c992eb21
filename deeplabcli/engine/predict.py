"""``deeplab predict`` as a library: image files, folders and globs → mask PNGs.

:func:`predict_files` plans one output per input image (see :func:`plan_outputs`), decodes
inputs and writes outputs on background threads while the network runs on batches of images
whose network inputs have equal sizes (on the calling thread, or on a CPU on several streams
side by side: see :func:`choose_streams`), and keeps going past bad inputs: each
one becomes a failed :class:`PredictResult` whose message names the file and the reason. Under
``torchrun`` the images are sharded across ranks, so each output is written exactly once.

:func:`predict` and :func:`predict_batch` are the in-memory forms.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..config import PredictConfig
from ..data.palette import palette_for
from ..errors import ConfigError, DeeplabError
from ..models import DeepLabV3
from ..progress import progress_bar
from .distributed import all_reduce_sum, device_for, process_group, shard
from .images import index_png, overlay_png, palette_png, read_image, write_png
from .inference import ImageLike, Segmenter, _device_of, resolve_device
from .inputs import Job, plan_outputs
from .memory import is_out_of_memory
from .streams import choose_streams, compute_streams, submit


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

    def to_json(self) -> dict[str, Any]:
        """A JSON record: always input/status, then the fields that apply to the status."""
        record: dict[str, Any] = {"input": self.input, "status": self.status}
        if self.output is not None:
            record["output"] = self.output
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

    @property
    def failures(self) -> list[PredictResult]:
        return [r for r in self.results if r.status == "failed"]


@dataclass
class _Decoded:
    job: Job
    pixels: torch.Tensor  # uint8 (3, H, W)
    seconds: float

    @property
    def size(self) -> tuple[int, int]:
        return int(self.pixels.shape[1]), int(self.pixels.shape[2])


def class_shares(mask: np.ndarray, class_names: Sequence[str]) -> list[dict[str, Any]]:
    """Classes present in ``mask`` (H, W) with their share of the pixels, largest first."""
    counts = np.bincount(mask.ravel().astype(np.int64), minlength=len(class_names))
    present = sorted(np.flatnonzero(counts), key=lambda c: (-counts[c], c))
    return [
        {
            "index": int(c),
            "name": class_names[c] if c < len(class_names) else str(c),
            "share": round(float(counts[c]) / mask.size, 6),
        }
        for c in present
    ]


def predict_files(
    model: DeepLabV3 | Segmenter,
    inputs: Sequence[str],
    config: PredictConfig | None = None,
    *,
    on_result: Callable[[PredictResult], None] | None = None,
    progress: bool = True,
    inplace: bool = False,
) -> PredictSummary:
    """Segment every image named by ``inputs`` (files, folders searched recursively, globs) and
    write one mask per image as ``config`` says. ``on_result`` is called on the calling thread
    as each input finishes; a progress bar shows for more than one image unless ``progress`` is
    False. Option mistakes raise :class:`ConfigError`; bad inputs become failed results.

    ``model`` may also be a ready :class:`Segmenter` (reused across calls); its own output
    stride, scales, flip and device are then used, so ``config`` must leave those unset.
    ``inplace`` optimises ``model`` itself rather than a copy (see :class:`Segmenter`).
    """
    config = config or PredictConfig()
    options = (config.output_stride, config.scales, config.flip, config.device)
    if isinstance(model, Segmenter) and options != (None, (1.0,), False, "auto"):
        raise ValueError("a ready Segmenter brings its own OS, scales, flip and device")
    if config.format != "index" and model.config.num_classes > 256:
        raise ConfigError(
            f"{config.format} masks hold at most 256 classes, the model has "
            f"{model.config.num_classes}. Use --format index."
        )
    start = time.perf_counter()
    device = model.device if isinstance(model, Segmenter) else resolve_device(config.device)
    with process_group(device) as world:
        jobs, problems = plan_outputs(inputs, config.output)
        jobs = shard(jobs, world)
        early = [
            PredictResult(input=name, status="failed", message=message)
            for name, message in (problems if world.is_main else [])
        ]
        segmenter = (
            model
            if isinstance(model, Segmenter)
            else Segmenter(
                model,
                output_stride=config.output_stride,
                scales=config.scales,
                flip=config.flip,
                device=device_for(world, device),
                inplace=inplace,
            )
        )
        results: list[PredictResult] = []
        total = len(jobs) + len(early)
        with progress_bar(
            total, "Predicting", disable=not progress or total <= 1 or not world.is_main, unit="img"
        ) as bar:

            def finish(result: PredictResult) -> None:
                results.append(result)
                if on_result is not None:
                    on_result(result)
                bar.advance()

            for failure in early:
                finish(failure)
            _Pipeline(segmenter, config, finish).run(jobs)
        counts = torch.tensor(
            [sum(r.status == s for r in results) for s in ("written", "skipped", "failed")]
        )
        written, skipped, failed = (int(v) for v in all_reduce_sum(counts))
    return PredictSummary(results, written, skipped, failed, time.perf_counter() - start)


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
                    loads.append(pool.submit(_decode, job))
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
        """The batch's class maps and the seconds they took (runs on a compute stream)."""
        start = time.perf_counter()
        masks = [m.cpu().numpy() for m in self.segmenter.masks([d.pixels for d in batch])]
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

    def _write(self, item: _Decoded, mask: np.ndarray, seconds: float) -> PredictResult:
        start = time.perf_counter()
        job = item.job
        fmt = self.config.format
        if fmt == "palette":
            image = palette_png(mask, self.palette)
        elif fmt == "index":
            image = index_png(mask)
        else:
            photo = item.pixels.permute(1, 2, 0).numpy()
            image = overlay_png(photo, mask, self.palette, self.segmenter.class_names)
        try:
            if not write_png(image, job.output, overwrite=self.config.overwrite):
                return _exists(job)
        except DeeplabError as error:
            return _failed(job, str(error), output=str(job.output))
        return PredictResult(
            input=str(job.source),
            status="written",
            output=str(job.output),
            width=mask.shape[1],
            height=mask.shape[0],
            classes=class_shares(mask, self.segmenter.class_names),
            seconds=seconds + time.perf_counter() - start,
        )


def _decode(job: Job) -> _Decoded | PredictResult:
    start = time.perf_counter()
    try:
        image = read_image(job.source)
    except DeeplabError as error:
        return PredictResult(input=str(job.source), status="failed", message=str(error))
    pixels = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1)
    return _Decoded(job, pixels, time.perf_counter() - start)


def _exists(job: Job) -> PredictResult:
    return PredictResult(
        input=str(job.source),
        status="skipped",
        output=str(job.output),
        message=f"{job.output}: already exists, not replaced. Use --overwrite to replace it.",
    )


def _failed(job: Job, message: str, *, output: str | None = None) -> PredictResult:
    return PredictResult(
        input=str(job.source), status="failed", output=output, message=f"{job.source}: {message}"
    )


# ---------------------------------------------------------------------- in-memory API
def _segmenter(
    model: DeepLabV3 | Segmenter,
    output_stride: int | None,
    scales: Sequence[float],
    flip: bool,
    device: str | None,
) -> Segmenter:
    if isinstance(model, Segmenter):
        return model
    return Segmenter(
        model,
        output_stride=output_stride,
        scales=scales,
        flip=flip,
        device=device or _device_of(model),
        optimize=False,
    )


def predict(
    model: DeepLabV3 | Segmenter,
    image: ImageLike,
    *,
    output_stride: int | None = None,
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    device: str | None = None,
) -> np.ndarray:
    """Class map of one image (a PIL image, an (H, W[, 3|4]) array or a path): uint8 (H, W)
    at the image's own size (int64 for models with more than 256 classes).

    ``model`` runs as it is on its own device (or ``device``); for many images build a
    :class:`~deeplabcli.engine.inference.Segmenter` once (it also optimises the network) and
    pass it instead of the model.

    >>> from deeplabcli import build_model
    >>> mask = predict(build_model("deeplabv3_tiny"), np.zeros((40, 60, 3), np.uint8))
    >>> mask.shape, mask.dtype
    ((40, 60), dtype('uint8'))
    """
    return predict_batch(
        model, [image], output_stride=output_stride, scales=scales, flip=flip, device=device
    )[0]


def predict_batch(
    model: DeepLabV3 | Segmenter,
    images: Sequence[ImageLike],
    *,
    output_stride: int | None = None,
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    device: str | None = None,
) -> list[np.ndarray]:
    """Class maps of several images (see :func:`predict`); equal-size inputs share a batch."""
    return _segmenter(model, output_stride, scales, flip, device).predict_batch(images)
