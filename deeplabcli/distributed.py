"""Small helpers for running under ``torchrun``: who am I, a process group, sharding, reductions.

Everything works in a plain single process too (rank 0 of 1), so engines call these helpers
unconditionally. ``torchrun`` sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; the process group
uses gloo on CPU and NCCL on CUDA.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")


@dataclass(frozen=True)
class World:
    """This process's place in a (possibly single-process) job."""

    rank: int = 0  # global rank, 0 .. size-1
    size: int = 1  # number of processes
    local_rank: int = 0  # rank on this machine (picks the CUDA device)

    @property
    def is_main(self) -> bool:
        """True on the process that prints summaries and writes shared files."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def world_from_env() -> World:
    """Rank, world size and local rank from torchrun's environment (defaults: 0, 1, 0)."""
    rank = int(os.environ.get("RANK", "0"))
    size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    return World(rank=rank, size=size, local_rank=local_rank)


def current_world() -> World:
    """The running process group's rank and size if one is initialised, else the environment's."""
    if dist.is_available() and dist.is_initialized():
        env = world_from_env()
        return World(rank=dist.get_rank(), size=dist.get_world_size(), local_rank=env.local_rank)
    return world_from_env()


def device_for(world: World, device: str | torch.device = "cpu") -> torch.device:
    """The device this rank should use: ``cuda`` becomes ``cuda:<local_rank>``."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None and world.distributed:
        return torch.device("cuda", world.local_rank)
    return device


def backend_for(device: str | torch.device) -> str:
    """``nccl`` for CUDA devices, ``gloo`` otherwise."""
    return "nccl" if torch.device(device).type == "cuda" else "gloo"


@contextmanager
def process_group(device: str | torch.device = "cpu") -> Iterator[World]:
    """Initialise the default process group when launched by torchrun (and not yet initialised),
    yield this process's :class:`World`, and tear the group down afterwards.

    In a single process nothing is initialised and ``World(0, 1, 0)`` is yielded.
    """
    world = world_from_env()
    owned = False
    if world.distributed and dist.is_available() and not dist.is_initialized():
        device = device_for(world, device)
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend_for(device))
        owned = True
    try:
        yield current_world()
    finally:
        if owned and dist.is_initialized():
            dist.destroy_process_group()


def shard(items: Sequence[T], world: World) -> list[T]:
    """This rank's share of ``items``: every ``size``-th item starting at ``rank``.

    Shards are disjoint and together cover ``items`` exactly once, in a deterministic order
    (all ranks must pass the same sequence).

    >>> shard(list(range(7)), World(rank=1, size=3))
    [1, 4]
    """
    return list(items[world.rank :: world.size])


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over all ranks in place and return it (a no-op in a single process).

    Under NCCL a CPU tensor is reduced through this rank's CUDA device and copied back.
    """
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        if dist.get_backend() == "nccl" and tensor.device.type != "cuda":
            work = tensor.to(torch.device("cuda", torch.cuda.current_device()))
            dist.all_reduce(work, op=dist.ReduceOp.SUM)
            tensor.copy_(work.cpu())
        else:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def barrier() -> None:
    """Wait for every rank (a no-op in a single process)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def all_gather_objects(obj: T) -> list[T]:
    """Every rank's ``obj`` (any picklable value) in rank order; ``[obj]`` in a single process."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        gathered: list[T] = [obj] * dist.get_world_size()
        dist.all_gather_object(gathered, obj)
        return gathered
    return [obj]


def any_rank(flag: bool) -> bool:
    """True on every rank when ``flag`` is true on at least one (``flag`` in a single process)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return bool(all_reduce_sum(torch.tensor([int(flag)])).item())
    return flag
