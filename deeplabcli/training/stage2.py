"""Fine-tuning: the paper's second stage as defaults, and re-initialising only the classifier.

Stage 2 (paper Sec. 4.1): from the stage-1 checkpoint, freeze batch norm, switch to output
stride 8 and train 30K iterations on VOC 2012 ``trainval`` with base lr 0.001.

A checkpoint trained for other classes is adapted with :func:`adapt_classes`: the classifier
(and the auxiliary classifier) are rebuilt for the new class count and every other tensor is
loaded unchanged; the names of the re-initialised tensors are returned so the caller can say
exactly what was replaced.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..config import TrainConfig

if TYPE_CHECKING:
    from .loop import TrainResult

#: TrainConfig values of the paper's second stage.
STAGE2_DEFAULTS: dict[str, Any] = {
    "freeze_bn": True,
    "output_stride": 8,
    "lr": 0.001,
    "split": "trainval",
    "iters": 30000,
}


def finetune_config(init: str, **overrides: Any) -> TrainConfig:
    """A :class:`TrainConfig` that fine-tunes ``init`` (any model reference) with the paper's
    stage-2 defaults; ``overrides`` change any field."""
    return TrainConfig(**{**STAGE2_DEFAULTS, "init": init, **overrides})


def finetune(init: str, *, progress: bool = True, **overrides: Any) -> TrainResult:
    """Fine-tune ``init`` with the paper's stage-2 defaults (see :func:`finetune_config`).

    >>> finetune("runs/r101", data_root="VOCdevkit", out="runs/r101-ft")  # doctest: +SKIP
    """
    from .loop import train

    return train(finetune_config(init, **overrides), progress=progress)
