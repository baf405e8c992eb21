"""The DeepLabv3 model family: dilated ResNets, MobileNetV2, ASPP heads, named architectures."""

from .deeplabv3 import DeepLabV3, build_backbone, build_model
from .registry import arch_config, list_archs, register_arch
from .surgery import adapt_classes, describe_tensors, load_strict

__all__ = [
    "DeepLabV3",
    "adapt_classes",
    "arch_config",
    "build_backbone",
    "build_model",
    "describe_tensors",
    "list_archs",
    "load_strict",
    "register_arch",
]
