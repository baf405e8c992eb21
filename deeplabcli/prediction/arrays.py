"""``predict`` in memory: images (PIL, arrays, paths) → class maps, and class probabilities with
``return_probs=True``. :func:`~deeplabcli.prediction.pipeline.predict_files` is the form that
reads and writes files."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..config import InferenceConfig, inference_options
from ..inference import ImageLike, Segmenter, as_pixels, device_of
from ..inference.backends import InferenceModel
from ..inference.scores import first_argmax
from ..models import DeepLabV3


def _segmenter(
    model: InferenceModel | Segmenter, config: InferenceConfig | None, options: dict[str, Any]
) -> Segmenter:
    if isinstance(model, Segmenter):
        if config is not None or options:
            raise ValueError("a ready Segmenter brings its own inference options")
        return model
    on_torch = isinstance(model, DeepLabV3) and options.get("backend") in (None, "torch")
    if config is None and options.get("device") is None and on_torch:
        options = {**options, "device": device_of(model)}  # run where the model is
    return Segmenter(model, inference_options(config, options), optimize=False)


def predict(
    model: InferenceModel | Segmenter,
    image: ImageLike,
    config: InferenceConfig | None = None,
    *,
    return_probs: bool = False,
    **options: Any,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Class map of one image (a PIL image, an (H, W[, 3|4]) array or a path): uint8 (H, W)
    at the image's own size (int64 for models with more than 256 classes). With
    ``return_probs``: ``(mask, probs)``, ``probs`` the class probabilities float32 (C, H, W)
    (summing to 1 over C) and ``mask`` their argmax (the first class on ties).

    How it runs is an :class:`~deeplabcli.config.InferenceConfig`, given as ``config`` or as
    its fields by keyword (``output_stride=8, scales=(0.75, 1, 1.25), flip=True``, ``tile=513``).
    ``model`` runs as it is on its own device unless ``device`` says otherwise; for many images
    build a :class:`~deeplabcli.inference.Segmenter` once (it also optimises the network) and
    pass it instead of the model. ``backend="onnxruntime"`` (or ``"openvino"``, ``"auto"``)
    runs the network exported (see :mod:`deeplabcli.inference.backends`); ``model`` may also be
    an exported file (:func:`deeplabcli.runtimes.load_exported`).

    >>> from deeplabcli import build_model
    >>> mask = predict(build_model("deeplabv3_tiny"), np.zeros((40, 60, 3), np.uint8))
    >>> mask.shape, mask.dtype
    ((40, 60), dtype('uint8'))
    """
    return predict_batch(model, [image], config, return_probs=return_probs, **options)[0]


def predict_batch(
    model: InferenceModel | Segmenter,
    images: Sequence[ImageLike],
    config: InferenceConfig | None = None,
    *,
    return_probs: bool = False,
    **options: Any,
) -> list[np.ndarray] | list[tuple[np.ndarray, np.ndarray]]:
    """Class maps of several images (see :func:`predict`), or ``(mask, probs)`` pairs with
    ``return_probs``; equal-size inputs share a batch."""
    segmenter = _segmenter(model, config, options)
    if not return_probs:
        return segmenter.predict_batch(images)
    dtype = torch.uint8 if segmenter.num_classes <= 256 else torch.int64
    maps = segmenter.probability_maps([as_pixels(image) for image in images])
    return [(first_argmax(p).to(dtype).cpu().numpy(), p.cpu().numpy()) for p in maps]
