"""transformers' ``MobileNetV2ForSemanticSegmentation`` checkpoints → our model (in memory).

transformers ports Google's DeepLabv3 MobileNetV2 (e.g. ``google/deeplabv3_mobilenet_v2_1.0_513``)
with TF-slim's layout: a stem (3×3 conv, depthwise, projection = our block 0), 16 inverted
residual layers (our blocks 1..16), an unused 1280-channel conv (dropped here), and a head
``[image pooling → 1×1, 1×1] → 1×1 projection → classifier``. Its concatenation order is
[pooling, 1×1] while ours is [1×1, pooling], so the projection's input channels are permuted.
Backbone BN uses ``layer_norm_eps``, the head's BN 1e-5; logits are resized with
``align_corners=False``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch

from ...config import INCEPTION_MEAN, INCEPTION_STD, ModelConfig, Preprocessing
from ...errors import ConversionError
from ...models import DeepLabV3, arch_config
from ._load import load_converted

_HEAD_CHANNELS = 256  # fixed in transformers' MobileNetV2DeepLabV3Plus
_LAYER_PARTS = {"expand_1x1": "expand", "conv_3x3": "depthwise", "reduce_1x1": "project"}
_CONV_PARTS = {"convolution": "conv", "normalization": "bn"}
_HEAD_RULES: tuple[tuple[str, str], ...] = (
    (r"^segmentation_head\.conv_aspp\.convolution\.", "head.aspp.convs.0.0."),
    (r"^segmentation_head\.conv_aspp\.normalization\.", "head.aspp.convs.0.1."),
    (r"^segmentation_head\.conv_pool\.convolution\.", "head.aspp.convs.1.conv.0."),
    (r"^segmentation_head\.conv_pool\.normalization\.", "head.aspp.convs.1.conv.1."),
    (r"^segmentation_head\.conv_projection\.convolution\.", "head.aspp.project.0."),
    (r"^segmentation_head\.conv_projection\.normalization\.", "head.aspp.project.1."),
    (r"^segmentation_head\.classifier\.convolution\.", "head.classifier."),
)


def _unsupported(what: str) -> ConversionError:
    return ConversionError(
        f"this transformers MobileNetV2 checkpoint uses {what}, which deeplabcli does not "
        "support. Use a checkpoint with Google's DeepLab MobileNetV2 settings."
    )


def transformers_config(
    config_dict: Mapping[str, Any],
    num_classes: int,
    *,
    preprocessing: Preprocessing | None = None,
) -> ModelConfig:
    """The :class:`ModelConfig` that reproduces a transformers ``MobileNetV2Config`` exactly.

    ``num_classes`` comes from the classifier tensor (authoritative); class names from
    ``id2label`` when it names exactly that many classes.
    """
    get = config_dict.get
    if get("model_type", "mobilenet_v2") != "mobilenet_v2":
        raise ConversionError(
            f"the config describes a {get('model_type')!r} model, not 'mobilenet_v2'. "
            "Use a MobileNetV2ForSemanticSegmentation checkpoint."
        )
    if not get("first_layer_is_expansion", True):
        raise _unsupported("first_layer_is_expansion=false")
    if float(get("expand_ratio", 6.0)) != 6.0:
        raise _unsupported(f"expand_ratio={get('expand_ratio')}")
    if get("hidden_act", "relu6") != "relu6":
        raise _unsupported(f"hidden_act={get('hidden_act')!r}")
    if int(get("num_channels", 3)) != 3:
        raise _unsupported(f"{get('num_channels')} input channels")
    output_stride = int(get("output_stride", 32))
    if output_stride not in (8, 16, 32):
        raise _unsupported(f"output_stride={output_stride}")
    id2label = get("id2label") or {}
    names = tuple(str(id2label[k]) for k in sorted(id2label, key=int))
    return arch_config(
        "deeplabv3_mobilenetv2",
        num_classes=num_classes,
        class_names=names if len(names) == num_classes else (),
        output_stride=output_stride,
        depth_multiplier=float(get("depth_multiplier", 1.0)),
        depth_divisible_by=int(get("depth_divisible_by", 8)),
        min_depth=int(get("min_depth", 8)),
        tf_padding=bool(get("tf_padding", True)),
        finegrained_output=bool(get("finegrained_output", True)),
        backbone_bn_eps=float(get("layer_norm_eps", 1e-3)),
        head_bn_eps=1e-5,
        head_channels=_HEAD_CHANNELS,
        aspp_dropout=float(get("classifier_dropout_prob", 0.1)),
        folded_bn=False,
        align_corners=False,
        preprocessing=preprocessing or Preprocessing(mean=INCEPTION_MEAN, std=INCEPTION_STD),
    )


def rename_transformers_key(key: str) -> str | None:
    """Our parameter name for transformers' ``key``; None for the unused 1280-channel conv."""
    if key.startswith("mobilenet_v2.conv_1x1."):
        return None
    match = re.match(
        r"^mobilenet_v2\.(?:conv_stem\.(first_conv|conv_3x3|reduce_1x1)|layer\.(\d+)\."
        r"(expand_1x1|conv_3x3|reduce_1x1))\.(convolution|normalization)\.(\w+)$",
        key,
    )
    if match:
        stem_part, index, layer_part, kind, name = match.groups()
        if stem_part == "first_conv":
            prefix = "backbone.stem"
        elif stem_part is not None:
            prefix = f"backbone.blocks.0.{_LAYER_PARTS[stem_part]}"
        else:
            prefix = f"backbone.blocks.{int(index) + 1}.{_LAYER_PARTS[layer_part]}"
        return f"{prefix}.{_CONV_PARTS[kind]}.{name}"
    for pattern, replacement in _HEAD_RULES:
        if re.match(pattern, key):
            return re.sub(pattern, replacement, key)
    raise ConversionError(
        f"unexpected key {key!r} in a transformers MobileNetV2 state dict. "
        "Use a MobileNetV2ForSemanticSegmentation checkpoint."
    )


def from_transformers(
    state_dict: Mapping[str, torch.Tensor],
    config_dict: Mapping[str, Any],
    *,
    preprocessing: Preprocessing | None = None,
    provenance: dict[str, Any] | None = None,
) -> DeepLabV3:
    """Our model carrying the weights of a transformers ``MobileNetV2ForSemanticSegmentation``.

    ``state_dict``: the model's tensors (e.g. from ``model.safetensors``); ``config_dict``: its
    ``config.json`` as a dict. ``preprocessing`` defaults to Google's [-1, 1] scaling without
    resizing. The returned model is in eval mode; its logits before upsampling equal
    transformers' ``logits`` (1/OS size) up to float rounding.
    """
    key = "segmentation_head.classifier.convolution.weight"
    if key not in state_dict:
        raise ConversionError(
            f"this state dict has no {key!r}, so it is not a transformers MobileNetV2 "
            "segmentation checkpoint. Use a MobileNetV2ForSemanticSegmentation checkpoint."
        )
    config = transformers_config(
        config_dict, int(state_dict[key].shape[0]), preprocessing=preprocessing
    )
    renamed: dict[str, torch.Tensor] = {}
    for name, tensor in state_dict.items():
        ours = rename_transformers_key(name)
        if ours is not None:
            renamed[ours] = tensor
    for key in [k for k in renamed if k.endswith(".running_mean")]:
        # Older exports omit BN's step counter; it does not affect the output.
        counter = key.replace(".running_mean", ".num_batches_tracked")
        renamed.setdefault(counter, torch.tensor(0, dtype=torch.long))
    projection = renamed.get("head.aspp.project.0.weight")
    if projection is not None and projection.shape[1] == 2 * config.head_channels:
        pool, one_by_one = projection.split(config.head_channels, dim=1)
        renamed["head.aspp.project.0.weight"] = torch.cat([one_by_one, pool], dim=1)
    return load_converted(config, renamed, source="transformers MobileNetV2", provenance=provenance)
