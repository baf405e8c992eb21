"""Foreign weights → our model: torchvision, transformers, TensorFlow Lite."""

from .tflite import from_tflite
from .torchvision import from_torchvision
from .transformers import from_transformers

__all__ = ["from_tflite", "from_torchvision", "from_transformers"]
