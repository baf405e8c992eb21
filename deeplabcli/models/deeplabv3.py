"""DeepLabv3: backbone + head + bilinear upsampling of the logits, built from a ModelConfig."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..config import ModelConfig
from .heads import AuxHead, DeepLabHead, upsample_logits
from .registry import arch_config
from .resnet import DilatedResNet


def build_backbone(config: ModelConfig) -> nn.Module:
    """The backbone named by ``config.backbone`` at ``config.output_stride``."""
    if config.backbone == "mobilenetv2":
        from .mobilenetv2 import MobileNetV2Backbone

        return MobileNetV2Backbone(config)
    return DilatedResNet(
        config.backbone,
        output_stride=config.output_stride,
        multi_grid=config.multi_grid,
        cascade=config.cascade,
        convention=config.dilation_convention,
    )


class DeepLabV3(nn.Module):
    """A DeepLabv3 network.

    ``forward(x)`` takes a normalised float batch (N, 3, H, W) and returns
    ``{"out": (N, num_classes, H, W)}`` logits, plus ``"aux"`` of the same shape when the model
    has an auxiliary head. ``model.config`` is the :class:`ModelConfig` it was built from and is
    kept in sync by :meth:`set_output_stride`. ``model.provenance`` says where the weights came
    from (``source``, ``converted_from``, ``training`` ...; see
    :func:`deeplabcli.weights.checkpoint.make_provenance`): ``{}`` for a freshly built model, set
    by whatever loads weights into it and saved with every checkpoint.
    """

    def __init__(self, config: ModelConfig, *, provenance: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.config = config
        self.provenance: dict[str, Any] = dict(provenance or {})
        self.backbone = build_backbone(config)
        self.head = DeepLabHead(
            self.backbone.out_channels,
            config.num_classes,
            config.scaled_aspp_rates(),
            variant=config.head,
            channels=config.head_channels,
            image_pooling=config.image_pooling,
            dropout=config.aspp_dropout,
            folded_bn=config.folded_bn,
            eps=config.head_bn_eps,
            align_corners=config.align_corners,
        )
        self.aux_head = (
            AuxHead(self.backbone.aux_channels, config.num_classes) if config.aux_head else None
        )

    @property
    def output_stride(self) -> int:
        return self.config.output_stride

    def set_output_stride(self, output_stride: int) -> None:
        """Switch the output stride in place: strides, dilations and ASPP rates (× 16 / OS) are
        recomputed, weights are untouched (train at 16, evaluate at 8)."""
        self.config.check_output_stride(output_stride)
        self.backbone.set_output_stride(output_stride)
        self.head.aspp.set_rates(self.config.scaled_aspp_rates(output_stride))
        self.config = self.config.replace(output_stride=output_stride)

    def forward(self, x: torch.Tensor, *, upsample: bool = True) -> dict[str, torch.Tensor]:
        """Logits at the input size (N, C, H, W); with ``upsample=False`` at the feature size
        (N, C, h, w), about (H, W) / output stride, for callers that resize them themselves
        (training upsamples them in float32, outside autocast)."""
        size = (x.shape[-2], x.shape[-1])
        features = self.backbone(x, with_aux=self.aux_head is not None)
        result = {"out": self.head(features["out"])}
        if self.aux_head is not None:
            result["aux"] = self.aux_head(features["aux"])
        if not upsample:
            return result
        return {k: upsample_logits(v, size, self.config.align_corners) for k, v in result.items()}


def build_model(arch: str | ModelConfig = "deeplabv3_resnet101", **overrides: Any) -> DeepLabV3:
    """Build a randomly initialised model from an architecture name or a :class:`ModelConfig`.

    >>> model = build_model("deeplabv3_tiny", num_classes=3)
    >>> model(torch.zeros(1, 3, 64, 64))["out"].shape
    torch.Size([1, 3, 64, 64])
    """
    if isinstance(arch, ModelConfig):
        config = arch.replace(**overrides) if overrides else arch
    else:
        config = arch_config(arch, **overrides)
    return DeepLabV3(config)
