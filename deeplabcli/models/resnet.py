"""Dilated ResNet-50/101 backbones with the paper's output stride, multi-grid and cascaded blocks.

Parameter names are torchvision's (``conv1``, ``bn1``, ``layer1.0.conv1`` ... ``layer4``), so
torchvision's ImageNet ResNet weights load unchanged (minus ``fc``). Blocks beyond block4
(``layer5`` .. ``layer7``, the paper's "going deeper" study) are copies of block4's structure.

Strides and dilations are not fixed at construction: :meth:`DilatedResNet.set_output_stride`
recomputes them on the existing modules, so one set of weights runs at any output stride.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

#: Units per block (block1..block4) and base width of each named ResNet.
RESNET_SPECS: dict[str, tuple[tuple[int, int, int, int], int]] = {
    "resnet50": ((3, 4, 6, 3), 64),
    "resnet101": ((3, 4, 23, 3), 64),
    "resnet_tiny": ((1, 1, 1, 1), 8),  # for fast tests only
}
EXPANSION = 4


class Subsample(nn.Module):
    """Parameter-free shortcut of cascaded blocks: identity at stride 1, else keeps every
    ``stride``-th pixel (TF-slim's ``subsample``), so changing the output stride needs no
    new weights."""

    def __init__(self) -> None:
        super().__init__()
        self.stride = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.stride == 1 else x[:, :, :: self.stride, :: self.stride]


class Bottleneck(nn.Module):
    """ResNet v1.5 bottleneck (stride on the 3×3 conv), torchvision's layout and names."""

    def __init__(self, in_channels: int, planes: int, shortcut: nn.Module | None) -> None:
        super().__init__()
        out_channels = planes * EXPANSION
        self.conv1 = nn.Conv2d(in_channels, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = shortcut

    def configure(self, stride: int, dilation: int) -> None:
        """Set the 3×3 conv's stride and dilation (padding keeps the size at ``ceil(H/stride)``)."""
        self.conv2.stride = (stride, stride)
        self.conv2.dilation = (dilation, dilation)
        self.conv2.padding = (dilation, dilation)
        if isinstance(self.downsample, nn.Sequential):
            self.downsample[0].stride = (stride, stride)
        elif isinstance(self.downsample, Subsample):
            self.downsample.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out += identity  # in place, as torchvision: one feature map fewer per unit
        return self.relu(out)


def block_schedule(
    output_stride: int,
    units: Sequence[int],
    multi_grid: Sequence[int],
    convention: str = "paper",
) -> list[tuple[int, list[int]]]:
    """Per block (block1, block2, ...): its stride and the dilation of each of its units.

    ``units`` holds the unit count of each block. The stem brings the input to 1/4; every later
    block halves the resolution until the output stride is reached, and from then on its stride
    becomes an atrous rate that doubles per block. Units of block4 and beyond multiply the block
    rate by ``multi_grid`` (paper Sec. 3.2). ``convention="torchvision"`` keeps the first unit of
    a dilated block at the previous block's rate, as torchvision's ResNet does.

    >>> [rates for _, rates in block_schedule(16, (3, 4, 6, 3), (1, 2, 4))][2:]
    [[1, 1, 1, 1, 1, 1], [2, 4, 8]]
    """
    schedule = []
    current, rate = 4, 1
    for index, count in enumerate(units, start=1):
        previous = rate
        if index == 1:
            stride = 1
        elif current >= output_stride:
            stride, rate = 1, rate * 2
        else:
            stride, current = 2, current * 2
        first = previous if convention == "torchvision" else rate
        grid = [multi_grid[min(i, len(multi_grid) - 1)] if index >= 4 else 1 for i in range(count)]
        rates = [(first if i == 0 else rate) * g for i, g in enumerate(grid)]
        schedule.append((stride, rates))
    return schedule


class DilatedResNet(nn.Module):
    """ResNet backbone returning ``{"out": block-N features, "aux": block3 features}``.

    Input: float (N, 3, H, W), normalised. ``out``: (N, 2048·w/64, ceil(H/OS), ceil(W/OS));
    ``aux``: (N, 1024·w/64, ...) at block3's resolution.
    """

    def __init__(
        self,
        name: str = "resnet101",
        *,
        output_stride: int = 16,
        multi_grid: Sequence[int] = (1, 2, 4),
        cascade: int = 4,
        convention: str = "paper",
    ) -> None:
        super().__init__()
        units, width = RESNET_SPECS[name]
        self.cascade = cascade
        self.multi_grid = tuple(multi_grid)
        self.convention = convention
        self.conv1 = nn.Conv2d(3, width, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        in_channels = width
        for index in range(1, cascade + 1):
            planes = width * 2 ** (min(index, 4) - 1)
            count = units[min(index, 4) - 1]
            layer, in_channels = self._make_layer(in_channels, planes, count, cascaded=index > 4)
            self.add_module(f"layer{index}", layer)
        self.out_channels = in_channels
        self.aux_channels = width * 4 * EXPANSION  # block3 output
        self.output_stride = 0
        self.set_output_stride(output_stride)

    @staticmethod
    def _make_layer(
        in_channels: int, planes: int, count: int, cascaded: bool
    ) -> tuple[nn.Sequential, int]:
        out_channels = planes * EXPANSION
        if cascaded:
            shortcut: nn.Module = Subsample()
        else:
            shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels)
            )
        units = [Bottleneck(in_channels, planes, shortcut)]
        units += [Bottleneck(out_channels, planes, None) for _ in range(count - 1)]
        return nn.Sequential(*units), out_channels

    def blocks(self) -> list[nn.Sequential]:
        return [getattr(self, f"layer{i}") for i in range(1, self.cascade + 1)]

    def set_output_stride(self, output_stride: int) -> None:
        """Recompute every block's stride and unit dilations for ``output_stride`` in place."""
        counts = [len(block) for block in self.blocks()]
        schedule = block_schedule(output_stride, counts, self.multi_grid, self.convention)
        for block, (stride, rates) in zip(self.blocks(), schedule, strict=True):
            for i, (unit, dilation) in enumerate(zip(block, rates, strict=True)):
                unit.configure(stride if i == 0 else 1, dilation)
        self.output_stride = output_stride

    def unit_dilations(self) -> list[list[int]]:
        """The current dilation of every unit's 3×3 conv, per block (for inspection/tests)."""
        return [[u.conv2.dilation[0] for u in block] for block in self.blocks()]

    def block_strides(self) -> list[int]:
        return [block[0].conv2.stride[0] for block in self.blocks()]

    def forward(self, x: torch.Tensor, *, with_aux: bool = False) -> dict[str, torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        features: dict[str, torch.Tensor] = {}
        for index, block in enumerate(self.blocks(), start=1):
            x = block(x)
            if index == 3 and with_aux:
                features["aux"] = x
        features["out"] = x
        return features
