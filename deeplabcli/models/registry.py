"""Named architectures: small builder functions that return a :class:`ModelConfig`.

Builders are registered with :func:`register_arch`; registering a name twice is an error.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from ..config import INCEPTION_MEAN, INCEPTION_STD, ModelConfig, Preprocessing
from ..errors import UnknownArchitectureError

ArchBuilder = Callable[..., ModelConfig]
_ARCHS: dict[str, ArchBuilder] = {}


def register_arch(builder: ArchBuilder) -> ArchBuilder:
    """Register ``builder`` under its function name."""
    name = builder.__name__
    if name in _ARCHS:
        raise ValueError(f"architecture {name!r} is already registered")
    _ARCHS[name] = builder
    return builder


def list_archs() -> list[str]:
    return sorted(_ARCHS)


def arch_config(name: str, **overrides: Any) -> ModelConfig:
    """The :class:`ModelConfig` of architecture ``name`` with ``overrides`` applied."""
    try:
        builder = _ARCHS[name]
    except KeyError:
        raise UnknownArchitectureError(
            f"unknown architecture {name!r}. Use one of: {', '.join(list_archs())}."
        ) from None
    return builder(**overrides)


def _config(arch: str, defaults: dict[str, Any], overrides: dict[str, Any]) -> ModelConfig:
    return ModelConfig(arch=arch, **{**copy.deepcopy(defaults), **overrides})


# The paper's network: OS 16, Multi_Grid (1, 2, 4), ASPP (6, 12, 18) + image pooling (Table 5).
_PAPER_RESNET: dict[str, Any] = {
    "output_stride": 16,
    "multi_grid": (1, 2, 4),
    "aspp_rates": (6, 12, 18),
    "image_pooling": True,
    "head": "paper",
}

# Google's MobileNetV2 DeepLab (the published PASCAL checkpoints): OS 8, [1×1, pooling] head,
# TensorFlow SAME padding, BN eps 1e-3, inputs scaled to [-1, 1].
_MOBILE: dict[str, Any] = {
    "backbone": "mobilenetv2",
    "output_stride": 8,
    "head": "mobile",
    "aspp_rates": (),
    "image_pooling": True,
    "tf_padding": True,
    "backbone_bn_eps": 1e-3,
    "multi_grid": (1, 1, 1),
    "preprocessing": Preprocessing(mean=INCEPTION_MEAN, std=INCEPTION_STD),
}


@register_arch
def deeplabv3_resnet50(**overrides: Any) -> ModelConfig:
    return _config("deeplabv3_resnet50", {"backbone": "resnet50", **_PAPER_RESNET}, overrides)


@register_arch
def deeplabv3_resnet101(**overrides: Any) -> ModelConfig:
    return _config("deeplabv3_resnet101", {"backbone": "resnet101", **_PAPER_RESNET}, overrides)


@register_arch
def deeplabv3_mobilenetv2(**overrides: Any) -> ModelConfig:
    return _config("deeplabv3_mobilenetv2", _MOBILE, overrides)


@register_arch
def deeplabv3_tiny(**overrides: Any) -> ModelConfig:
    """A ResNet with one unit per block and 1/8 width: the paper's structure, for fast tests."""
    defaults = {"backbone": "resnet_tiny", **_PAPER_RESNET, "head_channels": 16}
    return _config("deeplabv3_tiny", defaults, overrides)


@register_arch
def deeplabv3_mobilenetv2_tiny(**overrides: Any) -> ModelConfig:
    """MobileNetV2 at depth multiplier 0.25 with a 16-channel head, for fast tests."""
    defaults = {**_MOBILE, "depth_multiplier": 0.25, "head_channels": 16}
    return _config("deeplabv3_mobilenetv2_tiny", defaults, overrides)
