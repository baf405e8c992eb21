"""Model references → models: the only package that reads weight files.

:func:`load_model` resolves any reference (a card name from ``weights/``, a checkpoint folder,
a ``.safetensors``/``.pth``/``.tflite`` file, a Hub repo); :mod:`.checkpoint` writes and reads
our format; :mod:`.formats` reads weight files; :mod:`.download` fetches from the Hub or a URL
with sha256 checks; :mod:`.convert` imports torchvision, transformers and TFLite weights.
Reading model cards (:mod:`.cards`) never imports torch.
"""

from __future__ import annotations

from .._exports import lazy_exports

#: public name → module that defines it
_EXPORTS: dict[str, str] = {
    "load_model": "resolve",
    "load_backbone_weights": "resolve",
    "default_model_name": "resolve",
    "describe_model": "resolve",
    "download_model": "resolve",
    "convert_model": "resolve",
    "describe_reference": "describe",
    "save_checkpoint": "checkpoint",
    "load_checkpoint": "checkpoint",
    "ModelCard": "cards",
    "list_cards": "cards",
    "get_card": "cards",
    "find_card": "cards",
    "default_card": "cards",
    "read_weights": "formats",
}

__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
