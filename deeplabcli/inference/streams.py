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

from ..config import InferenceConfig
from ..config.constants import SMALL_MODEL_BYTES, STREAMED_RUNTIMES
from ..runtimes import ExportedModel
from .backends import InferenceModel
from .segmenter import Segmenter

#: Models with at most this many bytes of parameters run two CPU streams by default, one image
#: per batch. Their layers are too small to keep two threads busy: Google's MobileNetV2 at
#: 257 px takes 19.1 ms per image on 2 threads, 20.1 ms on 1, and 10.2 ms per image as two
#: 1-thread streams side by side (eval on VOC val: 29.0 → 40.7 img/s; six scales 4.44 → 4.78).
#: Batches of 8 already fill the threads, and two streams of them lose (37.6 → 35.3 img/s; six
#: scales 4.57 → 3.70); ResNet-101 at 513 px gains nothing (2.142 vs 2.134 s per image).
#: (:data:`SMALL_MODEL_BYTES`, in ``config.constants``.) Runtime backends whose small models run two streams of one thread each by default (their
#: sessions' threads are fixed when they open, so :func:`planned_streams` decides before).
#: Measured in one process, interleaved, 20 VOC val images, 2 shared cores (medians of 7):
#: ONNX Runtime on the default model 1.34 s on one stream of 2 intra-op threads, 1.19 s on two
#: streams of 1 (torch: 1.28 s); deeplabv3_257_mv_gpu 0.51 → 0.43 s (torch 0.48 s). OpenVINO's
#: network, compiled for latency, runs one request at a time: two streams lose (2.30 → 2.96 s
#: on the default model, CPU busier), so it keeps one (:data:`STREAMED_RUNTIMES`).


def choose_streams(
    segmenter: Segmenter, requested: int | None, batches: int, batch_size: int = 1
) -> int:
    """How many batches run through the network at once: ``requested``, or (None) 2 for a
    small model at batch size 1 on a CPU with 2+ threads, else 1, on torch; on a runtime
    backend the streams its sessions were opened for (:func:`planned_streams`); never more
    than ``batches``."""
    if segmenter.device.type != "cpu" or batches < 2 or segmenter.network.training:
        return 1  # (a network left in training mode is switched per call: one caller only)
    if segmenter.backend != "torch":
        requested = requested or segmenter.options.streams or 1
    if requested is not None:
        return max(1, min(requested, batches))
    if batch_size > 1 or torch.get_num_threads() < 2:
        return 1
    size = sum(p.numel() * p.element_size() for p in segmenter.network.parameters())
    return 2 if size <= SMALL_MODEL_BYTES else 1


def planned_streams(
    model: InferenceModel, options: InferenceConfig, backend: str, batches: int
) -> int | None:
    """``streams`` for the Segmenter that predict or eval builds to run ``batches`` batches of
    ``model`` on ``backend``: as asked; on torch None (:func:`choose_streams` decides); on a
    runtime, whose sessions' threads are fixed when they open, decided now: 2 for a small model
    on a :data:`STREAMED_RUNTIMES` backend at batch size 1, 2+ batches and 2+ threads, else 1."""
    if options.streams is not None or backend == "torch":
        return options.streams
    if isinstance(model, ExportedModel):  # the weights' bytes, about
        files = {model.path, model.path.with_suffix(".bin")}  # (an .onnx file has no .bin)
        size = sum(f.stat().st_size for f in files if f.is_file())
    else:
        size = sum(p.numel() * p.element_size() for p in model.parameters())
    small = size <= SMALL_MODEL_BYTES and options.batch_size == 1
    many = batches >= 2 and torch.get_num_threads() >= 2
    return 2 if backend in STREAMED_RUNTIMES and small and many else 1


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
