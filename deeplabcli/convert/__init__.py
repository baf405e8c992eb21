"""Foreign weights → our model: torchvision, transformers, TensorFlow Lite."""

from .torchvision import from_torchvision
from .transformers import from_transformers

__all__ = ["from_torchvision", "from_transformers"]
