"""How the network runs over images: :class:`InferenceConfig`, shared by
:class:`PredictConfig` (``deeplab predict``) and :class:`EvalConfig` (``deeplab eval``).

The inference options are declared and validated here once; the Segmenter, predict and eval
take them as one object instead of re-declaring them argument by argument.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, ClassVar

from ..errors import ConfigError
from .constants import DATASETS, default_workers

#: Where the network runs: "auto" (the fastest installed for the device: see
#: :func:`deeplabcli.runtimes.extras.auto_backend`), torch, or a runtime that runs the network
#: exported (:mod:`deeplabcli.exporting`) on the CPU.
BACKENDS = ("auto", "torch", "onnxruntime", "openvino")
#: What ``deeplab predict`` writes: masks (palette, index, overlay) or class probabilities
#: (probs: .npz float16 (C, H, W); confidence: a grayscale PNG of the top-class probability).
MASK_FORMATS = ("palette", "index", "overlay", "probs", "confidence")
#: How tiled inference blends the logits of overlapping windows (see inference/tiles.py).
TILE_BLENDS = ("falloff", "mean")


@dataclass
class InferenceConfig:
    """Options of a :class:`~deeplabcli.inference.Segmenter` and of the loops that feed it.

    The paper's protocol (Sec. 4.3) at its simplest is the default: whole images, one scale, no
    flip, the model's own output stride. ``scales`` and ``flip`` add multi-scale / left-right
    flipped inference whose class probabilities are averaged at each image's own size.

    ``backend`` defaults to torch in Python (None: a torch model on torch, an exported file on
    its own runtime) and to ``"auto"`` in the CLI (``--backend``): the library keeps its promise
    that a model runs as it is, to float rounding and without writing an export cache, unless
    the caller asks for a runtime (see the field's comment).
    """

    output_stride: int | None = None  # run at this OS; None = the model's own
    scales: tuple[float, ...] = (1.0,)  # input scales whose class probabilities are averaged
    flip: bool = False  # also run left-right flipped inputs and average
    device: str = "auto"  # "auto" (CUDA when available) | "cpu" | "cuda" | "cuda:1" ...
    amp: bool | None = None  # float16 autocast on CUDA; None = on for CUDA; never on a CPU
    batch_size: int = 1  # images per forward pass (images whose network inputs are equal)
    streams: int | None = None  # CPU: batches run side by side, each on threads/streams
    # threads; None = 2 for small models (MobileNetV2) at batch size 1 on torch and ONNX
    # Runtime, else 1 (always on OpenVINO and CUDA)
    backend: str | None = None  # where the network runs: one of BACKENDS, or None = torch for
    # a torch model, the file's own runtime for an exported one. Not "auto" as in the CLI: the
    # library promises a model runs as it is (predict() runs the model itself, Segmenter a
    # BN-folded copy equal to float rounding) and writes nothing to disk, while a runtime
    # backend first exports the weights into a cache and computes in another library (logits
    # within ~1e-4, not bit-equal); a caller who wants that asks for it by name or "auto"
    tile: int | None = None  # cut images larger than this into overlapping windows of this
    # side (pixels), kept at their own resolution × scale; None = whole images
    tile_overlap: float = 0.25  # overlap of neighbouring windows, a fraction of the side in [0, 1)
    tile_blend: str = "falloff"  # window logits: "falloff" weights or "mean" (mmseg's)

    #: what the error messages call these options ("Fix the <what> option.")
    what: ClassVar[str] = "inference"

    def __post_init__(self) -> None:
        self.scales = tuple(float(s) for s in self.scales)
        self._check(
            (all(math.isfinite(s) for s in self.scales), "scales must be finite numbers"),
            (bool(self.scales) and all(s > 0 for s in self.scales), "scales must be positive"),
            (self.batch_size >= 1, "batch size must be at least 1"),
            (self.streams is None or self.streams >= 1, "streams must be at least 1"),
            (self.backend is None or self.backend in BACKENDS, f"unknown backend {self.backend!r}"),
            (self.tile is None or self.tile >= 1, "tile size must be at least 1 pixel"),
            (0 <= self.tile_overlap < 1, "tile overlap must be at least 0 and below 1"),
            (self.tile_blend in TILE_BLENDS, f"tile blend must be one of {', '.join(TILE_BLENDS)}"),
        )

    def _check(self, *checks: tuple[bool, str]) -> None:
        for ok, problem in checks:
            if not ok:
                raise ConfigError(f"{problem}. Fix the {self.what} option.")

    @property
    def inference(self) -> InferenceConfig:
        """Just the inference options (of a PredictConfig or EvalConfig)."""
        names = [f.name for f in dataclasses.fields(InferenceConfig)]
        return InferenceConfig(**{name: getattr(self, name) for name in names})

    def replace(self, **changes: Any) -> Any:
        """A copy with some fields changed (validated)."""
        return dataclasses.replace(self, **changes)


@dataclass
class PredictConfig(InferenceConfig):
    """Options of ``deeplab predict`` (:func:`deeplabcli.prediction.predict_files`)."""

    output: str | None = None  # one input: a .png file or a folder; several: a folder;
    # None = "<stem>_mask.png" next to each input
    format: str = "palette"  # "palette" (mode P, class indices + colours) | "index" | "overlay"
    # | "probs" (.npz) | "confidence" (PNG); videos: palette, index or overlay
    frames_dir: str | None = None  # videos: write per-frame PNGs into this folder instead
    overwrite: bool = False  # replace existing outputs (otherwise they are skipped)
    workers: int = 2  # background threads that decode inputs and write outputs

    what: ClassVar[str] = "prediction"

    def __post_init__(self) -> None:
        self._check((self.format in MASK_FORMATS, f"unknown format {self.format!r}"))
        super().__post_init__()
        self._check((self.workers >= 1, "workers must be at least 1"))


@dataclass
class EvalConfig(InferenceConfig):
    """Options of ``deeplab eval`` (:func:`deeplabcli.evaluation.run_evaluation`): a data set,
    a model, the inference options (:class:`InferenceConfig`) and where the report goes."""

    amp: bool | None = False  # float16 autocast on CUDA (faster; metrics may move in the
    # last digits); off unless asked for
    dataset: str = "voc"  # "voc" | "folder" (images + masks + classes file)
    data_root: str | None = None  # VOCdevkit (or VOC2012) folder, or the custom data set
    # folder; None = $DEEPLAB_DATA_ROOT
    split: str | None = None  # split name or list file; None = "val" (VOC), "all" (folder)
    model: str | None = None  # model reference; None = the default model card
    workers: int = dataclasses.field(default_factory=lambda: default_workers(2))  # background
    # data loading processes (0 = load in the main process); default: the CPUs, at most 2
    limit: int | None = None  # evaluate only the first N images of the split
    report: str | None = None  # folder for metrics.json, CSVs, charts and the worst images
    worst: int = 8  # how many lowest-mIoU images the report shows

    what: ClassVar[str] = "evaluation"

    def __post_init__(self) -> None:
        self._check((self.dataset in DATASETS, f"dataset must be one of {', '.join(DATASETS)}"))
        super().__post_init__()
        self._check(
            (self.workers >= 0, "workers must not be negative"),
            (self.limit is None or self.limit >= 1, "limit must be at least 1"),
            (self.worst >= 0, "the number of worst images must not be negative"),
        )

    @property
    def split_name(self) -> str:
        """The split to read: the given one, else the data set kind's usual evaluation split."""
        if self.split:
            return self.split
        return "val" if self.dataset == "voc" else "all"


def inference_options(
    config: InferenceConfig | None, options: dict[str, Any], **defaults: Any
) -> InferenceConfig:
    """The inference options of a call that takes ``config`` or its fields by keyword
    (``options``, over ``defaults``): never both."""
    if config is not None:
        if options:
            raise TypeError(
                f"give an InferenceConfig or its options by keyword, not both ({', '.join(options)})"
            )
        return config.inference
    return InferenceConfig(**{**defaults, **options})
