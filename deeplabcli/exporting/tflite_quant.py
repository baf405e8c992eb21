"""int8 ONNX exactly as a quantised TFLite file has it: its own scales and zero points.

Google's 8-bit DeepLab files were trained with quantisation in the loop: every activation
carries the scale and zero point it was trained for, and every weight its 8-bit codes. Calibrating
the float export again loses that (on the default model and the 120 shared VOC val images:
float 0.5829 mIoU, ONNX Runtime int8 calibrated on 100 trainaug images 0.5724, TFLite's runtime
0.5866). :func:`quantize_like_tflite` instead writes the QDQ graph with the file's own numbers
(ONNX Runtime's ``TensorQuantOverrides``): each activation of the ONNX graph gets the
quantisation of its TFLite tensor, each conv weight its TFLite codes (uint8 codes shifted to
int8 with the zero point, the same integers), which measures 0.5902 mIoU on those images.

The map from ONNX tensors to TFLite tensors is by structure: each Conv names its weight
``model.<our layer>.weight`` and :meth:`~deeplabcli.weights.convert.tflite.DeepLabGraph.layers`
names the TFLite operator of each of our layers; a conv's activation (Clip/Relu) output, the
residual Adds, the image pooling, its upsampling, the concatenation, the logits' upsampling and
the input follow from there. A tensor the map misses would be calibrated on one neutral input
instead: :func:`tflite_overrides` reports none missing for Google's files.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConversionError
from ..progress import message
from ..runtimes.metadata import INPUT_NAME, OUTPUT_NAME
from ..weights.convert.tflite import DeepLabGraph, match_deeplab
from ..weights.convert.tflite_graph import read_graph

#: TFLite tensor type codes of 8-bit tensors
_UINT8, _INT8 = 3, 9


def quantised_tflite(ref: object) -> Path | None:
    """``ref`` as a path when it names a ``.tflite`` DeepLab file whose activations are 8-bit
    (one of Google's quantised models), else None. Reads the file's graph only."""
    if not isinstance(ref, (str, os.PathLike)):
        return None
    path = Path(os.fspath(ref)).expanduser()
    if path.suffix.lower() != ".tflite" or not path.is_file():
        return None
    try:
        deeplab = match_deeplab(read_graph(path))
    except ConversionError:
        return None
    first = deeplab.graph.tensors[deeplab.stem.outputs[0]]
    return path if first.dtype in (_UINT8, _INT8) and first.scale is not None else None


def tflite_overrides(deeplab: DeepLabGraph, nodes: Any) -> dict[str, list[dict[str, Any]]]:
    """ONNX Runtime ``TensorQuantOverrides`` for the float export (its graph's ``nodes``) of
    the quantised TFLite graph ``deeplab``: ONNX tensor name → ``[{"scale", "zero_point",
    "quant_type"}]``."""
    from onnxruntime.quantization import QuantType

    graph = deeplab.graph
    users: dict[str, list[Any]] = {}
    for node in nodes:
        for name in node.input:
            users.setdefault(name, []).append(node)
    overrides: dict[str, list[dict[str, Any]]] = {}

    def put(onnx_name: str, t: int) -> None:
        tensor = graph.tensors[t]
        if tensor.scale is None or tensor.dtype not in (_UINT8, _INT8):
            raise ConversionError(f"the TFLite tensor {tensor.name!r} is not 8-bit quantised")
        zero = int(tensor.zero_point[0]) if tensor.zero_point.size else 0
        signed = tensor.dtype == _INT8
        overrides[onnx_name] = [{
            "quant_type": QuantType.QInt8 if signed else QuantType.QUInt8,
            "scale": np.array(tensor.scale[0], dtype=np.float32),
            "zero_point": np.array(zero, dtype=np.int8 if signed else np.uint8),
        }]  # fmt: skip

    layers = deeplab.layers()
    for node in nodes:
        if node.op_type == "Conv":
            layer = node.input[1].removeprefix("model.").removesuffix(".weight")
            if layer not in layers:
                raise ConversionError(f"the ONNX conv {node.name} has no TFLite operator")
            op = layers[layer]
            put(node.output[0], op.outputs[0])
            for user in users.get(node.output[0], []):
                if user.op_type in ("Clip", "Relu"):  # TFLite fuses them into the conv
                    put(user.output[0], op.outputs[0])
                elif user.op_type == "Add":  # the block's residual connection
                    adds = [o for o in graph.users(op.outputs[0]) if o.kind == "ADD"]
                    if len(adds) != 1:
                        raise ConversionError(f"no TFLite residual ADD after {layer}")
                    put(user.output[0], adds[0].outputs[0])
            _put_weight(overrides, node.input[1], graph.tensors[op.inputs[1]], QuantType)
        elif node.op_type in ("GlobalAveragePool", "ReduceMean"):
            put(node.output[0], deeplab.pool_conv.inputs[0])
    pooled = graph.users(deeplab.pool_conv.outputs[0])[0].outputs[0]  # its upsampling
    concat = graph.users(deeplab.aspp.outputs[0])[0].outputs[0]
    for node in nodes:
        if node.op_type == "Resize" and node.output[0] != OUTPUT_NAME:
            put(node.output[0], pooled)
        elif node.op_type == "Concat" and _feeds(node, users, "Conv"):
            put(node.output[0], concat)
    put(OUTPUT_NAME, _upsampled_logits(deeplab))
    put(INPUT_NAME, graph.inputs[0])
    for node in nodes:  # TF "SAME" padding of a dynamic graph: the padded input's numbers
        if node.op_type == "Pad" and node.input[0] in overrides:
            overrides[node.output[0]] = overrides[node.input[0]]
    return overrides


def _feeds(node: Any, users: dict[str, list[Any]], op_type: str) -> bool:
    return any(user.op_type == op_type for user in users.get(node.output[0], []))


def _upsampled_logits(deeplab: DeepLabGraph) -> int:
    t = deeplab.logits.outputs[0]
    while (found := deeplab.graph.users(t)) and found[0].kind == "RESIZE_BILINEAR":
        t = found[0].outputs[0]
    return t


def _put_weight(overrides: dict, name: str, tensor: Any, quant_type: Any) -> None:
    """The TFLite codes of a per-tensor 8-bit weight: uint8 codes as int8 (code − 128, zero
    point − 128: the same integers, and ONNX Runtime's fast int8-weight kernels). Per-channel
    weights keep ONNX Runtime's own per-channel quantisation."""
    if tensor.scale is None or tensor.scale.size != 1 or tensor.dtype not in (_UINT8, _INT8):
        return
    zero = int(tensor.zero_point[0]) if tensor.zero_point.size else 0
    overrides[name] = [{
        "quant_type": quant_type.QInt8,
        "scale": np.array(tensor.scale[0], dtype=np.float32),
        "zero_point": np.array(zero - 128 if tensor.dtype == _UINT8 else zero, dtype=np.int8),
    }]  # fmt: skip


def quantize_like_tflite(
    float_onnx: Path, int8_path: Path, tflite: Path, *, progress: bool = True
) -> tuple[Path, int]:
    """Write ``float_onnx`` (the float export of ``tflite``) as int8 with ``tflite``'s own
    quantisation into ``int8_path``; returns it and how many tensors took the file's numbers."""
    import onnx

    from .quantize import ORT_SETTINGS, quantize_onnx

    deeplab = match_deeplab(read_graph(tflite))
    graph = onnx.load(os.fspath(float_onnx), load_external_data=False).graph
    overrides = tflite_overrides(deeplab, graph.node)
    dims = [d.dim_value or 0 for d in graph.input[0].type.tensor_type.shape.dim]
    side = max(deeplab.input_size)  # the file's native input size (dynamic H and W)
    height, width = (dims[2] or side, dims[3] or side) if len(dims) == 4 else (side, side)
    neutral = np.zeros((1, 3, height, width), dtype=np.float32)  # every range is overridden
    options = {**ORT_SETTINGS["extra_options"], "TensorQuantOverrides": overrides}
    quantize_onnx(float_onnx, int8_path, [neutral], progress=False,
                  settings={"extra_options": options})  # fmt: skip
    message(f"int8 with {tflite.name}'s own quantisation ({len(overrides)} tensors).",
            quiet=not progress)  # fmt: skip
    return Path(int8_path), len(overrides)


__all__ = ["quantised_tflite", "quantize_like_tflite", "tflite_overrides"]
