"""torchvision's DeepLabv3 ResNet state dicts → our model (in memory).

torchvision's segmentation ResNets run at OS 8 with ``replace_stride_with_dilation=[False,
True, True]``: the first unit of a dilated stage keeps the previous rate and there is no
multi-grid. Its head is ASPP(12, 24, 36) + image pooling → 3×3 conv + BN + ReLU → classifier,
with an optional FCN auxiliary head on layer3; logits are resized with align_corners=False.
The converted model reproduces all of this (``dilation_convention="torchvision"``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch

from ...config import IMAGENET_MEAN, IMAGENET_STD, Preprocessing
from ...errors import ConversionError
from ...models import DeepLabV3, arch_config
from ._load import load_converted

TORCHVISION_ARCHS = {"deeplabv3_resnet50": "resnet50", "deeplabv3_resnet101": "resnet101"}

# torchvision key prefix → ours (applied in order, first match wins).
_RULES: tuple[tuple[str, str], ...] = (
    (r"^backbone\.", "backbone."),
    (r"^classifier\.0\.convs\.(\d+)\.0\.", r"head.aspp.convs.\1.0."),  # 1×1 and atrous convs
    (r"^classifier\.0\.convs\.(\d+)\.1\.", r"head.aspp.convs.\1.1."),  # their BNs
    (r"^classifier\.0\.project\.", "head.aspp.project."),
    (r"^classifier\.1\.", "head.refine.0."),
    (r"^classifier\.2\.", "head.refine.1."),
    (r"^classifier\.4\.", "head.classifier."),
    (r"^aux_classifier\.", "aux_head."),
)


def torchvision_config(arch: str, num_classes: int, aux: bool, class_names=()):
    """The :class:`ModelConfig` that reproduces torchvision's ``arch`` exactly."""
    if arch not in TORCHVISION_ARCHS:
        raise ConversionError(
            f"unknown torchvision architecture {arch!r}. Use one of: {', '.join(TORCHVISION_ARCHS)}."
        )
    return arch_config(
        arch,
        num_classes=num_classes,
        class_names=tuple(class_names),
        output_stride=8,
        multi_grid=(1, 1, 1),
        dilation_convention="torchvision",
        head="torchvision",
        aspp_rates=(6, 12, 18),  # = (12, 24, 36) at OS 8
        image_pooling=True,
        aspp_dropout=0.5,
        aux_head=aux,
        align_corners=False,
        preprocessing=Preprocessing(mean=IMAGENET_MEAN, std=IMAGENET_STD),
    )


def rename_torchvision_key(key: str, num_branches: int) -> str:
    """Our parameter name for torchvision's ``key``; ASPP's pooling branch (the last one) has
    its own layout (``convs.N.{1,2}`` → ``convs.N.conv.{0,1}``)."""
    pool = rf"^classifier\.0\.convs\.{num_branches - 1}\.([12])\.(.*)$"
    match = re.match(pool, key)
    if match:
        index = int(match.group(1)) - 1
        return f"head.aspp.convs.{num_branches - 1}.conv.{index}.{match.group(2)}"
    for pattern, replacement in _RULES:
        if re.match(pattern, key):
            return re.sub(pattern, replacement, key)
    raise ConversionError(
        f"unexpected key {key!r} in a torchvision DeepLabv3 state dict. "
        "Check that the file is a deeplabv3_resnet50/101 checkpoint."
    )


def from_torchvision(
    state_dict: Mapping[str, torch.Tensor],
    arch: str,
    *,
    class_names=(),
    provenance: dict[str, Any] | None = None,
) -> DeepLabV3:
    """Our model carrying the weights of a torchvision ``deeplabv3_resnet50/101`` state dict.

    ``num_classes`` and the presence of the auxiliary head are read from the tensors.
    """
    if "classifier.4.weight" not in state_dict:
        raise ConversionError(
            "this state dict has no 'classifier.4.weight', so it is not a torchvision DeepLabv3 "
            "ResNet checkpoint. Use a deeplabv3_resnet50/101 state dict."
        )
    num_classes = int(state_dict["classifier.4.weight"].shape[0])
    aux = any(k.startswith("aux_classifier.") for k in state_dict)
    config = torchvision_config(arch, num_classes, aux, class_names)
    branches = len({k.split(".")[3] for k in state_dict if k.startswith("classifier.0.convs.")})
    renamed = {rename_torchvision_key(k, branches): v for k, v in state_dict.items()}
    return load_converted(config, renamed, source=f"torchvision {arch}", provenance=provenance)
