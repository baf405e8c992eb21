"""A :class:`~deeplabcli.models.DeepLabV3` as an ONNX graph carrying our metadata.

The graph takes ``pixels``: float32 (N, 3, H, W) normalised RGB, and returns ``logits``:
float32 (N, C, H, W) at the input size. N, H and W are dynamic unless ``static_size`` fixes H
and W: the upsampling, the image-pooling broadcast and TensorFlow's "SAME" padding of the
MobileNetV2 layers are computed from the input's shape in the graph (traced with
``torch.jit.is_tracing()`` branches in the model), not baked in at the traced size (the trap of
pytorch/pytorch#84374).
"""

from __future__ import annotations

import contextlib
import copy
import os
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import __version__
from ..data.palette import palette_for
from ..errors import ConfigError
from ..files import atomic_file
from ..models import DeepLabV3
from ..models.mobilenetv2 import fixed_size_tracing
from ..runtimes.extras import require_module
from ..runtimes.metadata import INPUT_NAME, OUTPUT_NAME, model_metadata

#: the opset written unless asked otherwise (ONNX Runtime ≥ 1.14 and OpenVINO run it)
DEFAULT_OPSET = 17
MIN_OPSET = 13  # Resize with "sizes" from a shape, as the upsampling needs


class _Logits(nn.Module):
    """The model's ``{"out": logits}`` as a plain tensor output (ONNX graphs return tensors)."""

    def __init__(self, model: DeepLabV3) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model(pixels)["out"]


def export_network(
    model: DeepLabV3,
    output_stride: int | None = None,
) -> DeepLabV3:
    """A private eval-mode float32 CPU copy of ``model`` at ``output_stride``, without the
    auxiliary head (inference does not use it)."""
    network = copy.deepcopy(model).float().cpu().eval()
    network.aux_head = None
    if output_stride is not None and output_stride != network.output_stride:
        network.set_output_stride(output_stride)
    return network


def export_onnx(
    model: DeepLabV3,
    path: str | os.PathLike,
    *,
    output_stride: int | None = None,
    opset: int | None = None,
    static_size: tuple[int, int] | None = None,
    extra_provenance: dict[str, Any] | None = None,
) -> Path:
    """Write ``model`` to ``path`` as ONNX (atomically: a failed export leaves nothing) and
    return the path. See the module docstring for the graph's inputs and outputs."""
    require_module("onnx", "onnx", "exporting to ONNX")  # not onnxruntime: OpenVINO runs it too
    import onnx

    opset = DEFAULT_OPSET if opset is None else int(opset)
    if opset < MIN_OPSET:
        raise ConfigError(
            f"opset {opset} is too old for the upsampling. Use --opset {MIN_OPSET} or newer."
        )
    if output_stride is not None:
        model.config.check_output_stride(output_stride)
    network = export_network(model, output_stride)
    config = network.config
    if static_size is not None:
        height, width = (int(v) for v in static_size)
        if height < 1 or width < 1:
            raise ConfigError("--static-size needs two positive numbers, e.g. 513,513.")
        example = torch.zeros(1, 3, height, width)
    else:
        side = config.preprocessing.size or 129
        example = torch.zeros(1, 3, side, max(1, side - 2))  # not square: H and W stay apart
    dims = {0: "batch"} if static_size else {0: "batch", 2: "height", 3: "width"}
    path = Path(os.fspath(path))
    provenance = {
        **model.provenance,
        "export": {
            "format": "onnx", "opset": opset, "output_stride": config.output_stride,
            "deeplabcli_version": __version__, "torch_version": torch.__version__,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            **(extra_provenance or {}),
        },
    }  # fmt: skip
    metadata = model_metadata(
        config, provenance, palette=palette_for(config.num_classes).tolist(),
        static_size=None if static_size is None else (int(static_size[0]), int(static_size[1])),
    )  # fmt: skip
    sizing = contextlib.nullcontext() if static_size is None else fixed_size_tracing()
    with atomic_file(path) as tmp, warnings.catch_warnings(), sizing:
        warnings.simplefilter("ignore")  # TracerWarnings about shape arithmetic, by design
        with torch.no_grad():
            torch.onnx.export(
                _Logits(network), (example,), os.fspath(tmp), input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME], dynamic_axes={INPUT_NAME: dims, OUTPUT_NAME: dims},
                opset_version=opset, dynamo=False, do_constant_folding=True,
            )  # fmt: skip
        graph = onnx.load(os.fspath(tmp))
        graph.producer_name, graph.producer_version = "deeplabcli", __version__
        graph.doc_string = f"DeepLabv3 {config.arch}: (N,3,H,W) normalised RGB -> (N,C,H,W) logits"
        onnx.helper.set_model_props(graph, metadata)
        onnx.save(graph, os.fspath(tmp))
    return path
