"""Fine-tuning: the paper's second stage as defaults, and re-initialising only the classifier.

Stage 2 (paper Sec. 4.1): from the stage-1 checkpoint, freeze batch norm, switch to output
stride 8 and train 30K iterations on VOC 2012 ``trainval`` with base lr 0.001.

A checkpoint trained for other classes is adapted with :func:`adapt_classes`: the classifier
(and the auxiliary classifier) are rebuilt for the new class count and every other tensor is
loaded unchanged; the names of the re-initialised tensors are returned so the caller can say
exactly what was replaced.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from ..config import TrainConfig
from ..errors import ModelLoadError
from ..models import DeepLabV3

if TYPE_CHECKING:
    from .train import TrainResult

#: TrainConfig values of the paper's second stage.
STAGE2_DEFAULTS: dict[str, Any] = {
    "freeze_bn": True,
    "output_stride": 8,
    "lr": 0.001,
    "split": "trainval",
    "iters": 30000,
}
#: The only tensors a class-count change may re-initialise.
CLASSIFIER_PREFIXES = ("head.classifier.", "aux_head.")


def finetune_config(init: str, **overrides: Any) -> TrainConfig:
    """A :class:`TrainConfig` that fine-tunes ``init`` (any model reference) with the paper's
    stage-2 defaults; ``overrides`` change any field."""
    return TrainConfig(**{**STAGE2_DEFAULTS, "init": init, **overrides})


def finetune(init: str, *, progress: bool = True, **overrides: Any) -> TrainResult:
    """Fine-tune ``init`` with the paper's stage-2 defaults (see :func:`finetune_config`).

    >>> finetune("runs/r101", data_root="VOCdevkit", out="runs/r101-ft")  # doctest: +SKIP
    """
    from .train import train

    return train(finetune_config(init, **overrides), progress=progress)


def adapt_classes(
    model: DeepLabV3,
    class_names: Sequence[str],
    *,
    aux_head: bool | None = None,
) -> tuple[DeepLabV3, list[str]]:
    """``model`` rebuilt for ``class_names`` (and with an auxiliary head if ``aux_head``).

    Tensors whose name and shape are unchanged are copied; the classifier and aux-head tensors
    that no longer fit (or are new) keep their fresh initialisation (drawn from the global torch
    generator). Returns the new model and the names of the re-initialised tensors in state-dict
    order (empty when nothing changed: then ``model`` itself is returned, with the new class
    names).
    """
    config = model.config
    changes: dict[str, Any] = {"num_classes": len(class_names), "class_names": tuple(class_names)}
    if aux_head is not None and aux_head != config.aux_head:
        changes["aux_head"] = aux_head
    new_config = config.replace(**changes)
    if new_config.num_classes == config.num_classes and new_config.aux_head == config.aux_head:
        model.config = new_config
        return model, []
    adapted = DeepLabV3(new_config).to(next(model.parameters()).device)
    old_state, new_state = model.state_dict(), adapted.state_dict()
    kept = {k: v for k, v in old_state.items() if k in new_state and v.shape == new_state[k].shape}
    fresh = [k for k in new_state if k not in kept]
    stray = [k for k in fresh if not k.startswith(CLASSIFIER_PREFIXES)]
    if stray:  # only possible if the architecture changed, which adapt_classes never does
        raise ModelLoadError(
            f"adapting the model would re-initialise {', '.join(stray)}. "
            "Use a checkpoint of the same architecture."
        )
    with torch.no_grad():
        for key, value in kept.items():
            new_state[key].copy_(value)
    adapted.provenance = getattr(model, "provenance", {})
    return adapted, fresh


def describe_tensors(model: DeepLabV3, names: Sequence[str]) -> str:
    """``head.classifier.weight (4, 256, 1, 1), head.classifier.bias (4,)``."""
    state = model.state_dict()
    return ", ".join(f"{name} {tuple(state[name].shape)}" for name in names)
