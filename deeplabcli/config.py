"""Configuration as data: the model architecture, its preprocessing, and the VOC constants.

A :class:`ModelConfig` fully describes a network, so a checkpoint that stores it (as JSON) can
rebuild its model without any other information. Field values follow the paper's notation.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError

#: Label value that marks "void" pixels (object borders, unlabelled areas); never scored.
IGNORE_INDEX = 255

#: PASCAL VOC 2012 class names in index order (paper, "PASCAL VOC class order").
VOC_CLASSES: tuple[str, ...] = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
    "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
    "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip

#: The classes the paper duplicates in hard-image bootstrapping (Sec. 4.4).
HARD_CLASSES: tuple[str, ...] = ("bicycle", "chair", "diningtable", "pottedplant", "sofa")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: Google's models scale pixels to [-1, 1]: (x - 127.5) / 127.5 == (x/255 - 0.5) / 0.5.
INCEPTION_MEAN = (0.5, 0.5, 0.5)
INCEPTION_STD = (0.5, 0.5, 0.5)

BACKBONES = ("resnet50", "resnet101", "resnet_tiny", "mobilenetv2")
HEADS = ("paper", "torchvision", "mobile")
DILATION_CONVENTIONS = ("paper", "torchvision")
RESIZE_POLICIES = ("none", "fit")


def default_class_names(num_classes: int) -> tuple[str, ...]:
    """VOC's names for 21 classes, otherwise ``class_0 .. class_{n-1}``."""
    if num_classes == len(VOC_CLASSES):
        return VOC_CLASSES
    return tuple(f"class_{i}" for i in range(num_classes))


@dataclass
class Preprocessing:
    """How an RGB image becomes the model's input tensor.

    Pixels are first scaled to [0, 1], then normalised as ``(x - mean) / std`` per channel.
    ``resize="none"`` feeds the whole image at its own size (the paper's evaluation);
    ``resize="fit"`` scales the long side to ``size`` keeping the aspect ratio and pads the rest
    with the mean colour up to ``size × size`` (Google's exported TFLite models); predictions are
    cropped and resized back to the original image size afterwards.
    """

    mean: tuple[float, float, float] = IMAGENET_MEAN  # per-channel mean of [0, 1] RGB input
    std: tuple[float, float, float] = IMAGENET_STD  # per-channel std of [0, 1] RGB input
    resize: str = "none"  # "none" | "fit"
    size: int | None = None  # square input side for resize="fit"

    def __post_init__(self) -> None:
        self.mean = tuple(float(v) for v in self.mean)  # type: ignore[assignment]
        self.std = tuple(float(v) for v in self.std)  # type: ignore[assignment]
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ConfigError("mean and std need three values (R, G, B). Give one per channel.")
        if any(s <= 0 for s in self.std):
            raise ConfigError("std values must be positive. Check the preprocessing settings.")
        if self.resize not in RESIZE_POLICIES:
            raise ConfigError(
                f"unknown resize policy {self.resize!r}. Use one of: {', '.join(RESIZE_POLICIES)}."
            )
        if self.resize == "fit" and (self.size is None or self.size < 1):
            raise ConfigError('resize="fit" needs a positive size. Set preprocessing size.')


@dataclass
class ModelConfig:
    """The complete architecture of a DeepLabv3 network (stored in every checkpoint).

    ResNet fields follow the paper: ``output_stride`` (OS) is input size / feature size;
    ``multi_grid`` holds the unit rates of block4 and of cascaded blocks; ``cascade`` is the last
    ResNet block (4 = the standard network, up to 7 for the "going deeper" study).
    """

    arch: str = "deeplabv3_resnet101"  # registered name the config came from (informational)
    backbone: str = "resnet101"  # one of BACKBONES
    num_classes: int = 21
    class_names: tuple[str, ...] = ()  # one name per class, index order; () = VOC names for
    # 21 classes, else "class_0", "class_1", ...
    output_stride: int = 16  # 8, 16, 32 ... up to 2 ** (cascade + 1)
    # --- ResNet ---
    multi_grid: tuple[int, ...] = (1, 2, 4)  # unit rates (r1, r2, r3) of block4..block7
    cascade: int = 4  # last block: 4 (block4) .. 7 (block7)
    dilation_convention: str = "paper"  # "paper": a dilated block's units all share its rate;
    # "torchvision": its first unit keeps the previous rate (torchvision's ResNet)
    # --- head ---
    head: str = "paper"  # "paper" | "torchvision" | "mobile"
    aspp_rates: tuple[int, ...] = (6, 12, 18)  # atrous rates at OS 16; scaled by 16 / OS
    image_pooling: bool = True  # image-level feature branch of ASPP
    head_channels: int = 256  # filters in every ASPP branch and the projection
    aspp_dropout: float = 0.1  # dropout after the ASPP projection (training only)
    aux_head: bool = False  # FCN auxiliary classifier on block3 (torchvision checkpoints)
    align_corners: bool = False  # logits upsampling; True for TensorFlow/TFLite graphs
    head_bn_eps: float = 1e-5
    # --- MobileNetV2 ---
    depth_multiplier: float = 1.0
    depth_divisible_by: int = 8  # round channels to multiples of this; 1 = no rounding
    min_depth: int = 8
    tf_padding: bool = False  # TensorFlow "SAME" padding (asymmetric for even sizes)
    folded_bn: bool = False  # conv + bias instead of conv + BN everywhere (BN folded in)
    finegrained_output: bool = True  # informational: the unused 1280-channel layer
    backbone_bn_eps: float = 1e-5
    # --- input ---
    preprocessing: Preprocessing = field(default_factory=Preprocessing)

    def __post_init__(self) -> None:
        if isinstance(self.preprocessing, dict):
            self.preprocessing = Preprocessing(**self.preprocessing)
        for name in ("class_names", "multi_grid", "aspp_rates"):
            setattr(self, name, tuple(getattr(self, name)))
        if not self.class_names:
            self.class_names = default_class_names(self.num_classes)
        self.validate()

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first inconsistent field."""

        def bad(msg: str) -> None:
            raise ConfigError(msg + ".")

        if self.backbone not in BACKBONES:
            bad(f"unknown backbone {self.backbone!r}. Use one of: {', '.join(BACKBONES)}")
        if self.head not in HEADS:
            bad(f"unknown head {self.head!r}. Use one of: {', '.join(HEADS)}")
        if self.dilation_convention not in DILATION_CONVENTIONS:
            bad(
                f"unknown dilation convention {self.dilation_convention!r}. "
                f"Use one of: {', '.join(DILATION_CONVENTIONS)}"
            )
        if self.num_classes < 1:
            bad(f"num_classes must be at least 1, got {self.num_classes}. Give a positive count")
        if len(self.class_names) != self.num_classes:
            bad(
                f"{len(self.class_names)} class names for {self.num_classes} classes. "
                "Give exactly one name per class"
            )
        if not 4 <= self.cascade <= 7:
            bad(f"cascade must be between 4 and 7 (block4..block7), got {self.cascade}")
        if len(self.multi_grid) != 3 or any(r < 1 for r in self.multi_grid):
            bad(f"multi_grid needs three positive unit rates, got {self.multi_grid}")
        if any(r < 1 for r in self.aspp_rates):
            bad(f"ASPP rates must be positive, got {self.aspp_rates}")
        if self.head == "mobile" and self.aspp_rates:
            bad(
                f"the mobile head has no atrous ASPP branches, got aspp_rates {self.aspp_rates}. "
                "Give no rates (aspp_rates=()) with head 'mobile'"
            )
        self.check_output_stride(self.output_stride)
        if self.head == "torchvision" and self.backbone == "mobilenetv2":
            bad("the torchvision head needs a ResNet backbone. Use head 'mobile' or 'paper'")
        if self.aux_head and self.backbone == "mobilenetv2":
            bad("the auxiliary head needs a ResNet backbone (it reads block3). Disable aux_head")
        if self.depth_multiplier <= 0:
            bad(f"depth_multiplier must be positive, got {self.depth_multiplier}")

    def valid_output_strides(self) -> tuple[int, ...]:
        """Output strides this backbone can produce: 8 .. 32 for MobileNetV2 and block4 ResNets,
        up to 2 ** (cascade + 1) for cascaded ResNets (block7 without atrous: 256)."""
        top = 32 if self.backbone == "mobilenetv2" else 2 ** (self.cascade + 1)
        return tuple(2**k for k in range(3, top.bit_length()))

    def check_output_stride(self, output_stride: int) -> None:
        valid = self.valid_output_strides()
        if output_stride not in valid:
            raise ConfigError(
                f"output stride {output_stride} is not possible for this model. "
                f"Use one of: {', '.join(map(str, valid))}."
            )

    def scaled_aspp_rates(self, output_stride: int | None = None) -> tuple[int, ...]:
        """ASPP rates at ``output_stride`` (default: the config's): rates × 16 / OS, at least 1.

        >>> ModelConfig().scaled_aspp_rates(8)
        (12, 24, 36)
        """
        os_ = output_stride or self.output_stride
        return tuple(max(1, round(r * 16 / os_)) for r in self.aspp_rates)

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        for key, value in list(data.items()):
            if isinstance(value, tuple):
                data[key] = list(value)
        data["preprocessing"] = {
            k: list(v) if isinstance(v, tuple) else v for k, v in data["preprocessing"].items()
        }
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(
                f"unknown model config fields: {', '.join(unknown)}. "
                "The checkpoint may come from a newer deeplabcli; upgrade it."
            )
        return cls(**data)

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    @classmethod
    def from_json(cls, text: str) -> ModelConfig:
        return cls.from_dict(json.loads(text))

    def replace(self, **changes: Any) -> ModelConfig:
        """A copy with some fields changed (validated)."""
        return dataclasses.replace(self, **changes)


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
DATASETS = ("voc", "folder")


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
    init: str = "imagenet"  # "imagenet" = the ImageNet card of the backbone, "none" = random,
    # or a model reference (checkpoint, card, file, Hub repo) that initialises everything
    # --- optimisation ---
    batch_size: int = 16  # images per iteration over all processes (each takes its share)
    lr: float = 0.007  # base learning rate of the poly schedule
    lr_power: float = 0.9  # poly exponent
    iters: int = 30000  # iterations (optimizer steps)
    momentum: float = 0.9  # SGD momentum
    weight_decay: float = 1e-4  # L2 on conv weights (not on BN parameters or biases)
    bn_momentum: float = 0.0003  # PyTorch BN momentum = 1 - TF decay 0.9997
    freeze_bn: bool = False  # keep BN statistics and affine parameters fixed (paper stage 2)
    aux_weight: float = 0.4  # weight of the auxiliary loss when the model has an aux head
    amp: bool | None = None  # mixed precision; None = on for CUDA, off on CPU
    # --- validation ---
    val_split: str | None = None  # evaluate mIoU on this split every val_every iterations
    val_every: int = 2000
    # --- run ---
    out: str = "runs/deeplab"  # run directory (a checkpoint directory + training state)
    save_every: int = 1000  # write a checkpoint every N iterations (and at the end)
    log_every: int = 20  # append a metrics.jsonl line every N iterations
    seed: int = 0  # initialisation, data order and augmentation all derive from it
    workers: int = 4  # data loading processes per training process (0 = in-process)
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
            (self.iters >= 1, "iters must be positive"),
            (self.lr > 0, "lr must be positive"),
            (self.lr_power >= 0, "lr_power must not be negative"),
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
        :class:`ConfigError` listing the valid ones."""
        data = {str(k).replace("-", "_"): v for k, v in data.items()}
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ConfigError(
                f"unknown keys in {where}: {', '.join(unknown)}. Use: {', '.join(known)}."
            )
        try:
            return cls(**data)
        except (TypeError, ValueError) as error:
            raise ConfigError(f"invalid {where} ({error}). Fix the values.") from None

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)


MASK_FORMATS = ("palette", "index", "overlay")


@dataclass
class PredictConfig:
    """Options of ``deeplab predict`` (:func:`deeplabcli.engine.predict.predict_files`)."""

    output: str | None = None  # one input: a .png file or a folder; several: a folder;
    # None = "<stem>_mask.png" next to each input
    format: str = "palette"  # "palette" (mode P, class indices + colours) | "index" | "overlay"
    output_stride: int | None = None  # run at this OS; None = the model's own
    scales: tuple[float, ...] = (1.0,)  # input scales whose probabilities are averaged
    flip: bool = False  # also run left-right flipped inputs and average
    device: str = "auto"  # "auto" (CUDA when available) | "cpu" | "cuda"
    batch_size: int = 1  # images per forward pass (images whose inputs have equal sizes)
    overwrite: bool = False  # replace existing outputs (otherwise they are skipped)
    workers: int = 2  # background threads that decode inputs and write outputs
    streams: int | None = None  # CPU: batches run side by side, each on threads/streams
    # threads; None = 2 for small models (MobileNetV2) at batch size 1, else 1; 1 on CUDA

    def __post_init__(self) -> None:
        self.scales = tuple(float(s) for s in self.scales)
        checks = [
            (self.format in MASK_FORMATS, f"unknown format {self.format!r}"),
            (bool(self.scales) and all(s > 0 for s in self.scales), "scales must be positive"),
            (self.batch_size >= 1, "batch size must be at least 1"),
            (self.workers >= 1, "workers must be at least 1"),
            (self.streams is None or self.streams >= 1, "streams must be at least 1"),
        ]
        for ok, problem in checks:
            if not ok:
                raise ConfigError(f"{problem}. Fix the prediction option.")


@dataclass
class EvalConfig:
    """Options of ``deeplab eval`` (:func:`deeplabcli.engine.evaluate.run_evaluation`).

    The defaults are the paper's protocol (Sec. 4.3) at its simplest: whole images at their
    own size, one scale, no flip, the model's own output stride; ``scales`` and ``flip`` add
    multi-scale / left-right flipped inference whose class probabilities are averaged.
    """

    dataset: str = "voc"  # "voc" | "folder" (images + masks + classes file)
    data_root: str | None = None  # VOCdevkit (or VOC2012) folder, or the custom data set
    # folder; None = $DEEPLAB_DATA_ROOT
    split: str | None = None  # split name or list file; None = "val" (VOC), "all" (folder)
    model: str | None = None  # model reference; None = the default model card
    output_stride: int | None = None  # evaluate at this OS; None = the model's own
    scales: tuple[float, ...] = (1.0,)  # input scales whose probabilities are averaged
    flip: bool = False  # also run left-right flipped inputs and average
    batch_size: int = 1  # images per forward pass (images of equal network input size)
    workers: int = 2  # background data loading processes (0 = load in the main process)
    streams: int | None = None  # CPU: batches run side by side; None = 2 for small models at
    # batch size 1, else 1
    device: str = "auto"  # "auto" (CUDA when available) | "cpu" | "cuda" | "cuda:1" ...
    amp: bool = False  # float16 autocast on CUDA (faster; metrics may move in the last digits)
    limit: int | None = None  # evaluate only the first N images of the split
    report: str | None = None  # folder for metrics.json, CSVs, charts and the worst images
    worst: int = 8  # how many lowest-mIoU images the report shows

    def __post_init__(self) -> None:
        self.scales = tuple(float(s) for s in self.scales)
        checks = [
            (self.dataset in DATASETS, f"dataset must be one of {', '.join(DATASETS)}"),
            (bool(self.scales) and all(s > 0 for s in self.scales), "scales must be positive"),
            (self.batch_size >= 1, "batch size must be at least 1"),
            (self.workers >= 0, "workers must not be negative"),
            (self.streams is None or self.streams >= 1, "streams must be at least 1"),
            (self.limit is None or self.limit >= 1, "limit must be at least 1"),
            (self.worst >= 0, "the number of worst images must not be negative"),
        ]
        for ok, problem in checks:
            if not ok:
                raise ConfigError(f"{problem}. Fix the evaluation option.")

    @property
    def split_name(self) -> str:
        """The split to read: the given one, else the data set kind's usual evaluation split."""
        if self.split:
            return self.split
        return "val" if self.dataset == "voc" else "all"
