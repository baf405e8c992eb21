"""The shared inference core of ``deeplab predict`` and ``deeplab eval``.

A :class:`Segmenter` wraps a model with everything needed to turn images into class maps at the
images' own size: the model's preprocessing (normalisation, resize policy), an output stride,
the paper's multi-scale and left-right flip inference (Sec. 4.3: class probabilities of all runs
are averaged at the original image size), a device, and an inference-optimised copy of the
network (batch norm folded, channels-last).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.nn import functional as F

from ..config import InferenceConfig, inference_options
from ..data.images import read_image, to_rgb
from ..errors import ScaleLimitError
from ..runtimes import ExportedModel
from .backends import InferenceModel, build_network, check_static_size, plan_backend
from .device import device_of, resolve_device  # noqa: F401 (imported from here elsewhere)
from .precision import narrow_precision, precision_name
from .scores import ScoreRuns
from .tiles import scaled_size, tiled_map, tiling_for

#: What the engine accepts as an image: a PIL image, an array (H, W[, 3|4]) or a file path.
ImageLike = Image.Image | np.ndarray | str | os.PathLike
#: The most pixels a scale above 1 may give one network input (4096 × 4096): `--scales 100` on
#: a 64×48 photo would otherwise ask for a 6400×4800 input and gigabytes of memory. Scales up to
#: 1 are never refused, so a big photo always runs at its own size.
MAX_SCALED_PIXELS = 4096 * 4096


def as_pixels(image: ImageLike) -> torch.Tensor:
    """An image as a uint8 tensor (3, H, W), RGB. Paths are read with
    :func:`~deeplabcli.data.images.read_image` (EXIF orientation honoured); arrays may be
    (H, W), (H, W, 3) or (H, W, 4) of any integer dtype Pillow accepts, or floats in [0, 1]."""
    if isinstance(image, (str, os.PathLike)):
        image = read_image(image)
    elif isinstance(image, np.ndarray):
        array = image
        if array.dtype.kind == "f":
            array = np.clip(np.rint(array * 255.0), 0, 255).astype(np.uint8)
        if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (1, 3, 4)):
            raise ValueError(f"expected an array (H, W), (H, W, 3) or (H, W, 4), got {array.shape}")
        image = Image.fromarray(
            array.squeeze(2) if array.ndim == 3 and array.shape[2] == 1 else array
        )
    if not isinstance(image, Image.Image):
        raise TypeError(
            f"expected a PIL image, a numpy array or a path, got {type(image).__name__}"
        )
    rgb = np.asarray(to_rgb(image), dtype=np.uint8)
    return torch.from_numpy(rgb.copy()).permute(2, 0, 1)


def _side(pixels: int) -> str:
    side = math.isqrt(pixels)
    return f"{side}×{side}"


@dataclass(frozen=True)
class _Placement:
    """Where an image sits in a network input: its content size there and the input size."""

    content: tuple[int, int]  # (h, w) of the resized image inside the input
    canvas: tuple[int, int]  # (H, W) of the network input (padded for resize="fit")


class Segmenter:
    """Images → class maps (H, W) or class probabilities (C, H, W) at each image's own size.

    How the network runs is one :class:`~deeplabcli.config.InferenceConfig`, given as
    ``config`` or as its fields by keyword (``Segmenter(model, output_stride=8, flip=True)``):

    - ``output_stride``: run at this OS (the model is switched on a private copy).
    - ``scales``, ``flip``: multi-scale / left-right flipped inference; the softmax
      probabilities of all runs are averaged at the original size (paper Sec. 4.3).
    - ``device``: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
    - ``backend``: ``"torch"``, ``"onnxruntime"``, ``"openvino"`` (on the CPU, the network
      exported once into a cache) or ``"auto"`` (:mod:`.backends`); :attr:`backend` says which
      runs. ``model`` may also be an exported file (:func:`~deeplabcli.runtimes.load_exported`).
    - ``amp``: autocast (float16 on CUDA, bfloat16 on a CPU); ``None`` = the device's fast
      precision: on for CUDA, on a CPU for large models where it has native bfloat16
      (:mod:`~deeplabcli.inference.precision`).
    - ``batch_size``, ``streams``: how the loops that feed the segmenter (predict, eval) batch
      images and run batches side by side; kept here so they travel with the rest.
    - ``tile``, ``tile_overlap``, ``tile_blend``: images larger than ``tile`` pixels (at a
      scale) run in overlapping windows at their own resolution (:mod:`.tiles`).

    Besides: ``optimize`` runs a private copy with batch norm folded into the convs and
    channels-last weights (same outputs to float rounding; otherwise the model itself is used);
    ``inplace``, with ``optimize``, optimises the model itself instead of a copy (half the
    weight memory; the model is then only fit for inference). ``reference``: the model
    reference ``model`` was loaded from (None: the default model), remembered with its export
    on a runtime backend so a later run finds the export without loading the model.

    The model's ``config.preprocessing`` decides normalisation and the resize policy.
    """

    def __init__(
        self,
        model: InferenceModel,
        config: InferenceConfig | None = None,
        *,
        optimize: bool = True,
        inplace: bool = False,
        reference: str | os.PathLike | bool | None = False,
        **options: Any,
    ) -> None:
        self.options = inference_options(config, options)
        self.backend, self.device = plan_backend(model, self.options)
        self.options = self.options.replace(backend=self.backend)
        self.scales = self.options.scales
        self.flip = self.options.flip
        narrow = narrow_precision(model, self.options.amp, self.device, self.backend)
        self.autocast = narrow if self.backend == "torch" else None  # OpenVINO: its own
        self.amp = narrow is not None  # float16 on CUDA, bfloat16 on a CPU
        self.network, self.config = build_network(
            model, self.options, self.backend, self.device, optimize=optimize,
            inplace=inplace, reference=reference, autocast=self.amp,
        )  # fmt: skip
        self.precision = precision_name(model, narrow)  # what --json and eval's summary say
        self.channels_last = optimize and self.backend == "torch"
        self.exported = model if isinstance(model, ExportedModel) else None
        prep = self.config.preprocessing
        std = torch.tensor(prep.std, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        mean = torch.tensor(prep.mean, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self._scale = 1.0 / (255.0 * std)  # uint8 → (x/255 - mean) / std = x·scale - shift
        self._shift = mean / std
        self.tiling = tiling_for(self.options, self.config.output_stride, prep.size)

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.config.class_names

    @property
    def runs_per_image(self) -> int:
        return len(self.scales) * (2 if self.flip else 1)

    # ------------------------------------------------------------------ public API
    def predict(self, image: ImageLike) -> np.ndarray:
        """Class map of one image: (H, W) uint8 (int64 for more than 256 classes)."""
        return self.predict_batch([image])[0]

    def predict_batch(self, images: Sequence[ImageLike]) -> list[np.ndarray]:
        """Class maps of several images, (H_i, W_i) each; images whose network inputs have the
        same size run as one batch."""
        return [mask.cpu().numpy() for mask in self.masks([as_pixels(i) for i in images])]

    def probabilities(self, image: ImageLike) -> torch.Tensor:
        """Class probabilities of one image: float32 (C, H, W) on the CPU, summing to 1."""
        return self.probability_maps([as_pixels(image)])[0].cpu()

    def masks(self, pixels: Sequence[torch.Tensor] | torch.Tensor) -> list[torch.Tensor]:
        """Class maps of images given as uint8 (3, H_i, W_i) tensors (or one (N, 3, H, W)
        batch): one (H_i, W_i) tensor each, uint8 (int64 beyond 256 classes), on :attr:`device`."""
        dtype = torch.uint8 if self.num_classes <= 256 else torch.int64
        return [m.to(dtype) for m in self._maps(pixels, "mask")]

    def probability_maps(self, pixels: Sequence[torch.Tensor] | torch.Tensor) -> list[torch.Tensor]:
        """Class probabilities of images given as in :meth:`masks`: float32 (C, H_i, W_i) each,
        summing to 1 over C, on :attr:`device`; ``first_argmax`` of one is its class map."""
        return self._maps(pixels, "probs")

    def _maps(self, pixels: Sequence[torch.Tensor] | torch.Tensor, want: str) -> list[torch.Tensor]:
        """Masks or probabilities (``want``): images larger than the tile window are tiled
        (:mod:`~deeplabcli.inference.tiles`), the others run whole through :meth:`scores`."""
        pixels = list(pixels)
        tiled = [self._tiled((int(x.shape[-2]), int(x.shape[-1]))) for x in pixels]
        whole = iter(self.scores([x for x, t in zip(pixels, tiled, strict=True) if not t]))
        maps = []
        for x, t in zip(pixels, tiled, strict=True):
            if not t:
                runs = next(whole)
                maps.append(runs.argmax() if want == "mask" else runs.probabilities())
                continue
            self.check_size((int(x.shape[-2]), int(x.shape[-1])))
            with self._running():
                maps.append(tiled_map(
                    x.to(self.device), self.tiling,  # type: ignore[arg-type]
                    scales=self.scales, flip=self.flip, run=self._run,
                    placement=lambda size, scale: dataclasses.astuple(self._placement(size, scale)),
                    fit=self.config.preprocessing.resize == "fit", batch=self.options.batch_size,
                    align_corners=self.config.align_corners, want=want,
                ))  # fmt: skip
        return maps

    def batch_key(self, size: tuple[int, int]) -> tuple[int, int]:
        """The network input size of an (H, W) image at scale 1: images with equal keys can
        share a batch (every image, for ``resize="fit"`` models); (0, 0) for tiled images,
        which run window by window whatever their batch."""
        return (0, 0) if self._tiled(size) else self._placement(size, 1.0).canvas

    def check_size(self, size: tuple[int, int], name: str = "") -> None:
        """Raise :class:`ScaleLimitError` if a scale above 1 gives an (H, W) image a network
        input of more than :data:`MAX_SCALED_PIXELS` pixels; the message names the image
        (``name``, e.g. its id and path), the limit and the largest scale the image allows.
        A model exported with a static input size raises :class:`ConfigError` for images whose
        network inputs (or tiles) would have another size."""
        height, width = size
        prep = self.config.preprocessing
        if self.exported is not None and self.exported.info.static_size is not None:
            image = f"the {width}×{height} image" + (f" {name}" if name else "")
            static = self.exported.info.static_size
            check_static_size(static, self._input_sizes(size), image, self.exported.path)

        def fits(scale: float) -> bool:
            return math.prod(self._placement(size, scale).canvas) <= MAX_SCALED_PIXELS

        for scale in (s for s in self.scales if s > 1 and not fits(s)):
            rows, cols = self._placement(size, scale).canvas
            fit = prep.resize == "fit"  # every image fills the model's size × size input
            native = (prep.size or 1) ** 2 if fit else height * width
            largest = math.floor(100 * math.sqrt(MAX_SCALED_PIXELS / native)) / 100
            while largest > 1 and not fits(largest):  # rounded sides can add a few pixels
                largest = round(largest - 0.01, 2)
            largest = max(1.0, largest)
            image = f"the {width}×{height} image" + (f" {name}" if name else "")
            raise ScaleLimitError(
                f"scale {scale:g} makes a {cols}×{rows} network input ({rows * cols:,} pixels) "
                f"for {image}, above the limit of {MAX_SCALED_PIXELS:,} pixels "
                f"({_side(MAX_SCALED_PIXELS)}). Use --scales of at most {largest:g} "
                f"{'with this model' if fit else 'for it'}."
            )

    def scores(self, pixels: Sequence[torch.Tensor] | torch.Tensor) -> list[ScoreRuns]:
        """Run the network over images, uint8 (3, H_i, W_i) each (or float in 0..255), once per
        scale and flip, batching images whose network inputs have equal sizes.

        Returns one :class:`ScoreRuns` per image, which resizes and combines its runs at the
        image's size on demand (in row bands: a class map of a big photo never needs a
        full-size (C, H, W) float buffer). Every image is checked (:meth:`check_size`) before
        the network runs.
        """
        images = [p.to(self.device, non_blocking=True).float() for p in pixels]
        if any(x.ndim != 3 or x.shape[0] != 3 for x in images):
            raise ValueError("expected RGB images as (3, H, W) tensors")
        sizes = [(int(x.shape[1]), int(x.shape[2])) for x in images]
        for size in sizes:
            self.check_size(size)
        combine = self.runs_per_image > 1
        results = [ScoreRuns(size, self.config.align_corners, combine=combine) for size in sizes]
        with self._running():
            for scale in self.scales:
                placements = [self._placement(size, scale) for size in sizes]
                groups: dict[tuple[int, int], list[int]] = {}
                for i, placement in enumerate(placements):
                    groups.setdefault(placement.canvas, []).append(i)
                for indices in groups.values():
                    batch = torch.cat(
                        [self._prepare(images[i][None], placements[i]) for i in indices]
                    )
                    for flipped in (False, True) if self.flip else (False,):
                        logits = self._forward(batch.flip(-1) if flipped else batch)
                        for i, image_logits in zip(indices, logits, strict=True):
                            h, w = placements[i].content
                            if flipped:  # undo the flip of the whole canvas, then crop
                                image_logits = image_logits.flip(-1)
                            results[i].add(image_logits[:, :h, :w])
        return results

    # ------------------------------------------------------------------ internals
    def _tiled(self, size: tuple[int, int]) -> bool:
        return self.tiling is not None and self.tiling.needed(size, self.scales)

    def _input_sizes(self, size: tuple[int, int]) -> list[tuple[int, int]]:
        """The (H', W') network inputs an (H, W) image gets, one per scale (a tiled run: its
        windows', padded to the tile square for ``resize="fit"`` models)."""
        sizes, fit = [], self.config.preprocessing.resize == "fit"
        for scale in self.scales:
            scaled, side = scaled_size(size, scale), self.tiling.size if self.tiling else 0
            if self.tiling is None or max(scaled) <= side:
                sizes.append(self._placement(size, scale).canvas)
            else:
                sizes.append((side, side) if fit else (min(side, scaled[0]), min(side, scaled[1])))
        return sizes

    def _run(
        self, x: torch.Tensor, content: tuple[int, int], canvas: tuple[int, int], flipped: bool
    ) -> torch.Tensor:
        """float 0..255 (N, 3, H, W) resized to ``content`` in a ``canvas`` network input, run
        (the canvas left-right flipped and the logits flipped back if ``flipped``) → logits
        (N, C, *content)."""
        batch = self._prepare(x, _Placement(content, canvas))
        logits = self._forward(batch.flip(-1)).flip(-1) if flipped else self._forward(batch)
        return logits[:, :, : content[0], : content[1]]

    def _placement(self, size: tuple[int, int], scale: float) -> _Placement:
        prep = self.config.preprocessing
        height, width = size
        if prep.resize == "fit":
            side = max(1, round(prep.size * scale))  # type: ignore[operator]
            ratio = side / max(height, width)
            content = (max(1, round(height * ratio)), max(1, round(width * ratio)))
            return _Placement(content, (side, side))
        content = (max(1, round(height * scale)), max(1, round(width * scale)))
        return _Placement(content, content)

    def _prepare(self, x: torch.Tensor, placement: _Placement) -> torch.Tensor:
        """float 0..255 (N, 3, H, W) → normalised network input (N, 3, *canvas)."""
        if tuple(x.shape[-2:]) != placement.content:
            x = F.interpolate(
                x, size=placement.content, mode="bilinear", align_corners=False, antialias=True
            )
        x = x * self._scale - self._shift
        pad_h = placement.canvas[0] - placement.content[0]
        pad_w = placement.canvas[1] - placement.content[1]
        if pad_h or pad_w:  # the mean colour is 0 after normalisation
            x = F.pad(x, (0, pad_w, 0, pad_h))
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        autocast = (
            torch.autocast(self.device.type, dtype=self.autocast)
            if self.autocast is not None
            else contextlib.nullcontext()
        )
        with autocast:
            return self.network(x)["out"].float()

    @contextlib.contextmanager
    def _running(self) -> Iterator[None]:
        was_training = self.network.training
        self.network.eval()
        try:
            with torch.inference_mode():
                yield
        finally:
            self.network.train(was_training)
