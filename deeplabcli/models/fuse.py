"""Inference optimisation: fold batch norm into convolutions, channels-last memory layout.

At inference a BatchNorm2d is a fixed per-channel affine map, ``y = x·s + t`` with
``s = γ / sqrt(σ² + ε)`` and ``t = β − μ·s``; following a convolution it folds into the conv's
weight (``W·s``) and bias (``b·s + t``), removing one pass over every feature map. Folding works on
a copy and keeps every parameter name of the other layers, so the result is numerically the same
network (to float rounding).

A BatchNorm2d is folded when it directly follows a Conv2d inside an ``nn.Sequential``, or when it
sits next to a Conv2d named like it in the same module (``conv1``/``bn1``, ``conv``/``bn``,
torchvision's ResNet layout): the layouts our backbones and heads use.
"""

from __future__ import annotations

import copy
import itertools

import torch
from torch import nn


def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    """Fold ``bn`` (eval statistics) into ``conv`` in place; ``conv`` gains a bias if needed.

    The arithmetic is done in float64 and stored back in the conv's dtype.
    """
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("cannot fold a BatchNorm2d without running statistics")
    weight = conv.weight.detach().double()
    mean, var = bn.running_mean.double(), bn.running_var.double()
    gamma = bn.weight.detach().double() if bn.weight is not None else torch.ones_like(mean)
    beta = bn.bias.detach().double() if bn.bias is not None else torch.zeros_like(mean)
    scale = gamma / torch.sqrt(var + bn.eps)  # (out_channels,)
    bias = conv.bias.detach().double() if conv.bias is not None else torch.zeros_like(mean)
    dtype = conv.weight.dtype
    with torch.no_grad():
        conv.weight.copy_((weight * scale.view(-1, 1, 1, 1)).to(dtype))
        new_bias = ((bias - mean) * scale + beta).to(dtype)
        if conv.bias is None:
            conv.bias = nn.Parameter(new_bias)
        else:
            conv.bias.copy_(new_bias)


def _sibling_conv_name(bn_name: str) -> str:
    """``bn1`` → ``conv1``, ``bn`` → ``conv``: torchvision's naming of conv/BN pairs."""
    return "conv" + bn_name[2:] if bn_name.startswith("bn") else ""


def fold_batchnorm(model: nn.Module, *, inplace: bool = False) -> nn.Module:
    """Fold every conv-following BatchNorm2d of ``model`` (see the module docstring) into its
    conv and replace it with ``nn.Identity``; returns the folded model in eval mode.

    Works on a deep copy unless ``inplace``. Training a folded model is not meaningful.
    """
    model = model if inplace else copy.deepcopy(model)
    model.eval()
    for parent in list(model.modules()):
        children = dict(parent.named_children())
        if isinstance(parent, nn.Sequential):
            names = list(children)
            for prev, name in itertools.pairwise(names):
                conv, bn = children[prev], children[name]
                if isinstance(conv, nn.Conv2d) and type(bn) is nn.BatchNorm2d:
                    fold_conv_bn(conv, bn)
                    setattr(parent, name, nn.Identity())
            continue
        for name, bn in children.items():
            conv = children.get(_sibling_conv_name(name))
            if type(bn) is nn.BatchNorm2d and isinstance(conv, nn.Conv2d):
                fold_conv_bn(conv, bn)
                setattr(parent, name, nn.Identity())
    return model


def count_batchnorms(model: nn.Module) -> int:
    """Number of BatchNorm layers left in ``model``."""
    return sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def optimize_for_inference(
    model: nn.Module,
    *,
    fold_bn: bool = True,
    channels_last: bool = True,
    inplace: bool = False,
    cpu_fusion: bool = False,
    prepack: bool | None = None,
) -> nn.Module:
    """A copy of ``model`` prepared for fast inference: eval mode, batch norm folded into the
    convolutions, and (``channels_last``) weights in channels-last layout, which oneDNN and
    cuDNN convolutions run faster; feed it channels-last inputs as well.

    ``cpu_fusion`` (for a float32 model that stays on the CPU) also runs each folded conv with
    its ReLU/ReLU6 and residual sum as one oneDNN call (see ``models.cpu_fusion``), and
    ``prepack`` keeps those weights in oneDNN's layout (``None``: for small models only).

    The copy's parameters do not require gradients. The original model is untouched, unless
    ``inplace``: then the model itself is optimised (no second copy of the weights in memory)
    and returned.
    """
    if not inplace:
        model = copy.deepcopy(model)
    model.eval()
    if fold_bn:
        fold_batchnorm(model, inplace=True)
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if cpu_fusion and fold_bn:
        from .cpu_fusion import fuse_activations

        fuse_activations(model, prepack=prepack)
    return model
