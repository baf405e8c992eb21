"""Export once, run many times: a model on a non-torch backend is exported into the cache
(:mod:`deeplabcli.runtimes.cache`) under a key that hashes what the graph is made of (the
configuration, every weight tensor, the output stride, the exporter's settings and versions);
a later run, in this process or another, finds the file instead of exporting again.
"""

from __future__ import annotations

import hashlib
import os

import torch

from .. import __version__
from ..models import DeepLabV3
from ..runtimes.cache import EXPORT_REVISION, cached_file, is_complete
from .onnx import DEFAULT_OPSET, export_onnx
from .openvino import onnx_to_openvino
from .references import remember_reference


def network_key(model: DeepLabV3, output_stride: int | None = None) -> str:
    """A hex key for ``model``'s graph at ``output_stride`` (None: its own): sha256 over the
    configuration, the name, dtype, shape and bytes of every tensor of the state dict (about
    10 ms for MobileNetV2, 0.3 s for ResNet-101), the opset and the versions involved."""
    digest = hashlib.sha256()
    config = model.config
    if output_stride is not None:
        config = config.replace(output_stride=output_stride)
    header = f"{config.to_json(sort_keys=True)}|opset={DEFAULT_OPSET}|rev={EXPORT_REVISION}"
    digest.update(f"{header}|{__version__}|torch={torch.__version__}".encode())
    for name, tensor in model.state_dict().items():
        if name.startswith("aux_head."):
            continue  # not exported
        value = tensor.detach().cpu().contiguous().reshape(-1)  # 0-d tensors cannot be viewed
        digest.update(f"{name}|{value.dtype}|{tuple(tensor.shape)}".encode())
        digest.update(value.view(torch.uint8).numpy().tobytes() if value.numel() else b"")
    return digest.hexdigest()[:32]


def cached_export(
    model: DeepLabV3,
    backend: str,
    *,
    output_stride: int | None = None,
    reference: str | os.PathLike | bool | None = False,
) -> os.PathLike:
    """The cached export of ``model`` for ``backend`` (``onnxruntime``: ``.onnx``;
    ``openvino``: ``.xml``), exporting it first if no earlier run did. ``reference`` (a model
    reference; None = the default model; False = unknown) is remembered, so that the next run
    with it finds the file without loading the model."""
    key = network_key(model, output_stride)
    onnx_path = cached_file(key, "onnxruntime")
    if not is_complete(onnx_path):
        onnx_path.parent.mkdir(parents=True, exist_ok=True)
        export_onnx(model, onnx_path, output_stride=output_stride)
    path = onnx_path
    if backend == "openvino":
        path = cached_file(key, "openvino")
        if not is_complete(path):
            onnx_to_openvino(onnx_path, path)
    if reference is not False:
        remember_reference(reference, backend, output_stride, key)  # type: ignore[arg-type]
    return path
