"""The DeepLabv3 model family: dilated ResNets, MobileNetV2, ASPP heads, named architectures."""

from .deeplabv3 import DeepLabV3, build_backbone, build_model
from .registry import arch_config, list_archs, register_arch

__all__ = [
    "DeepLabV3",
    "arch_config",
    "build_backbone",
    "build_model",
    "list_archs",
    "register_arch",
]
