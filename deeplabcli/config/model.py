"""The architecture as data: :class:`ModelConfig` and the input :class:`Preprocessing`.

A :class:`ModelConfig` fully describes a network, so a checkpoint that stores it (as JSON) can
rebuild its model without any other information. Field values follow the paper's notation.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError
from .constants import (
    BACKBONES,
    DILATION_CONVENTIONS,
    HEADS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    RESIZE_POLICIES,
    default_class_names,
)
from .fields import check_fields


@dataclass
class Preprocessing:
    """How an RGB image becomes the model's input tensor.

    Pixels are first scaled to [0, 1], then normalised as ``(x - mean) / std`` per channel.
    ``resize="none"`` feeds the whole image at its own size (the paper's evaluation);
    ``resize="fit"`` scales the long side to ``size`` keeping the aspect ratio and pads the rest
    with the mean colour up to ``size × size`` (Google's exported TFLite models); predictions are
    cropped and resized back to the original image size afterwards.
    """

    mean: tuple[float, float, float] = IMAGENET_MEAN  # per-channel mean of [0, 1] RGB input
    std: tuple[float, float, float] = IMAGENET_STD  # per-channel std of [0, 1] RGB input
    resize: str = "none"  # "none" | "fit"
    size: int | None = None  # square input side for resize="fit"

    def __post_init__(self) -> None:
        self.mean = tuple(float(v) for v in self.mean)  # type: ignore[assignment]
        self.std = tuple(float(v) for v in self.std)  # type: ignore[assignment]
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ConfigError("mean and std need three values (R, G, B). Give one per channel.")
        if any(s <= 0 for s in self.std):
            raise ConfigError("std values must be positive. Check the preprocessing settings.")
        if self.resize not in RESIZE_POLICIES:
            raise ConfigError(
                f"unknown resize policy {self.resize!r}. Use one of: {', '.join(RESIZE_POLICIES)}."
            )
        if self.resize == "fit" and (self.size is None or self.size < 1):
            raise ConfigError('resize="fit" needs a positive size. Set preprocessing size.')


@dataclass
class ModelConfig:
    """The complete architecture of a DeepLabv3 network (stored in every checkpoint).

    ResNet fields follow the paper: ``output_stride`` (OS) is input size / feature size;
    ``multi_grid`` holds the unit rates of block4 and of cascaded blocks; ``cascade`` is the last
    ResNet block (4 = the standard network, up to 7 for the "going deeper" study).
    """

    arch: str = "deeplabv3_resnet101"  # registered name the config came from (informational)
    backbone: str = "resnet101"  # one of BACKBONES
    num_classes: int = 21
    class_names: tuple[str, ...] = ()  # one name per class, index order; () = VOC names for
    # 21 classes, else "class_0", "class_1", ...
    output_stride: int = 16  # 8, 16, 32 ... up to 2 ** (cascade + 1)
    # --- ResNet ---
    multi_grid: tuple[int, ...] = (1, 2, 4)  # unit rates (r1, r2, r3) of block4..block7
    cascade: int = 4  # last block: 4 (block4) .. 7 (block7)
    dilation_convention: str = "paper"  # "paper": a dilated block's units all share its rate;
    # "torchvision": its first unit keeps the previous rate (torchvision's ResNet)
    # --- head ---
    head: str = "paper"  # "paper" | "torchvision" | "mobile"
    aspp_rates: tuple[int, ...] = (6, 12, 18)  # atrous rates at OS 16; scaled by 16 / OS
    image_pooling: bool = True  # image-level feature branch of ASPP
    head_channels: int = 256  # filters in every ASPP branch and the projection
    aspp_dropout: float = 0.1  # dropout after the ASPP projection (training only)
    aux_head: bool = False  # FCN auxiliary classifier on block3 (torchvision checkpoints)
    align_corners: bool = False  # logits upsampling; True for TensorFlow/TFLite graphs
    head_bn_eps: float = 1e-5
    # --- MobileNetV2 ---
    depth_multiplier: float = 1.0
    depth_divisible_by: int = 8  # round channels to multiples of this; 1 = no rounding
    min_depth: int = 8
    tf_padding: bool = False  # TensorFlow "SAME" padding (asymmetric for even sizes)
    folded_bn: bool = False  # conv + bias instead of conv + BN everywhere (BN folded in)
    finegrained_output: bool = True  # informational: the unused 1280-channel layer
    backbone_bn_eps: float = 1e-5
    # --- input ---
    preprocessing: Preprocessing = field(default_factory=Preprocessing)

    def __post_init__(self) -> None:
        if isinstance(self.preprocessing, dict):
            self.preprocessing = Preprocessing(**self.preprocessing)
        for name in ("class_names", "multi_grid", "aspp_rates"):
            setattr(self, name, tuple(getattr(self, name)))
        if not self.class_names:
            self.class_names = default_class_names(self.num_classes)
        self.validate()

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first inconsistent field."""

        def bad(msg: str) -> None:
            raise ConfigError(msg + ".")

        if self.backbone not in BACKBONES:
            bad(f"unknown backbone {self.backbone!r}. Use one of: {', '.join(BACKBONES)}")
        if self.head not in HEADS:
            bad(f"unknown head {self.head!r}. Use one of: {', '.join(HEADS)}")
        if self.dilation_convention not in DILATION_CONVENTIONS:
            bad(
                f"unknown dilation convention {self.dilation_convention!r}. "
                f"Use one of: {', '.join(DILATION_CONVENTIONS)}"
            )
        if self.num_classes < 1:
            bad(f"num_classes must be at least 1, got {self.num_classes}. Give a positive count")
        if len(self.class_names) != self.num_classes:
            bad(
                f"{len(self.class_names)} class names for {self.num_classes} classes. "
                "Give exactly one name per class"
            )
        if not 4 <= self.cascade <= 7:
            bad(f"cascade must be between 4 and 7 (block4..block7), got {self.cascade}")
        if len(self.multi_grid) != 3 or any(r < 1 for r in self.multi_grid):
            bad(f"multi_grid needs three positive unit rates, got {self.multi_grid}")
        if any(r < 1 for r in self.aspp_rates):
            bad(f"ASPP rates must be positive, got {self.aspp_rates}")
        if self.head == "mobile" and self.aspp_rates:
            bad(
                f"the mobile head has no atrous ASPP branches, got aspp_rates {self.aspp_rates}. "
                "Give no rates (aspp_rates=()) with head 'mobile'"
            )
        self.check_output_stride(self.output_stride)
        if self.head == "torchvision" and self.backbone == "mobilenetv2":
            bad("the torchvision head needs a ResNet backbone. Use head 'mobile' or 'paper'")
        if self.aux_head and self.backbone == "mobilenetv2":
            bad("the auxiliary head needs a ResNet backbone (it reads block3). Disable aux_head")
        if self.depth_multiplier <= 0:
            bad(f"depth_multiplier must be positive, got {self.depth_multiplier}")

    def valid_output_strides(self) -> tuple[int, ...]:
        """Output strides this backbone can produce: 8 .. 32 for MobileNetV2 and block4 ResNets,
        up to 2 ** (cascade + 1) for cascaded ResNets (block7 without atrous: 256)."""
        top = 32 if self.backbone == "mobilenetv2" else 2 ** (self.cascade + 1)
        return tuple(2**k for k in range(3, top.bit_length()))

    def check_output_stride(self, output_stride: int) -> None:
        valid = self.valid_output_strides()
        if output_stride not in valid:
            raise ConfigError(
                f"output stride {output_stride} is not possible for this model. "
                f"Use one of: {', '.join(map(str, valid))}."
            )

    def scaled_aspp_rates(self, output_stride: int | None = None) -> tuple[int, ...]:
        """ASPP rates at ``output_stride`` (default: the config's): rates × 16 / OS, at least 1.

        >>> ModelConfig().scaled_aspp_rates(8)
        (12, 24, 36)
        """
        os_ = output_stride or self.output_stride
        return tuple(max(1, round(r * 16 / os_)) for r in self.aspp_rates)

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        for key, value in list(data.items()):
            if isinstance(value, tuple):
                data[key] = list(value)
        data["preprocessing"] = {
            k: list(v) if isinstance(v, tuple) else v for k, v in data["preprocessing"].items()
        }
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, where: str | None = None) -> ModelConfig:
        """Build from a parsed JSON mapping, every value type-checked
        (:func:`~deeplabcli.config.fields.check_fields`); ``where`` (a file) starts each error."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        lead = f"{where}: " if where else ""
        if unknown:
            raise ConfigError(
                f"{lead}unknown model config fields: {', '.join(unknown)}. "
                "The checkpoint may come from a newer deeplabcli; upgrade it."
            )
        checked = check_fields(cls, data, where=where)
        try:
            return cls(**checked)
        except ConfigError as error:
            raise ConfigError(f"{lead}{error}") from None

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    @classmethod
    def from_json(cls, text: str) -> ModelConfig:
        return cls.from_dict(json.loads(text))

    def replace(self, **changes: Any) -> ModelConfig:
        """A copy with some fields changed (validated)."""
        return dataclasses.replace(self, **changes)
