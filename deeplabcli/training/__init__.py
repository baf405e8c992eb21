"""``deeplab train`` / ``finetune`` as a library: the paper's training recipe.

:func:`train` runs a :class:`~deeplabcli.config.TrainConfig` (model init, data, the loop,
checkpoints, exact resume); :func:`finetune` is stage 2 (BN frozen, OS 8, lr 0.001).
"""

from __future__ import annotations

from .._exports import lazy_exports

#: public name → module that defines it
_EXPORTS: dict[str, str] = {
    "train": "loop",
    "TrainResult": "loop",
    "finetune": "stage2",
    "finetune_config": "stage2",
    "STAGE2_DEFAULTS": "stage2",
    "poly_lr": "schedule",
    "TrainState": "state",
}

__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
