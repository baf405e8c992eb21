"""deeplabcli: DeepLabv3 semantic segmentation (Chen et al., 2017) as a library and a CLI.

>>> from deeplabcli import ModelConfig, build_model
>>> model = build_model("deeplabv3_resnet101", output_stride=16)

Public names are imported lazily so that ``deeplab --help`` does not pay for importing torch.
"""

from __future__ import annotations

from ._exports import lazy_exports

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
    "Segmenter": "inference",
    "predict": "prediction",
    "predict_batch": "prediction",
    "predict_files": "prediction",
    "EvalConfig": "config",
    "evaluate": "evaluation",
    "run_evaluation": "evaluation",
    "load_model": "weights",
    "export": "exporting",
    "load_backbone_weights": "weights",
    "save_checkpoint": "weights",
    "load_checkpoint": "weights",
    "TrainConfig": "config",
    "train": "training",
    "finetune": "training",
    "bootstrap_split": "data.bootstrap",
}

_names, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = ["__version__", *_names]
