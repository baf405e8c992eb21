"""The exports that ship with a card (``[export]``): what ``--backend auto`` runs for the
embedded default model on a CPU with ONNX Runtime, with nothing to export first.

The default model is Google's 8-bit MobileNetV2, and its shipped export is that model as an
int8 ONNX graph with the ``.tflite`` file's own scales, zero points and weight codes
(:mod:`deeplabcli.exporting.tflite_quant`, made by ``weights/make_embedded_model.py``), at the
model's 513×513 input: the precision Google trained and published it in, 1.3× faster than its
float graph on ONNX Runtime, and 0.5902 mIoU on the 120 shared VOC val images against 0.5829 in
float and 0.5866 on Google's TFLite runtime. A run gets it when it asks for nothing the graph
cannot do (one scale, no tiles, the export's output stride), ``auto`` means ONNX Runtime here,
and the model is the default (no ``--model``) or named by its card; ``--backend torch``,
``onnxruntime`` or ``openvino`` run the float model, as before.

Torch-free: ``deeplab predict`` decides its path with this before importing torch.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from ..errors import ConfigError, IntegrityError, ModelLoadError
from ..runtimes.extras import auto_backend
from .cards import ModelCard, default_card, find_card
from .integrity import sha256_file


def shipped_export(
    ref: str | os.PathLike | None,
    *,
    backend: str | None,
    device: str = "auto",
    output_stride: int | None = None,
    scales: Sequence[float] = (1.0,),
    tile: object = None,
) -> Path | None:
    """The shipped export to run for model ``ref`` (None: the default model) with these
    options, or None when the run needs the model itself (see the module docstring). A shipped
    file that is missing or damaged raises the one-line error that says to reinstall."""
    if backend != "auto" or tuple(scales) != (1.0,) or tile is not None:
        return None
    card = _card(ref)
    if card is None or not serves(card, str(device)):
        return None
    if output_stride not in (None, card.export.output_stride):  # type: ignore[union-attr]
        return None
    return verified_export(card)


def serves(card: ModelCard, device: str = "auto") -> bool:
    """Whether ``card`` has a shipped export whose runtime ``auto`` means on ``device``."""
    return card.export is not None and auto_backend(device) == card.export.backend


def verified_export(card: ModelCard) -> Path:
    """The path of ``card``'s shipped export, checked against the card's sha256."""
    assert card.export is not None
    path = card.beside(card.export.file)
    if not path.is_file():
        raise ModelLoadError(
            f"the shipped export {path} of {card.name!r} is missing from this installation. "
            "Reinstall deeplabcli (from a checkout: pip install .), or pass --backend torch."
        )
    digest = sha256_file(path)
    if digest != card.export.sha256:
        raise IntegrityError(
            f"the shipped export {path} has sha256 {digest[:12]}… instead of the card's "
            f"{card.export.sha256[:12]}…, so it is damaged. Reinstall deeplabcli "
            "(from a checkout: pip install .), or pass --backend torch."
        )
    return path


def _card(ref: str | os.PathLike | None) -> ModelCard | None:
    try:
        if ref is None:
            return default_card()
        return find_card(os.fspath(ref)) if isinstance(ref, str) else None
    except ConfigError:  # no cards, or no single default: the model loader says so
        return None


__all__ = ["serves", "shipped_export", "verified_export"]
