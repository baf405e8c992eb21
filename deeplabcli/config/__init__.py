"""Configuration as data: constants, the architecture (:class:`ModelConfig`), a training run
(:class:`TrainConfig`) and inference (:class:`InferenceConfig`, held by :class:`PredictConfig`
and :class:`EvalConfig`). The ground floor: imports nothing of deeplabcli but its errors."""

from .constants import (
    BACKBONES,
    DATASETS,
    DILATION_CONVENTIONS,
    HARD_CLASSES,
    HEADS,
    IGNORE_INDEX,
    IMAGENET_MEAN,
    IMAGENET_STD,
    INCEPTION_MEAN,
    INCEPTION_STD,
    RESIZE_POLICIES,
    VOC_CLASSES,
    default_class_names,
)
from .inference import (
    BACKENDS,
    MASK_FORMATS,
    TILE_BLENDS,
    EvalConfig,
    InferenceConfig,
    PredictConfig,
    inference_options,
)
from .model import ModelConfig, Preprocessing
from .train import TRAIN_RUNTIME_FIELDS, TrainConfig

__all__ = [
    "BACKBONES",
    "BACKENDS",
    "DATASETS",
    "DILATION_CONVENTIONS",
    "HARD_CLASSES",
    "HEADS",
    "IGNORE_INDEX",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "INCEPTION_MEAN",
    "INCEPTION_STD",
    "MASK_FORMATS",
    "RESIZE_POLICIES",
    "TILE_BLENDS",
    "TRAIN_RUNTIME_FIELDS",
    "VOC_CLASSES",
    "EvalConfig",
    "InferenceConfig",
    "ModelConfig",
    "PredictConfig",
    "Preprocessing",
    "TrainConfig",
    "default_class_names",
    "inference_options",
]
