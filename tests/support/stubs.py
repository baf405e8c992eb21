"""Stand-ins for DeepLabV3 whose logits are known in closed form, for tiling and probability tests.

Both take the place of a :class:`~deeplabcli.models.DeepLabV3` in a
:class:`~deeplabcli.inference.Segmenter` (``optimize=False``): a ``config`` (a real
:class:`~deeplabcli.config.ModelConfig`), an output stride, one parameter (so the device is
known) and ``forward(x) -> {"out": (N, C, H, W)}``.

- :class:`PixelModel`: each pixel's logits depend on that pixel's value only (no context), so
  the result cannot depend on how an image is cut into windows.
- :class:`PositionModel`: the logits are the pixel's position inside the network input (row,
  column), so a blended map shows exactly which windows, with which weights, made each pixel.
"""

from __future__ import annotations

import torch
from torch import nn

from deeplabcli.config import ModelConfig, Preprocessing
from deeplabcli.models.registry import arch_config

#: mean 0, std 1/255: the network sees pixel values 0..255 as they are
RAW = Preprocessing(mean=(0.0, 0.0, 0.0), std=(1 / 255, 1 / 255, 1 / 255))


class _Stub(nn.Module):
    def __init__(self, classes: int, preprocessing: Preprocessing, output_stride: int) -> None:
        super().__init__()
        names = tuple(f"class{i}" for i in range(classes))
        self.config: ModelConfig = arch_config(
            "deeplabv3_tiny",
            num_classes=classes,
            class_names=names,
            preprocessing=preprocessing,
            output_stride=output_stride,
        )
        self.provenance: dict = {}
        self.anchor = nn.Parameter(torch.zeros(()))

    @property
    def output_stride(self) -> int:
        return self.config.output_stride

    def set_output_stride(self, output_stride: int) -> None:
        self.config = self.config.replace(output_stride=output_stride)


class PixelModel(_Stub):
    """3 classes; logits of a pixel with red value r (0..255 after :data:`RAW`):
    ``(-(r - 40)², -(r - 128)², -(r - 215)²) / 400``: class 0 for dark, 1 for middle, 2 for
    bright red, with well-separated probabilities."""

    CENTRES = (40.0, 128.0, 215.0)

    def __init__(self, preprocessing: Preprocessing = RAW, output_stride: int = 8) -> None:
        super().__init__(3, preprocessing, output_stride)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        red = x[:, 0:1]
        centres = torch.tensor(self.CENTRES, device=x.device).view(1, 3, 1, 1)
        return {"out": -((red - centres) ** 2) / 400 + self.anchor}


class PositionModel(_Stub):
    """2 "classes" whose logits are the row and the column of each pixel in the network input
    (0-based), so blending them gives each pixel's weighted mean position in its windows."""

    def __init__(self, preprocessing: Preprocessing = RAW, output_stride: int = 8) -> None:
        super().__init__(2, preprocessing, output_stride)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        n, _, h, w = x.shape
        rows = torch.arange(h, dtype=torch.float32, device=x.device).view(1, 1, h, 1)
        cols = torch.arange(w, dtype=torch.float32, device=x.device).view(1, 1, 1, w)
        out = torch.cat([rows.expand(n, 1, h, w), cols.expand(n, 1, h, w)], 1)
        return {"out": out + self.anchor}
