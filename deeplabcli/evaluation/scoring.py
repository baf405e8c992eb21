"""The scoring loop of one process: decoded images → Segmenter → confusion matrices.

:class:`Scorer` pulls batches of whole images from a
:class:`~deeplabcli.data.SegmentationLoader` (background worker processes read and validate
them), segments them, adds each image's (label, prediction) pairs to the running confusion
matrix, keeps a score per image and the predictions of the lowest-mIoU images, and measures how
long it waited for data. :func:`deeplabcli.evaluation.protocol.evaluate_dataset` runs one per rank.
"""

from __future__ import annotations

import heapq
import math
import signal
import threading
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from types import FrameType

import numpy as np
import torch

from ..data import SegmentationLoader
from ..data.dataset import Sample, SegmentationDataset
from ..errors import Interrupted
from ..inference.segmenter import Segmenter
from ..inference.streams import choose_streams, compute_streams, submit
from ..progress import ProgressHandle
from .metrics import ConfusionMatrix, compute_metrics
from .result import ImageScore, WorstImage


class Scorer:
    """The scoring loop of one rank: loader → segmenter → confusion matrices."""

    def __init__(self, segmenter: Segmenter, dataset: SegmentationDataset, keep: int) -> None:
        self.segmenter = segmenter
        self.dataset = dataset
        self.keep = keep
        self.matrix = ConfusionMatrix(dataset.num_classes)
        self.scores: list[ImageScore] = []
        self._worst: list[tuple[float, int, WorstImage]] = []  # heap: least bad on top
        self.load_wait = 0.0  # seconds spent waiting for decoded batches
        self.first_wait = 0.0  # of which for the first batch (worker start-up included)
        self.loop_seconds = 0.0

    def run(self, indices: list[int], workers: int, bar: ProgressHandle) -> None:
        """Score the images at ``indices`` in batches of the segmenter's batch size, read by
        ``workers`` background processes, on its streams."""
        if not indices:
            return
        batch_size = self.segmenter.options.batch_size
        batches_count = -(-len(indices) // batch_size)
        streams = choose_streams(
            self.segmenter, self.segmenter.options.streams, batches_count, batch_size
        )
        loader = SegmentationLoader(
            self.dataset,
            batch_size=batch_size,
            sampler=indices,
            num_workers=min(workers, len(indices)),
            prefetch_factor=4 if workers else None,
        )
        start = time.perf_counter()
        with sigterm_raises():
            batches = iter(loader)  # a generator (SegmentationLoader.__iter__)
            try:
                self._consume(batches, bar, streams)
            finally:
                # Ending the generator drops the DataLoader iterator it holds, which shuts the
                # worker processes down, even while a traceback still refers to this frame.
                batches.close()  # type: ignore[attr-defined]
                self.loop_seconds = time.perf_counter() - start

    def _consume(self, batches: Iterator[list[Sample]], bar: ProgressHandle, streams: int) -> None:
        """Predict each batch (up to ``streams`` at once) and score it here, in order."""
        running: deque[tuple[list[Sample], Future[list[torch.Tensor]]]] = deque()
        with compute_streams(streams) as compute:
            while True:
                waited = time.perf_counter()
                batch = next(batches, None)
                waited = time.perf_counter() - waited
                self.first_wait = self.first_wait or waited
                self.load_wait += waited
                if batch is not None:
                    for sample in batch:  # before any of the batch runs: one clear error
                        name = f"'{sample.id}' ({sample.image_path})"
                        self.segmenter.check_size(sample.image.shape[:2], name)
                    pixels = [torch.from_numpy(s.image).permute(2, 0, 1) for s in batch]
                    running.append((batch, submit(compute, self.segmenter.masks, pixels)))
                while running and (batch is None or len(running) >= streams):
                    done, future = running.popleft()
                    for sample, prediction in zip(done, future.result(), strict=True):
                        self._add(sample.index, sample.id, sample.mask, prediction)
                    miou = compute_metrics(self.matrix.matrix, self.dataset.class_names).miou
                    bar.advance(len(done), mIoU=miou)
                if batch is None:
                    return

    def _add(self, index: int, image_id: str, mask: np.ndarray, prediction: torch.Tensor) -> None:
        label = torch.from_numpy(mask).to(prediction.device)
        own = compute_metrics(self.matrix.update(label, prediction), self.dataset.class_names)
        score = ImageScore(index, image_id, own.miou, own.pixel_accuracy, own.pixels)
        self.scores.append(score)
        if self.keep and not math.isnan(score.miou):
            entry = (-score.miou, -index, WorstImage(score, prediction.cpu().numpy()))
            if len(self._worst) < self.keep:
                heapq.heappush(self._worst, entry)
            elif entry[:2] > self._worst[0][:2]:
                heapq.heapreplace(self._worst, entry)

    def worst(self) -> list[WorstImage]:
        return [w for _, _, w in self._worst]


@contextmanager
def sigterm_raises() -> Iterator[None]:
    """While nobody else handles SIGTERM, turn it into :class:`Interrupted`, so the loader's
    worker processes are shut down instead of being orphaned by a hard exit."""
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
    ):
        yield
        return

    def stop(signum: int, frame: FrameType | None) -> None:
        raise Interrupted(
            "the evaluation was stopped by SIGTERM; nothing was written. Run it again to get "
            "the metrics.",
            128 + signum,
        )

    signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
