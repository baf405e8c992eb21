"""Models with non-trivial batch norm and the variants the fusion tests run over."""

from __future__ import annotations

import torch
from torch import nn


def randomise_batchnorm(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BN statistics and affine parameters, so folding has something to do."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            n = module.num_features
            module.running_mean.copy_(torch.rand(n, generator=generator) * 2 - 1)
            module.running_var.copy_(torch.rand(n, generator=generator) * 1.5 + 0.5)
            module.weight.data.copy_(torch.rand(n, generator=generator) + 0.5)
            module.bias.data.copy_(torch.rand(n, generator=generator) - 0.5)
    return model.eval()


def outputs(model: nn.Module, x: torch.Tensor, channels_last: bool = False):
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        return model(x)


VARIANTS = [
    ("deeplabv3_tiny", {}),
    ("deeplabv3_tiny", {"head": "torchvision", "aux_head": True, "output_stride": 8}),
    ("deeplabv3_tiny", {"cascade": 6, "multi_grid": (1, 2, 1)}),
    ("deeplabv3_mobilenetv2_tiny", {}),
    ("deeplabv3_mobilenetv2", {"depth_multiplier": 0.5, "depth_divisible_by": 1}),
    ("deeplabv3_mobilenetv2_tiny", {"folded_bn": True}),
]
