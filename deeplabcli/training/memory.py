"""Will a training step fit in memory? An estimate before training, a clear error during it.

The estimate runs the model once on a small probe batch and adds up the tensors autograd saves
for the backward pass (each storage counted once); activation memory grows with the pixel
count, so it is scaled to the real crop and batch. Weights, gradients and SGD momentum add three
copies of the parameters. The figure is approximate (allocator overhead and workspace are not
counted), so a run is refused only when the estimate alone exceeds the memory available.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from ..errors import InsufficientMemoryError
from ..inference.device import is_out_of_memory

GIB = 1024**3
PROBE_SIZE = 65  # probe crop side; any size ≥ the output stride works, scaling is by area


def estimate_training_bytes(model: nn.Module, crop_size: int, batch_size: int) -> int:
    """Approximate peak bytes of one training step of ``model`` on ``batch_size`` float32
    crops of ``crop_size``² (the model stays unchanged: the probe runs in eval mode)."""
    device = next(model.parameters()).device
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    weights |= {b.untyped_storage().data_ptr() for b in model.buffers()}
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in weights:  # weights do not grow with the crop
            storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    was_training = model.training
    model.eval()  # no BN statistics updates, no dropout draws from the global generator
    try:
        probe = torch.zeros(2, 3, PROBE_SIZE, PROBE_SIZE, device=device, requires_grad=True)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), torch.enable_grad():
            outputs = model(probe)
            del outputs
    finally:
        model.train(was_training)
    activations = sum(storages.values()) * (crop_size / PROBE_SIZE) ** 2 * batch_size / 2
    parameters = sum(p.numel() * p.element_size() for p in model.parameters())
    inputs = batch_size * crop_size * crop_size * (3 * 4 + 8)  # float image + int64 mask
    return int(activations + 3 * parameters + 2 * inputs)


def available_bytes(device: torch.device) -> int:
    """Free memory on ``device``: CUDA's free memory, or the host's available RAM."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def _advice(crop_size: int, batch_size: int, accumulate: int = 1) -> str:
    where = "per micro-batch" if accumulate > 1 else "per process"
    crops = f"{batch_size} crops" if batch_size != 1 else "one crop"
    return f"{crops} of {crop_size}x{crop_size} {where}"


def _fixes(batch_size: int, accumulate: int) -> str:
    """How to fit: first the routes that keep the recipe's step (more micro-batches, more
    processes), then those that change it."""
    if batch_size == 1:
        return "Lower --crop-size (a micro-batch of one crop is the smallest step)."
    per_process = batch_size * accumulate
    more = next(d for d in range(accumulate + 1, per_process + 1) if per_process % d == 0)
    return (
        f"Keep the step with --accumulate {more} ({per_process // more} "
        f"crop{'s' if per_process // more > 1 else ''} per micro-batch) or more processes "
        "under torchrun; else lower --crop-size or --batch-size."
    )


def check_training_memory(
    model: nn.Module, crop_size: int, batch_size: int, device: torch.device, *, accumulate: int = 1
) -> int:
    """Raise :class:`InsufficientMemoryError` when the estimate for micro-batches of
    ``batch_size`` crops (``accumulate`` of them per step) exceeds the available memory;
    return the estimate (bytes)."""
    need = estimate_training_bytes(model, crop_size, batch_size)
    have = available_bytes(device)
    if need > have:
        raise InsufficientMemoryError(
            f"training with {_advice(crop_size, batch_size, accumulate)} needs about "
            f"{need / GIB:.1f} GiB, but {device.type} has {have / GIB:.1f} GiB available. "
            f"{_fixes(batch_size, accumulate)}"
        )
    return need


@contextmanager
def out_of_memory_as_error(
    crop_size: int, batch_size: int, device: torch.device, *, accumulate: int = 1
) -> Iterator[None]:
    """Turn an out-of-memory failure inside the block (micro-batches of ``batch_size`` crops)
    into one clear :class:`InsufficientMemoryError`."""
    try:
        yield
    except (RuntimeError, MemoryError) as error:
        if not is_out_of_memory(error):
            raise
        raise InsufficientMemoryError(
            f"training with {_advice(crop_size, batch_size, accumulate)} ran out of memory on "
            f"{device.type}. {_fixes(batch_size, accumulate)}"
        ) from None
