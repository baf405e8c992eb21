"""MobileNetV2 backbone in Google's DeepLab layout (TF-slim ``mobilenet_v2``), exact to TensorFlow.

The network is a 3×3 stem conv (stride 2) followed by 17 inverted-residual blocks (TF-slim's
``expanded_conv`` .. ``expanded_conv_16``): [1×1 expand + BN + ReLU6] → 3×3 depthwise + BN +
ReLU6 → 1×1 project + BN, with a residual connection where the shape is kept. Block 0 has no
expand conv (its expansion ratio is 1). The final 1280-channel conv of the classifier is not part
of DeepLab and is not built.

TensorFlow's "SAME" padding is reproduced exactly: the total padding of a conv is
``max((ceil(n/s) - 1)·s + (k-1)·d + 1 - n, 0)`` with the smaller half before, so a stride-2
conv on an even size pads only after. Symmetric cases use the conv's own padding; asymmetric
ones pad once with ``F.pad``. Paddings depend on the input size and are cached per size.

Strides and dilations are recomputed in place by :meth:`MobileNetV2Backbone.set_output_stride`
with TF-slim's rule (also transformers'): once the output stride is reached, a block that would
have stride 2 keeps stride 1 at the current rate, and the rate doubles from the next block on.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ..config import ModelConfig

#: (expansion ratio, output channels at depth multiplier 1, stride) of blocks 0 .. 16.
BLOCK_SPECS: tuple[tuple[int, int, int], ...] = (
    (1, 16, 1),
    (6, 24, 2), (6, 24, 1),
    (6, 32, 2), (6, 32, 1), (6, 32, 1),
    (6, 64, 2), (6, 64, 1), (6, 64, 1), (6, 64, 1),
    (6, 96, 1), (6, 96, 1), (6, 96, 1),
    (6, 160, 2), (6, 160, 1), (6, 160, 1),
    (6, 320, 1),
)  # fmt: skip
STEM_CHANNELS = 32


def make_divisible(value: float, divisor: int, min_value: int) -> int:
    """Round ``value`` to the nearest multiple of ``divisor`` (at least ``min_value``), never
    more than 10% below ``value`` (TF-slim's and transformers' ``make_divisible``)."""
    new_value = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if new_value < 0.9 * value:
        new_value += divisor
    return int(new_value)


def scaled_channels(channels: int, config: ModelConfig) -> int:
    """``channels`` times the depth multiplier, rounded as ``config`` says."""
    return make_divisible(
        round(channels * config.depth_multiplier), config.depth_divisible_by, config.min_depth
    )


def block_channels(config: ModelConfig) -> list[tuple[int, int, int]]:
    """(input, expanded, output) channels of every block for ``config``."""
    channels = []
    in_channels = scaled_channels(STEM_CHANNELS, config)
    for ratio, out, _ in BLOCK_SPECS:
        expanded = (
            in_channels
            if ratio == 1
            else make_divisible(
                round(in_channels * ratio), config.depth_divisible_by, config.min_depth
            )
        )
        out_channels = scaled_channels(out, config)
        channels.append((in_channels, expanded, out_channels))
        in_channels = out_channels
    return channels


def block_schedule(output_stride: int) -> list[tuple[int, int]]:
    """(stride, dilation) of every block at ``output_stride`` (8, 16 or 32).

    >>> [d for _, d in block_schedule(8)]
    [1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 4, 4, 4]
    """
    schedule = []
    current, rate = 2, 1  # the stem has stride 2
    for _, _, stride in BLOCK_SPECS:
        if current == output_stride:
            schedule.append((1, rate))
            rate *= stride
        else:
            schedule.append((stride, 1))
            current *= stride
    return schedule


def same_padding(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """TensorFlow "SAME" padding (before, after) of one spatial dimension."""
    effective = (kernel - 1) * dilation + 1
    total = max((math.ceil(size / stride) - 1) * stride + effective - size, 0)
    return total // 2, total - total // 2


def traced_same_padding(size: Any, kernel: int, stride: int, dilation: int) -> list[Any]:
    """:func:`same_padding` in tensor arithmetic, for tracing (ONNX export): ``size`` is then a
    traced 0-dim tensor, so the exported graph computes the padding from its input's size
    instead of baking in the size it was traced at."""
    effective = (kernel - 1) * dilation + 1
    total = torch.clamp(((size + stride - 1) // stride - 1) * stride + effective - size, min=0)
    before = total // 2
    return [before, total - before]


#: Whether a traced forward (ONNX export) computes "SAME" padding from the input's size in the
#: graph (dynamic H and W). :func:`fixed_size_tracing` turns it off for an export at one input
#: size: the padding is then worked out once, and symmetric padding sits in the Conv itself, so
#: the graph has no Pad nodes (which int8 runtimes run in float, between requantizations).
_DYNAMIC_TRACE = [True]


@contextlib.contextmanager
def fixed_size_tracing() -> Iterator[None]:
    """Trace the padding for the example input's size only (an export at a static size)."""
    _DYNAMIC_TRACE.append(False)
    try:
        yield
    finally:
        _DYNAMIC_TRACE.pop()


class ConvBNAct(nn.Module):
    """Conv → BN (or nothing when BN is folded into the conv's bias) → optional ReLU6.

    (N, in_channels, H, W) → (N, out_channels, H', W') with H' = ceil(H / stride) under TF
    padding. Parameter names: ``conv.weight`` [``conv.bias``], ``bn.*``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        *,
        groups: int = 1,
        relu6: bool = True,
        tf_padding: bool = True,
        folded_bn: bool = False,
        eps: float = 1e-3,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, groups=groups, bias=folded_bn, padding=0
        )
        self.bn: nn.Module = nn.Identity() if folded_bn else nn.BatchNorm2d(out_channels, eps=eps)
        self.relu6 = relu6
        self.tf_padding = tf_padding
        self._pads: dict[tuple[int, int], tuple[tuple[int, int, int, int] | None, int | str]] = {}
        self.configure(1, 1)

    def configure(self, stride: int, dilation: int) -> None:
        """Set stride and dilation in place (weights untouched)."""
        self.conv.stride = (stride, stride)
        self.conv.dilation = (dilation, dilation)
        if not self.tf_padding:
            pad = dilation * (self.conv.kernel_size[0] - 1) // 2
            self.conv.padding = (pad, pad)
        self._pads.clear()

    def _padding(self, height: int, width: int) -> tuple[tuple[int, int, int, int] | None, int]:
        """(explicit F.pad amounts or None, symmetric conv padding) for an input size."""
        key = (height, width)
        if key not in self._pads:
            k, s, d = self.conv.kernel_size[0], self.conv.stride[0], self.conv.dilation[0]
            top, bottom = same_padding(height, k, s, d)
            left, right = same_padding(width, k, s, d)
            if top == bottom == left == right:
                self._pads[key] = (None, top)
            else:
                self._pads[key] = ((left, right, top, bottom), 0)
        return self._pads[key]  # type: ignore[return-value]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv = self.conv
        dynamic = _DYNAMIC_TRACE[-1] and torch.jit.is_tracing()
        if self.tf_padding and dynamic:  # ONNX export: padding follows the input
            k, s, d = conv.kernel_size[0], conv.stride[0], conv.dilation[0]
            padding = (k - 1) * d // 2  # "SAME" at stride 1 (odd kernels): symmetric, any size
            if s > 1:  # depends on the size's remainder: computed in the graph
                x = F.pad(x, [*traced_same_padding(x.shape[-1], k, s, d),
                              *traced_same_padding(x.shape[-2], k, s, d)])  # fmt: skip
                padding = 0
            # a Conv with its own padding, not Pad → Conv: runtimes fuse and reorder it better
            x = F.conv2d(
                x, conv.weight, conv.bias, conv.stride, padding, conv.dilation, conv.groups
            )
        elif self.tf_padding:
            explicit, padding = self._padding(int(x.shape[-2]), int(x.shape[-1]))
            if explicit is not None:
                x = F.pad(x, explicit)
            x = F.conv2d(
                x, conv.weight, conv.bias, conv.stride, padding, conv.dilation, conv.groups
            )
        else:
            x = conv(x)
        x = self.bn(x)
        return F.relu6(x, inplace=True) if self.relu6 else x


class InvertedResidual(nn.Module):
    """[1×1 expand] → 3×3 depthwise (the block's stride and dilation) → 1×1 linear projection,
    plus the input when stride is 1 and channels are kept. (N, C_in, H, W) → (N, C_out, H', W')."""

    def __init__(
        self, in_channels: int, expanded: int, out_channels: int, layer: Callable[..., ConvBNAct]
    ) -> None:
        super().__init__()
        self.expand = layer(in_channels, expanded, 1) if expanded != in_channels else None
        self.depthwise = layer(expanded, expanded, 3, groups=expanded)
        self.project = layer(expanded, out_channels, 1, relu6=False)
        self.same_channels = in_channels == out_channels
        self.use_residual = self.same_channels

    def configure(self, stride: int, dilation: int) -> None:
        self.depthwise.configure(stride, dilation)
        # TF-slim and transformers decide the shortcut on the stride in effect.
        self.use_residual = stride == 1 and self.same_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x if self.expand is None else self.expand(x)
        out = self.project(self.depthwise(out))
        return out + x if self.use_residual else out


class MobileNetV2Backbone(nn.Module):
    """MobileNetV2 features for DeepLab: float (N, 3, H, W) normalised to [-1, 1] →
    ``{"out": (N, out_channels, ceil(H/OS), ceil(W/OS))}`` with ``out_channels`` = 320 × depth
    multiplier (rounded as the config says).

    The memory format follows the input: channels-last inputs (or a model moved to channels-last,
    see ``models.fuse.optimize_for_inference``) run ~1.2-1.7× faster on CPU through oneDNN, at
    the price of float rounding that differs from NCHW (the kernels accumulate in another order).
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        layer = functools.partial(
            ConvBNAct,
            tf_padding=config.tf_padding,
            folded_bn=config.folded_bn,
            eps=config.backbone_bn_eps,
        )
        channels = block_channels(config)
        self.stem = layer(3, channels[0][0], 3)
        self.stem.configure(2, 1)
        self.blocks = nn.ModuleList(InvertedResidual(*c, layer) for c in channels)
        self.out_channels = channels[-1][2]
        self.output_stride = 0
        self.set_output_stride(config.output_stride)

    def set_output_stride(self, output_stride: int) -> None:
        """Recompute every block's stride and dilation for ``output_stride`` (8, 16, 32)."""
        for block, (stride, dilation) in zip(
            self.blocks, block_schedule(output_stride), strict=True
        ):
            block.configure(stride, dilation)
        self.output_stride = output_stride

    def block_strides(self) -> list[int]:
        return [block.depthwise.conv.stride[0] for block in self.blocks]

    def block_dilations(self) -> list[int]:
        return [block.depthwise.conv.dilation[0] for block in self.blocks]

    def forward(self, x: torch.Tensor, *, with_aux: bool = False) -> dict[str, torch.Tensor]:
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        return {"out": x}
