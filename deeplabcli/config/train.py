"""One training run as data: :class:`TrainConfig` (``train_config.json`` in a run directory)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError
from .constants import DATASETS, default_workers
from .fields import check_fields

#: TrainConfig fields that only say how a run executes, not what it computes: they may differ
#: between a run and its resumption.
TRAIN_RUNTIME_FIELDS = (
    "out",
    "resume",
    "overwrite",
    "device",
    "workers",
    "save_every",
    "val_every",
)


@dataclass
class TrainConfig:
    """One training run (``deeplab train`` / ``finetune``); stored as ``train_config.json`` in
    the run directory. The defaults are the paper's first stage (Sec. 4.1): trainaug, ResNet-101
    at OS 16, Multi_Grid (1, 2, 4), ASPP (6, 12, 18) + image pooling, crop 513, batch 16, SGD
    momentum 0.9, poly LR from 0.007 over 30K iterations, weight decay 1e-4, BN momentum 0.0003.
    """

    # --- data ---
    dataset: str = "voc"  # "voc" | "folder" (images + masks + classes file)
    data_root: str | None = None  # VOCdevkit (or VOC2012) folder, or the custom data set folder
    split: str = "trainaug"  # split name, or the path of a list file (e.g. `deeplab bootstrap`)
    crop_size: int = 513  # square training crop (pixels); the loss is taken at this size
    # --- model ---
    arch: str | None = None  # registered architecture; None = deeplabv3_resnet101, or the
    # architecture of the init checkpoint
    output_stride: int = 16  # OS the model trains at (the paper: 16, then 8 when fine-tuning)
    multi_grid: tuple[int, ...] | None = None  # unit rates of block4+; None = the arch's
    aspp_rates: tuple[int, ...] | None = None  # ASPP rates at OS 16; None = the arch's
    image_pooling: bool | None = None  # ASPP image-level branch; None = the arch's (on)
    cascade: int | None = None  # last ResNet block 4..7; None = the arch's (4)
    aux_loss: bool = False  # add an FCN auxiliary head on block3 (ResNets) and train it
    num_classes: int | None = None  # None = the data set's; a different count than the init
    # checkpoint's re-initialises its classifier (only when given explicitly)
    reinit_classifier: bool = False  # re-initialise the init model's classifier (and aux
    # head) even when its classes are the data set's: train a fresh head on its features
    init: str = "imagenet"  # "imagenet" = the ImageNet card of the backbone, "none" = random,
    # or a model reference (checkpoint, card, file, Hub repo) that initialises everything
    # --- optimisation ---
    batch_size: int = 16  # images per iteration over all processes (each takes its share)
    accumulate: int = 1  # micro-batches per step: each process sums the gradients of
    # `accumulate` micro-batches of batch_size / (processes × accumulate) images (the same step
    # when BN is frozen; trained BN sees micro-batch statistics)
    lr: float = 0.007  # base learning rate of the poly schedule
    lr_power: float = 0.9  # poly exponent
    classifier_lr_mult: float = 1.0  # lr multiplier of the classifier and aux head (TF
    # DeepLab's last_layer_gradient_multiplier): a fresh classifier on slowly moving features
    iters: int = 30000  # iterations (optimizer steps)
    momentum: float = 0.9  # SGD momentum
    weight_decay: float = 1e-4  # L2 on conv weights (not on BN parameters or biases)
    bn_momentum: float = 0.0003  # PyTorch BN momentum = 1 - TF decay 0.9997
    freeze_bn: bool = False  # keep BN statistics and affine parameters fixed (paper stage 2)
    aux_weight: float = 0.4  # weight of the auxiliary loss when the model has an aux head
    amp: bool | None = None  # mixed precision; None = on for CUDA, off on CPU
    deterministic: bool = False  # deterministic algorithms (no cuDNN benchmark, cuBLAS
    # workspace :4096:8): identical runs give identical weights on CUDA too
    # --- validation ---
    val_split: str | None = None  # evaluate mIoU on this split every val_every iterations
    val_every: int = 2000
    # --- run ---
    out: str = "runs/deeplab"  # run directory (a checkpoint directory + training state)
    save_every: int = 1000  # write a checkpoint every N iterations (and at the end)
    log_every: int = 20  # append a metrics.jsonl line every N iterations
    seed: int = 0  # initialisation, data order and augmentation all derive from it
    workers: int = dataclasses.field(default_factory=default_workers)  # data loading processes
    # per training process (0 = in-process); default: the CPUs available, at most 4
    device: str = "auto"  # "auto" (CUDA when available), "cpu", "cuda", "cuda:1", ...
    resume: bool = False  # continue the run in `out` exactly where it stopped
    overwrite: bool = False  # replace a different run found in `out`

    def __post_init__(self) -> None:
        for name in ("multi_grid", "aspp_rates"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, tuple(int(v) for v in value))
        self.validate()

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first invalid field."""
        checks = [
            (self.dataset in DATASETS, f"dataset must be one of {', '.join(DATASETS)}"),
            (self.crop_size >= 1, "crop_size must be positive"),
            (self.batch_size >= 1, "batch_size must be positive"),
            (self.accumulate >= 1, "accumulate must be positive"),
            (self.iters >= 1, "iters must be positive"),
            (self.lr > 0, "lr must be positive"),
            (self.lr_power >= 0, "lr_power must not be negative"),
            (self.classifier_lr_mult > 0, "classifier_lr_mult must be positive"),
            (0 <= self.momentum < 1, "momentum must be in [0, 1)"),
            (self.weight_decay >= 0, "weight_decay must not be negative"),
            (0 <= self.bn_momentum <= 1, "bn_momentum must be in [0, 1]"),
            (self.aux_weight >= 0, "aux_weight must not be negative"),
            (self.output_stride >= 1, "output_stride must be positive"),
            (self.num_classes is None or self.num_classes >= 1, "num_classes must be positive"),
            (self.val_every >= 1, "val_every must be positive"),
            (self.save_every >= 1, "save_every must be positive"),
            (self.log_every >= 1, "log_every must be positive"),
            (self.workers >= 0, "workers must not be negative"),
            (self.seed >= 0, "seed must not be negative"),
            (self.cascade is None or 4 <= self.cascade <= 7, "cascade must be between 4 and 7"),
        ]
        for ok, problem in checks:
            if not ok:
                raise ConfigError(f"{problem}. Fix the training option.")

    def to_dict(self) -> dict[str, Any]:
        return {
            k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, where: str = "training config") -> TrainConfig:
        """Build from a mapping (JSON, TOML); ``-`` in keys reads as ``_``. Unknown keys are a
        :class:`ConfigError` listing the valid ones; every value is type-checked first
        (:func:`~deeplabcli.config.fields.check_fields`: ``where`` and the key in the message)."""
        data = {str(k).replace("-", "_"): v for k, v in data.items()}
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ConfigError(
                f"unknown keys in {where}: {', '.join(unknown)}. Use: {', '.join(known)}."
            )
        return cls(**check_fields(cls, data, where=where))

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)
