"""Foreign weights → our model: torchvision, transformers, TensorFlow Lite."""

from .torchvision import from_torchvision

__all__ = ["from_torchvision"]
