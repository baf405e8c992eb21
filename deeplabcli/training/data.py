"""The training batches: the paper's augmentation in a deterministic, resumable order.

The order and every augmentation are pure functions of (seed, position in the sample stream)
(:class:`~deeplabcli.data.dataset.SeededSampler`): iteration ``i`` consumes positions
``i·B .. (i+1)·B − 1`` of the global batch ``B``, and under ``torchrun`` rank ``r`` takes the
positions ``≡ r (mod world size)``, so the global batch is the same for any number of processes
and a resumed run starts at position ``i·B`` without replaying anything.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

import torch

from ..config import Preprocessing, TrainConfig
from ..data.dataset import SeededSampler, SegmentationDataset, SegmentationLoader
from ..data.transforms import TrainTransform
from ..distributed import World
from ..signals import ignore_sigint

T = TypeVar("T")


class OneThread:
    """Run a paired transform with one intra-op thread, as DataLoader workers do: torch's
    resampling kernels round differently with other thread counts, and augmentations must not
    depend on whether a worker or the main process computes them (exact resume)."""

    def __init__(self, transform: Any) -> None:
        self.transform = transform

    def __call__(self, image: Any, mask: Any, generator: torch.Generator | None) -> Any:
        threads = torch.get_num_threads()
        if threads == 1:
            return self.transform(image, mask, generator)
        torch.set_num_threads(1)
        try:
            return self.transform(image, mask, generator)
        finally:
            torch.set_num_threads(threads)


def training_loader(
    dataset: SegmentationDataset,
    preprocessing: Preprocessing,
    config: TrainConfig,
    world: World,
    *,
    position: int = 0,
    pin_memory: bool = False,
) -> SegmentationLoader:
    """Batches ``{"image": float32 (b, 3, S, S), "mask": int64 (b, S, S), "index": (b,)}`` of
    this rank (``b = batch_size / world size``, ``S = crop_size``) from sample ``position`` of
    the run's sample stream (a resumed run: its saved ``data_position``) to the end of the
    last iteration."""
    transform = OneThread(TrainTransform(preprocessing, crop_size=config.crop_size))
    sampler = SeededSampler(
        len(dataset),
        config.seed,
        total=config.iters * config.batch_size,
        start=position,
        rank=world.rank,
        world_size=world.size,
    )
    return SegmentationLoader(
        dataset.with_transform(transform),
        batch_size=config.batch_size // world.size,
        sampler=sampler,
        num_workers=config.workers,
        pin_memory=pin_memory,
        worker_init_fn=ignore_sigint,
        generator=torch.Generator().manual_seed(config.seed),  # never draws from the global one
    )


def drawn_ahead(batches: Iterable[T]) -> Iterator[T]:
    """``batches`` with the first one already drawn: what only shows when data is read (an
    unreadable image, a crop the transform cannot make) fails here, before a run directory is
    touched. Draws come from the loader's own seeded generators, so nothing else changes."""
    iterator = iter(batches)
    try:
        first = next(iterator)
    except StopIteration:
        return iter(())
    return itertools.chain((first,), iterator)
