"""Inference: a :class:`Segmenter` turns images into class maps or probabilities with the
paper's multi-scale + flip protocol, on a device, optionally on several CPU streams.

Floor: above models and weights, below prediction and evaluation.
"""

from __future__ import annotations

from .._exports import lazy_exports

#: public name → module that defines it
_EXPORTS: dict[str, str] = {
    "Segmenter": "segmenter",
    "ImageLike": "segmenter",
    "as_pixels": "segmenter",
    "ScoreRuns": "scores",
    "resolve_device": "device",
    "device_of": "device",
    "same_device": "device",
    "is_out_of_memory": "device",
    "choose_streams": "streams",
    "compute_streams": "streams",
    "submit": "streams",
}

__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
