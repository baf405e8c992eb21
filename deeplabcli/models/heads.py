"""Segmentation heads: ASPP with image pooling (paper Sec. 3.3) and its variants.

One :class:`ASPP` serves every head variant: ``paper`` (ASPP → classifier), ``torchvision``
(ASPP → 3×3 conv + BN + ReLU → classifier) and ``mobile`` (Google's MobileNetV2 head: ASPP
with no atrous branches, i.e. [1×1, image pooling]). Module layouts mirror torchvision's
``DeepLabHead``/``FCNHead`` so converted weights map one to one.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F


def conv_bn_relu(
    in_channels: int,
    out_channels: int,
    kernel_size: int = 1,
    *,
    dilation: int = 1,
    folded_bn: bool = False,
    eps: float = 1e-5,
) -> nn.Sequential:
    """``[conv, BN, ReLU]``; with ``folded_bn`` the conv has a bias and BN is an Identity, which
    keeps the indices (and so the parameter names) of both forms identical."""
    padding = dilation * (kernel_size - 1) // 2
    conv = nn.Conv2d(
        in_channels, out_channels, kernel_size, padding=padding, dilation=dilation, bias=folded_bn
    )
    norm: nn.Module = nn.Identity() if folded_bn else nn.BatchNorm2d(out_channels, eps=eps)
    return nn.Sequential(conv, norm, nn.ReLU(inplace=True))


class ASPPPooling(nn.Module):
    """Image-level features: global average pool → 1×1 conv + BN + ReLU → upsample.

    (N, C, h, w) → (N, channels, h, w).
    """

    def __init__(
        self,
        in_channels: int,
        channels: int,
        *,
        folded_bn: bool = False,
        eps: float = 1e-5,
        align_corners: bool = False,
    ) -> None:
        super().__init__()
        self.conv = conv_bn_relu(in_channels, channels, folded_bn=folded_bn, eps=eps)
        self.align_corners = align_corners

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if deterministic_backward():  # CUDA has no deterministic backward of either op
            pooled = self.conv(x.mean(dim=(2, 3), keepdim=True))
            return pooled.expand(-1, -1, *x.shape[-2:])
        pooled = self.conv(F.adaptive_avg_pool2d(x, 1))
        # Bilinear upsampling of a 1×1 map is a broadcast up to rounding; using the source
        # implementation's own call keeps converted models bit-exact.
        return F.interpolate(
            pooled, size=x.shape[-2:], mode="bilinear", align_corners=self.align_corners
        )


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: a 1×1 branch, one 3×3 branch per rate, an optional
    image-pooling branch; concatenated and projected by 1×1 conv + BN + ReLU (+ dropout).

    (N, in_channels, h, w) → (N, channels, h, w). Branch order: [1×1, rates..., pooling].
    """

    def __init__(
        self,
        in_channels: int,
        rates: Sequence[int],
        *,
        channels: int = 256,
        image_pooling: bool = True,
        dropout: float = 0.1,
        folded_bn: bool = False,
        eps: float = 1e-5,
        align_corners: bool = False,
    ) -> None:
        super().__init__()
        branches: list[nn.Module] = [
            conv_bn_relu(in_channels, channels, folded_bn=folded_bn, eps=eps)
        ]
        for rate in rates:
            branches.append(
                conv_bn_relu(in_channels, channels, 3, dilation=rate, folded_bn=folded_bn, eps=eps)
            )
        if image_pooling:
            branches.append(
                ASPPPooling(
                    in_channels, channels, folded_bn=folded_bn, eps=eps, align_corners=align_corners
                )
            )
        self.convs = nn.ModuleList(branches)
        self.project = nn.Sequential(
            *conv_bn_relu(len(branches) * channels, channels, folded_bn=folded_bn, eps=eps),
            nn.Dropout(dropout),
        )
        self.num_rates = len(rates)

    @property
    def rates(self) -> tuple[int, ...]:
        return tuple(self.convs[1 + i][0].dilation[0] for i in range(self.num_rates))

    def set_rates(self, rates: Sequence[int]) -> None:
        """Change the atrous rates in place (weights untouched)."""
        if len(rates) != self.num_rates:
            raise ValueError(f"ASPP has {self.num_rates} atrous branches, got rates {rates}")
        for i, rate in enumerate(rates):
            conv = self.convs[1 + i][0]
            conv.dilation = (rate, rate)
            conv.padding = (rate, rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(torch.cat([branch(x) for branch in self.convs], dim=1))


class DeepLabHead(nn.Module):
    """ASPP → optional 3×3 refinement (torchvision variant) → 1×1 classifier (with bias).

    (N, in_channels, h, w) → logits (N, num_classes, h, w).
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        rates: Sequence[int],
        *,
        variant: str = "paper",
        channels: int = 256,
        image_pooling: bool = True,
        dropout: float = 0.1,
        folded_bn: bool = False,
        eps: float = 1e-5,
        align_corners: bool = False,
    ) -> None:
        super().__init__()
        if variant == "mobile":
            rates = ()
        self.aspp = ASPP(
            in_channels,
            rates,
            channels=channels,
            image_pooling=image_pooling,
            dropout=dropout,
            folded_bn=folded_bn,
            eps=eps,
            align_corners=align_corners,
        )
        self.refine: nn.Module | None = None
        if variant == "torchvision":
            self.refine = conv_bn_relu(channels, channels, 3, folded_bn=folded_bn, eps=eps)
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.aspp(x)
        if self.refine is not None:
            x = self.refine(x)
        return self.classifier(x)


class AuxHead(nn.Sequential):
    """torchvision's FCN auxiliary head on block3: 3×3 conv (C/4) + BN + ReLU + dropout → 1×1.

    (N, C, h, w) → logits (N, num_classes, h, w).
    """

    def __init__(self, in_channels: int, num_classes: int) -> None:
        inner = in_channels // 4
        super().__init__(
            nn.Conv2d(in_channels, inner, 3, padding=1, bias=False),
            nn.BatchNorm2d(inner),
            nn.ReLU(inplace=True),
            nn.Dropout(0.1),
            nn.Conv2d(inner, num_classes, 1),
        )


def upsample_logits(
    logits: torch.Tensor, size: tuple[int, int], align_corners: bool
) -> torch.Tensor:
    """Bilinear resize of (N, C, h, w) logits to (N, C, *size). Under deterministic algorithms
    with autograd recording it is two matrix products (CUDA's bilinear backward accumulates
    with atomics and has no deterministic form); the same values up to float rounding."""
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    if deterministic_backward():
        rows = _interpolation_matrix(size[0], logits.shape[-2], align_corners, logits)
        columns = _interpolation_matrix(size[1], logits.shape[-1], align_corners, logits)
        return torch.matmul(rows, torch.matmul(logits, columns.T))  # (H, h)·(N, C, h, W)
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=align_corners)


def deterministic_backward() -> bool:
    """True when ``torch.use_deterministic_algorithms(True)`` is on and autograd is recording:
    then the layers here avoid kernels whose backward has no deterministic implementation."""
    return torch.are_deterministic_algorithms_enabled() and torch.is_grad_enabled()


def bilinear_source_index(
    out_size: int,
    in_size: int,
    align_corners: bool,
    device: torch.device | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For each of ``out_size`` output positions: the two source indices (int64) and the weight
    of the second (``dtype``), exactly as ``F.interpolate(mode="bilinear")`` computes them."""
    dst = torch.arange(out_size, dtype=dtype, device=device)
    if align_corners:
        src = dst * ((in_size - 1) / (out_size - 1)) if out_size > 1 else dst * 0
    else:
        src = ((dst + 0.5) * (in_size / out_size) - 0.5).clamp_(min=0)
    low = src.long().clamp_(max=in_size - 1)
    high = (low + 1).clamp_(max=in_size - 1)
    return low, high, src - low


def _interpolation_matrix(
    out_size: int, in_size: int, align_corners: bool, like: torch.Tensor
) -> torch.Tensor:
    """(out_size, in_size) weights of 1-D bilinear resampling, with the source positions and
    weights of :func:`bilinear_source_index` (in float32, or in float64 for float64 ``like``)."""
    dtype = torch.float64 if like.dtype == torch.float64 else torch.float32
    low, high, weight = bilinear_source_index(out_size, in_size, align_corners, dtype=dtype)
    weight = weight.unsqueeze(1)
    matrix = (1 - weight) * F.one_hot(low, in_size) + weight * F.one_hot(high, in_size)
    return matrix.to(device=like.device, dtype=like.dtype)
