"""Synchronised batch norm for distributed training, on CUDA and on CPU.

The paper trains BN with batch 16 (Sec. 4.1). Under ``torchrun`` each process holds
``batch_size / world_size`` images, so BN statistics must be computed over all processes: the
*effective BN batch* is the per-process batch × the world size, i.e. the global ``--batch-size``.
On CUDA this is ``torch.nn.SyncBatchNorm`` (fused kernels over NCCL). PyTorch's SyncBatchNorm
refuses CPU tensors, so on CPU (gloo) :class:`DistributedBatchNorm2d` does the same maths: per
channel, the sum, the sum of squares and the pixel count are all-reduced (in float64) and every
process normalises with the global mean and biased variance; gradients flow through the
all-reduce, so they match one process holding the whole batch. Running statistics use the
unbiased variance, like ``nn.BatchNorm2d``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import nn


class _AllReduceSum(torch.autograd.Function):
    """Differentiable sum over all processes: the gradient of a sum is the summed gradient."""

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        total = tensor.clone()
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        return total

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        total = grad.clone()
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        return total


def _world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


class DistributedBatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` whose training statistics cover every process's batch (any backend).

    Input/output: float (N, C, H, W). Outside training, or in a single process, it is exactly
    ``nn.BatchNorm2d``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or _world_size() == 1:
            return super().forward(x)
        channels = x.shape[1]
        wide = x.to(torch.float64)
        local = torch.cat(
            [
                wide.sum(dim=(0, 2, 3)),
                (wide * wide).sum(dim=(0, 2, 3)),
                wide.new_tensor([x.numel() // channels]),
            ]
        )
        total = _AllReduceSum.apply(local)
        count = total[-1]
        if int(count.item()) < 2:
            raise ValueError(
                f"Expected more than 1 value per channel when training, got {int(count.item())}"
            )
        mean = total[:channels] / count
        var = (total[channels : 2 * channels] / count - mean * mean).clamp_min(0.0)
        if self.track_running_stats:
            with torch.no_grad():
                momentum = 0.1 if self.momentum is None else self.momentum
                unbiased = var * count / (count - 1)
                self.running_mean.mul_(1 - momentum).add_(mean.to(x.dtype), alpha=momentum)
                self.running_var.mul_(1 - momentum).add_(unbiased.to(x.dtype), alpha=momentum)
                self.num_batches_tracked.add_(1)
        scale = torch.rsqrt(var + self.eps).to(x.dtype)
        shift = mean.to(x.dtype)
        y = (x - shift.view(1, -1, 1, 1)) * scale.view(1, -1, 1, 1)
        if self.affine:
            y = y * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)
        return y


def convert_sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """Replace every ``BatchNorm2d`` of ``model`` by its synchronised form for ``device``:
    ``torch.nn.SyncBatchNorm`` on CUDA, :class:`DistributedBatchNorm2d` elsewhere. Parameters,
    buffers, momentum and ``requires_grad`` are carried over; returns the (new) root module."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return _convert_cpu(model)


def _convert_cpu(module: nn.Module) -> nn.Module:
    if isinstance(module, nn.BatchNorm2d) and not isinstance(module, DistributedBatchNorm2d):
        new = DistributedBatchNorm2d(
            module.num_features,
            eps=module.eps,
            momentum=module.momentum,
            affine=module.affine,
            track_running_stats=module.track_running_stats,
        )
        new.load_state_dict(module.state_dict())
        if module.affine:
            new.weight.requires_grad_(module.weight.requires_grad)
            new.bias.requires_grad_(module.bias.requires_grad)
        new.train(module.training)
        return new
    for name, child in module.named_children():
        module.add_module(name, _convert_cpu(child))
    return module
