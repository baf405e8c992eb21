"""What ``deeplab info REF`` says about a model reference, without downloading a card's weights.

A card name is described from its card (source, licence, provenance, published metric) and, when
its weights are on this machine (embedded or cached), from the loaded model as well; a card whose
weights are not cached is described from the card alone, never fetched. Any other reference (a
path, a Hub repo) is loaded and described by :func:`~.resolve.describe_model`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .cards import ModelCard, find_card
from .resolve import Ref, card_is_cached, describe_model, load_card_model, load_model


def describe_reference(ref: Ref) -> dict[str, Any]:
    """JSON-ready description of ``ref``: :func:`~.resolve.describe_model`'s keys, plus a
    ``card`` entry for card names (its keys: see :func:`describe_card`). For a card whose
    weights are not on this machine, the model keys come from the card (``parameters`` None)."""
    text = os.fspath(ref)
    card = None if Path(text).expanduser().exists() else find_card(text)
    if card is None:
        return describe_model(load_model(text))
    about = describe_card(card)
    if card.is_model and about["on_this_machine"]:
        return {**describe_model(load_card_model(card, quiet=True)), "card": about}
    preprocessing = card.preprocessing
    return {
        "architecture": card.architecture,
        "backbone": card.backbone,
        "num_classes": card.num_classes,
        "classes": list(card.classes),
        "preprocessing": vars(preprocessing).copy() if preprocessing else None,
        "parameters": None,
        "provenance": {},
        "card": about,
    }


def describe_card(card: ModelCard) -> dict[str, Any]:
    """A card as data: name, description, format, where the weights come from, licence (and the
    paths of its licence files), upstream provenance, the published metric, and whether the
    weights are on this machine (embedded or cached)."""
    metric = card.metric
    return {
        "name": card.name,
        "description": card.description,
        "format": card.format,
        "default": card.default,
        "embedded": card.embedded,
        "source": card.source,
        "sha256": card.sha256,
        "license": card.license,
        "license_files": [str(card.beside(name)) for name in card.license_files],
        "upstream": dict(card.upstream),
        "metric": str(metric) if metric else None,
        "metric_source": metric.source if metric else None,
        "on_this_machine": card_is_cached(card),
    }
