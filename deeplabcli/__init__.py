"""deeplabcli: DeepLabv3 semantic segmentation (Chen et al., 2017) as a library and a CLI.

>>> from deeplabcli import ModelConfig, build_model
>>> model = build_model("deeplabv3_resnet101", output_stride=16)

Public names are imported lazily so that ``deeplab --help`` does not pay for importing torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

#: public name → module that defines it
_EXPORTS: dict[str, str] = {
    "IGNORE_INDEX": "config",
    "VOC_CLASSES": "config",
    "ModelConfig": "config",
    "Preprocessing": "config",
    "DeeplabError": "errors",
    "DeepLabV3": "models",
    "build_model": "models",
    "list_archs": "models",
    "PredictConfig": "config",
    "Segmenter": "engine.inference",
    "predict": "engine.predict",
    "predict_batch": "engine.predict",
    "predict_files": "engine.predict",
    "EvalConfig": "config",
    "evaluate": "engine.evaluate",
    "run_evaluation": "engine.evaluate",
    "load_model": "resolve",
    "load_backbone_weights": "resolve",
    "save_checkpoint": "checkpoint",
    "load_checkpoint": "checkpoint",
    "TrainConfig": "config",
    "train": "engine.train",
    "finetune": "engine.finetune",
    "bootstrap_split": "engine.bootstrap",
}

__all__ = ["__version__", *sorted(_EXPORTS)]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'deeplabcli' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
