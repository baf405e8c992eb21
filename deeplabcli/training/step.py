"""One optimisation step: the paper's loss and SGD, gradient accumulation, the exact loss of
the global batch under torchrun, and CUDA mixed precision when asked.

The loss is cross-entropy on logits at the label size over the labelled pixels (255 ignored),
plus ``aux_weight`` × the same loss on the auxiliary head's logits when the model has one. The
model returns its logits at the feature size (``upsample=False``); they are upsampled to the
labels here, in float32 outside autocast (so AMP never rounds what the loss sees), never the
labels downsampled.

One step takes the global batch of B images. Under torchrun each of P processes holds B / P of
them, and with ``accumulate`` = N it runs them as N micro-batches of B / (P·N). Every micro-batch
backpropagates ``P · Σ CE(its labelled pixels) / (labelled pixels of the whole global batch)``:
the count is all-reduced before the first micro-batch, and the factor P undoes DDP's averaging
of gradients over processes. The summed gradient is then the gradient of the global-batch loss
``Σ CE / count`` for any split over processes and micro-batches: with BN frozen, a split step
equals one process holding the whole batch (to float rounding). Trained BN normalises each
micro-batch with its own statistics (synchronised over the processes), so accumulation shrinks
BN's batch to B / N. Gradients are all-reduced once per step, in the last micro-batch's backward
(DDP's ``no_sync`` for the others).
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from .. import distributed as D
from ..config import IGNORE_INDEX, TrainConfig
from ..errors import ConfigError
from ..models.heads import upsample_logits


def labelled_pixels(target: torch.Tensor) -> torch.Tensor:
    """The number of labelled pixels (not 255) in ``target`` int64 (N, H, W): an int64 scalar."""
    return (target != IGNORE_INDEX).sum()


def summed_cross_entropy(
    logits: torch.Tensor, target: torch.Tensor, *, align_corners: bool = False
) -> torch.Tensor:
    """Cross-entropy summed over the labelled pixels: ``logits`` (N, C, h, w), upsampled in
    float32 to the size of ``target`` (N, H, W) int64 class indices (255 ignored). Per-pixel
    losses are summed by a plain reduction (CUDA's summing ``cross_entropy`` uses atomics)."""
    logits = upsample_logits(logits.float(), tuple(target.shape[-2:]), align_corners)
    return F.cross_entropy(logits, target, ignore_index=IGNORE_INDEX, reduction="none").sum()


def pixel_cross_entropy(
    logits: torch.Tensor, target: torch.Tensor, *, align_corners: bool = False
) -> torch.Tensor:
    """Mean cross-entropy over the labelled pixels (see :func:`summed_cross_entropy`); 0 when
    nothing is labelled."""
    total = summed_cross_entropy(logits, target, align_corners=align_corners)
    return total / labelled_pixels(target).clamp_min(1)


def summed_segmentation_loss(
    outputs: dict[str, torch.Tensor],
    target: torch.Tensor,
    *,
    aux_weight: float = 0.4,
    align_corners: bool = False,
) -> torch.Tensor:
    """``ΣCE(out) + aux_weight · ΣCE(aux)`` over the labelled pixels of ``target`` (the aux term
    only when ``outputs`` has ``"aux"``): the numerator of the batch loss."""
    loss = summed_cross_entropy(outputs["out"], target, align_corners=align_corners)
    if "aux" in outputs:
        loss = loss + aux_weight * summed_cross_entropy(
            outputs["aux"], target, align_corners=align_corners
        )
    return loss


def segmentation_loss(
    outputs: dict[str, torch.Tensor],
    target: torch.Tensor,
    *,
    aux_weight: float = 0.4,
    align_corners: bool = False,
) -> torch.Tensor:
    """``CE(out) + aux_weight · CE(aux)``, each the mean over the labelled pixels of ``target``
    (the aux term only when ``outputs`` has ``"aux"``); 0 when nothing is labelled."""
    total = summed_segmentation_loss(
        outputs, target, aux_weight=aux_weight, align_corners=align_corners
    )
    return total / labelled_pixels(target).clamp_min(1)


def micro_batch_size(config: TrainConfig, processes: int) -> int:
    """Images per micro-batch, ``batch_size / (processes × accumulate)``; a
    :class:`ConfigError` naming the divisors when ``accumulate`` does not divide a process's
    share (the batch's split over processes is checked before)."""
    share = config.batch_size // processes
    if share % config.accumulate:
        each = f" on each of {processes} processes" if processes > 1 else ""
        divisors = ", ".join(str(d) for d in range(1, share + 1) if share % d == 0)
        raise ConfigError(
            f"--accumulate {config.accumulate} does not divide the {share} images of a "
            f"step{each} (--batch-size {config.batch_size}). Use a divisor of {share} "
            f"({divisors})."
        )
    return share // config.accumulate


def amp_settings(
    device: torch.device, amp: bool | None
) -> tuple[torch.dtype | None, torch.amp.GradScaler | None]:
    """The autocast dtype and gradient scaler for ``device``: on CUDA (``amp`` None or True)
    bfloat16 where the GPU supports it, else float16 with a GradScaler; nothing on CPU."""
    if device.type != "cuda":
        if amp:
            raise ConfigError(
                "mixed precision (--amp) needs a CUDA device. Leave --amp out or use --device cuda."
            )
        return None, None
    if amp is False:
        return None, None
    if torch.cuda.is_bf16_supported():
        return torch.bfloat16, None
    return torch.float16, torch.amp.GradScaler("cuda")


def train_step(
    model: nn.Module,
    images: torch.Tensor,
    target: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    *,
    accumulate: int = 1,
    aux_weight: float = 0.4,
    align_corners: bool = False,
    amp_dtype: torch.dtype | None = None,
    scaler: torch.amp.GradScaler | None = None,
) -> torch.Tensor:
    """One optimizer step on this process's share of the global batch: ``images`` float
    (b, 3, S, S) normalised, ``target`` int64 (b, S, S), run as ``accumulate`` micro-batches of
    b / accumulate images (see the module docstring). ``model`` is a :class:`DeepLabV3` or its
    DDP wrapper. Returns the loss of the whole global batch: a detached float32 scalar, the same
    on every process."""
    if accumulate < 1 or images.shape[0] % accumulate:
        raise ValueError(f"{images.shape[0]} images cannot make {accumulate} equal micro-batches")
    processes = D.current_world().size
    count = D.all_reduce_sum(labelled_pixels(target)).clamp_min(1)
    weight = processes / count.to(torch.float32)  # DDP divides the summed gradients by P
    micro = images.shape[0] // accumulate
    parts = zip(images.split(micro), target.split(micro), strict=True)
    total = torch.zeros((), device=images.device)
    optimizer.zero_grad(set_to_none=True)
    for index, (part, part_target) in enumerate(parts):
        with _gradient_sync(model, index == accumulate - 1):
            with _autocast(images.device, amp_dtype):
                outputs = model(part, upsample=False)  # logits (m, C, h, w), no upsampling
            summed = summed_segmentation_loss(
                outputs, part_target, aux_weight=aux_weight, align_corners=align_corners
            )
            loss = summed * weight
            (scaler.scale(loss) if scaler is not None else loss).backward()
        total += summed.detach()
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    return D.all_reduce_sum(total) / count


def _gradient_sync(model: nn.Module, sync: bool) -> contextlib.AbstractContextManager[Any]:
    """DDP all-reduces gradients in the backward pass unless inside ``no_sync()``."""
    if sync or not isinstance(model, nn.parallel.DistributedDataParallel):
        return contextlib.nullcontext()
    return model.no_sync()


def _autocast(
    device: torch.device, dtype: torch.dtype | None
) -> contextlib.AbstractContextManager[Any]:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)
