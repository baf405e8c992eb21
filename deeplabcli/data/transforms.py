"""Paired image/mask transforms: the paper's training augmentation and whole-image evaluation.

Training (paper Sec. 4.1): random scale in [0.5, 2.0] (image bilinear, mask nearest), pad the
image with the mean colour and the mask with 255 up to the crop size, random crop (513), random
left-right flip, normalise with the model's mean/std. Every random draw comes from the
``torch.Generator`` passed in, in a fixed order (scale, top, left, flip), so the output is a
pure function of (image, mask, generator state): training resumes bit-exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from ..config import IGNORE_INDEX, Preprocessing
from ..errors import ConfigError


def normalise(image: torch.Tensor, preprocessing: Preprocessing) -> torch.Tensor:
    """Pixels 0..255 (any dtype, ``(..., 3, H, W)``) → float32 ``(x / 255 - mean) / std``."""
    mean = torch.tensor(preprocessing.mean, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(preprocessing.std, dtype=torch.float32).view(3, 1, 1)
    return (image.to(torch.float32) / 255.0 - mean) / std


def _as_tensors(image: np.ndarray, mask: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 (H, W, 3) and (H, W) arrays → uint8 tensors (3, H, W) and (H, W)."""
    image_t = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
    return image_t, torch.from_numpy(np.ascontiguousarray(mask))


@dataclass
class EvalTransform:
    """The whole image, normalised: ``(image uint8 (H, W, 3), mask uint8 (H, W))`` →
    ``(float32 (3, H, W), int64 (H, W))``. The resize policy of ``preprocessing`` (TFLite's
    "fit") is applied by the inference code, not here."""

    preprocessing: Preprocessing = field(default_factory=Preprocessing)

    def __call__(
        self, image: np.ndarray, mask: np.ndarray, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        image_t, mask_t = _as_tensors(image, mask)
        return normalise(image_t, self.preprocessing), mask_t.to(torch.int64)


@dataclass
class TrainTransform:
    """The paper's training augmentation: ``(image uint8 (H, W, 3), mask uint8 (H, W),
    generator)`` → ``(float32 (3, S, S), int64 (S, S))`` with ``S = crop_size``.

    Padding (bottom and right) is the mean colour in the image — exactly 0 after
    normalisation — and 255 (ignore) in the mask.
    """

    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    crop_size: int = 513  # square crop side in pixels
    scale_range: tuple[float, float] = (0.5, 2.0)  # uniform random scale factor bounds
    flip: bool = True  # random left-right flip with probability 0.5

    def __post_init__(self) -> None:
        if self.crop_size < 1:
            raise ConfigError(f"crop size must be positive, got {self.crop_size}. Give e.g. 513.")
        low, high = self.scale_range
        if not 0 < low <= high:
            raise ConfigError(
                f"scale range must satisfy 0 < min <= max, got {low}..{high}. Give e.g. 0.5,2.0."
            )

    def __call__(
        self, image: np.ndarray, mask: np.ndarray, generator: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if generator is None:
            raise ValueError(
                "TrainTransform needs a torch.Generator: index the data set with (index, seed), "
                "e.g. through SeededSampler"
            )
        image_t, mask_t = _as_tensors(image, mask)
        height, width = mask_t.shape
        low, high = self.scale_range
        scale = low + (high - low) * float(torch.rand((), generator=generator, dtype=torch.float64))
        new_h, new_w = max(1, round(height * scale)), max(1, round(width * scale))
        size = self.crop_size
        top = int(torch.randint(0, max(new_h, size) - size + 1, (), generator=generator))
        left = int(torch.randint(0, max(new_w, size) - size + 1, (), generator=generator))
        flip = self.flip and bool(torch.rand((), generator=generator) < 0.5)

        if (new_h, new_w) != (height, width):
            image_f = F.interpolate(
                image_t[None].to(torch.float32),
                size=(new_h, new_w),
                mode="bilinear",
                align_corners=False,
                antialias=scale < 1,
            )[0]
            mask_t = F.interpolate(mask_t[None, None], size=(new_h, new_w), mode="nearest-exact")
            mask_t = mask_t[0, 0]
        else:
            image_f = image_t.to(torch.float32)
        # The crop window on the padded canvas; padding is at the bottom/right, so the part
        # that overlaps the image always starts at the crop's top-left corner.
        rows, cols = min(size, new_h - top), min(size, new_w - left)
        out_image = torch.zeros(3, size, size, dtype=torch.float32)
        out_mask = torch.full((size, size), IGNORE_INDEX, dtype=torch.int64)
        window = image_f[:, top : top + rows, left : left + cols]
        out_image[:, :rows, :cols] = normalise(window, self.preprocessing)
        out_mask[:rows, :cols] = mask_t[top : top + rows, left : left + cols]
        if flip:
            out_image, out_mask = out_image.flip(-1), out_mask.flip(-1)
        return out_image, out_mask
