"""Compute streams: batches that run through the network side by side on a CPU.

A small network's layers cannot keep many threads busy (each operation is short, and waking
the threads costs a fixed time), so running two images at once, each on half the threads, gets
more images through than one image on all of them. Used by ``deeplab predict`` and ``eval``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import torch

from .segmenter import Segmenter

#: Models with at most this many bytes of parameters run two CPU streams by default, one image
#: per batch. Their layers are too small to keep two threads busy: Google's MobileNetV2 at
#: 257 px takes 19.1 ms per image on 2 threads, 20.1 ms on 1, and 10.2 ms per image as two
#: 1-thread streams side by side (eval on VOC val: 29.0 → 40.7 img/s; six scales 4.44 → 4.78).
#: Batches of 8 already fill the threads, and two streams of them lose (37.6 → 35.3 img/s; six
#: scales 4.57 → 3.70); ResNet-101 at 513 px gains nothing (2.142 vs 2.134 s per image).
SMALL_MODEL_BYTES = 32 * 2**20


def choose_streams(
    segmenter: Segmenter, requested: int | None, batches: int, batch_size: int = 1
) -> int:
    """How many batches run through the network at once: ``requested``, or (None) 2 for a
    small model at batch size 1 on a CPU with 2+ threads, else 1; never more than ``batches``."""
    if segmenter.device.type != "cpu" or batches < 2 or segmenter.network.training:
        return 1  # (a network left in training mode is switched per call: one caller only)
    if requested is not None:
        return max(1, min(requested, batches))
    if batch_size > 1 or torch.get_num_threads() < 2:
        return 1
    size = sum(p.numel() * p.element_size() for p in segmenter.network.parameters())
    return 2 if size <= SMALL_MODEL_BYTES else 1


@contextmanager
def compute_streams(streams: int) -> Iterator[ThreadPoolExecutor | None]:
    """``streams`` threads sharing this process's intra-op threads (None for one stream, which
    runs on the calling thread). Torch's thread count is process-wide: restored on exit."""
    if streams == 1:
        yield None
        return
    threads = torch.get_num_threads()
    per_stream = max(1, threads // streams)
    try:
        with ThreadPoolExecutor(
            streams, "deeplab-net", initializer=torch.set_num_threads, initargs=(per_stream,)
        ) as pool:
            yield pool
    finally:
        torch.set_num_threads(threads)


def submit(pool: ThreadPoolExecutor | None, fn: Callable[..., Any], *args: Any) -> Future[Any]:
    """``pool.submit(fn, *args)``, or run it now on this thread when there is no pool."""
    if pool is not None:
        return pool.submit(fn, *args)
    future: Future[Any] = Future()
    try:
        future.set_result(fn(*args))
    except BaseException as error:  # delivered by future.result(), as from a pool
        future.set_exception(error)
    return future
