"""One optimisation step: the paper's loss and SGD, with CUDA mixed precision when asked.

The loss is cross-entropy on logits at the label size (the model already upsamples its logits
to the input size, and training crops equal their labels' size; anything else is upsampled
here, never the labels downsampled), ignoring 255, plus ``aux_weight`` × the same loss on the
auxiliary head's logits when the model has one.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ..config import IGNORE_INDEX
from ..errors import ConfigError
from ..models.heads import upsample_logits


def pixel_cross_entropy(
    logits: torch.Tensor, target: torch.Tensor, *, align_corners: bool = False
) -> torch.Tensor:
    """Mean cross-entropy over the labelled pixels. ``logits`` (N, C, h, w), upsampled to the
    size of ``target`` (N, H, W) int64 class indices (255 ignored); 0 when nothing is labelled."""
    logits = upsample_logits(logits.float(), tuple(target.shape[-2:]), align_corners)
    total = F.cross_entropy(logits, target, ignore_index=IGNORE_INDEX, reduction="sum")
    return total / (target != IGNORE_INDEX).sum().clamp_min(1)


def segmentation_loss(
    outputs: dict[str, torch.Tensor],
    target: torch.Tensor,
    *,
    aux_weight: float = 0.4,
    align_corners: bool = False,
) -> torch.Tensor:
    """``CE(out) + aux_weight · CE(aux)`` (the aux term only when ``outputs`` has ``"aux"``)."""
    loss = pixel_cross_entropy(outputs["out"], target, align_corners=align_corners)
    if "aux" in outputs:
        loss = loss + aux_weight * pixel_cross_entropy(
            outputs["aux"], target, align_corners=align_corners
        )
    return loss


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
    aux_weight: float = 0.4,
    align_corners: bool = False,
    amp_dtype: torch.dtype | None = None,
    scaler: torch.amp.GradScaler | None = None,
) -> torch.Tensor:
    """Forward, loss, backward and one optimizer step on a batch: ``images`` float (N, 3, S, S)
    normalised, ``target`` int64 (N, S, S). Returns the loss (a detached scalar)."""
    autocast: Any = (
        torch.autocast(images.device.type, dtype=amp_dtype)
        if amp_dtype is not None
        else contextlib.nullcontext()
    )
    with autocast:
        outputs = model(images)
    loss = segmentation_loss(outputs, target, aux_weight=aux_weight, align_corners=align_corners)
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        optimizer.step()
    return loss.detach()
