"""Reading a TensorFlow Lite flatbuffer into plain Python: tensors, operators, constants.

Uses the ``tflite`` package (generated flatbuffer accessors; the ``tflite`` extra). Constant
tensors are returned as float32 arrays in TFLite's own layout, dequantized exactly:
``scale · (q − zero_point)`` per tensor or per channel (along the tensor's quantized dimension),
float16 constants widened, and constants fed through a DEQUANTIZE operator resolved.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import ConversionError, MissingDependencyError, extra_hint

#: TFLite TensorType codes → numpy dtypes of constant buffers.
_DTYPES = {
    0: np.float32,
    1: np.float16,
    2: np.int32,
    3: np.uint8,
    4: np.int64,
    7: np.int16,
    9: np.int8,
}
#: Padding enum, fused activation enum.
PADDING = {0: "SAME", 1: "VALID"}
ACTIVATIONS = {0: "NONE", 1: "RELU", 2: "RELU_N1_TO_1", 3: "RELU6", 4: "TANH"}
#: Operators that only change the quantization of an activation (identities in float).
PASSTHROUGH = frozenset({"QUANTIZE", "DEQUANTIZE"})


def import_tflite() -> Any:
    """The ``tflite`` package, or a :class:`MissingDependencyError` saying how to install it."""
    try:
        import tflite
    except ImportError:
        raise MissingDependencyError(
            f"reading TensorFlow Lite models needs the 'tflite' package. {extra_hint('tflite')}."
        ) from None
    return tflite


@dataclass
class Tensor:
    """One TFLite tensor: ``shape`` in NHWC order; ``data`` holds a constant's raw bytes."""

    index: int
    name: str
    shape: tuple[int, ...]
    dtype: int  # TFLite TensorType code
    data: bytes | None
    scale: np.ndarray | None = None  # float64 quantization scales (1 or one per channel)
    zero_point: np.ndarray | None = None
    quantized_dimension: int = 0


@dataclass
class Op:
    """One operator: its builtin name, tensor indices and decoded options."""

    index: int
    kind: str
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class Graph:
    """The main subgraph of a TFLite model (operators in execution order)."""

    tensors: list[Tensor]
    ops: list[Op]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]

    def __post_init__(self) -> None:
        self.producer: dict[int, Op] = {}
        self.consumers: dict[int, list[Op]] = {}
        for op in self.ops:
            for t in op.outputs:
                self.producer[t] = op
            for t in op.inputs:
                if t >= 0:
                    self.consumers.setdefault(t, []).append(op)

    def canonical(self, t: int) -> int:
        """The activation ``t`` was requantized from (QUANTIZE/DEQUANTIZE looked through)."""
        while (op := self.producer.get(t)) is not None and op.kind in PASSTHROUGH:
            t = op.inputs[0]
        return t

    def users(self, t: int) -> list[Op]:
        """The operators reading activation ``t``, looking through requantization."""
        found = []
        for op in self.consumers.get(t, []):
            found += self.users(op.outputs[0]) if op.kind in PASSTHROUGH else [op]
        return found

    def values(self, t: int) -> np.ndarray:
        """Constant tensor ``t`` as stored (e.g. int32 sizes and axes), without dequantizing."""
        tensor = self.tensors[t]
        if tensor.data is None or tensor.dtype not in _DTYPES:
            raise ConversionError(
                f"tensor {tensor.name!r} is not a constant this converter can read. "
                "The graph is not a DeepLab MobileNetV2 export this converter reads."
            )
        dtype = np.dtype(_DTYPES[tensor.dtype])
        if len(tensor.data) != int(np.prod(tensor.shape)) * dtype.itemsize:
            raise ConversionError(
                f"constant {tensor.name!r} holds {len(tensor.data)} bytes for shape "
                f"{list(tensor.shape)}, so the file is damaged. Export or download it again."
            )
        return np.frombuffer(tensor.data, dtype=dtype).reshape(tensor.shape)

    def constant(self, t: int) -> np.ndarray:
        """Constant tensor ``t`` as float32 in TFLite layout, exactly dequantized."""
        tensor = self.tensors[t]
        op = self.producer.get(t)
        if tensor.data is None and op is not None and op.kind == "DEQUANTIZE":
            return self.constant(op.inputs[0])
        raw = self.values(t)
        if tensor.dtype in (0, 1):
            return raw.astype(np.float32)
        if tensor.scale is None:
            raise ConversionError(
                f"constant {tensor.name!r} is an integer tensor without quantization "
                "parameters. The graph is not a DeepLab MobileNetV2 export this converter reads."
            )
        return dequantize(raw, tensor.scale, tensor.zero_point, tensor.quantized_dimension)

    def conv_weights(self, op: Op) -> tuple[np.ndarray, np.ndarray]:
        """(weight (O, I/groups, KH, KW), bias (O,)) of a CONV_2D or DEPTHWISE_CONV_2D as
        contiguous float32 in PyTorch's layout. An int32 bias is dequantized with scale =
        input scale × weight scale (per channel), the scale TFLite's kernels accumulate in."""
        weight = self.constant(op.inputs[1])  # CONV_2D: (O, KH, KW, I); depthwise: (1, KH, KW, C)
        axes = (0, 3, 1, 2) if op.kind == "CONV_2D" else (3, 0, 1, 2)
        bias = np.zeros(weight.shape[axes[0]], dtype=np.float32)
        if len(op.inputs) > 2 and op.inputs[2] >= 0:
            x, w, b = (self.tensors[i] for i in op.inputs[:3])
            if b.dtype == 2:  # int32, in the accumulator's scale
                if x.scale is None or w.scale is None:
                    raise ConversionError(
                        f"the int32 bias {b.name!r} comes without input and weight scales. "
                        "The graph is not a DeepLab MobileNetV2 export this converter reads."
                    )
                q = self.values(op.inputs[2]).astype(np.float64)
                bias = (q * (x.scale[0] * w.scale)).astype(np.float32)
            else:
                bias = self.constant(op.inputs[2])
        return np.ascontiguousarray(weight.transpose(axes)), np.ascontiguousarray(bias)


def dequantize(
    q: np.ndarray, scale: np.ndarray, zero_point: np.ndarray | None, axis: int
) -> np.ndarray:
    """``scale · (q − zero_point)`` in float64, rounded once to float32; per-channel when
    ``scale`` has one entry per index of ``axis``."""
    zp = np.zeros(1) if zero_point is None or zero_point.size == 0 else zero_point
    shape = [1] * q.ndim
    if scale.size > 1:
        shape[axis] = -1
    real = (q.astype(np.float64) - zp.astype(np.float64).reshape(shape)) * scale.reshape(shape)
    return real.astype(np.float32)


def read_graph(path: str | Path) -> Graph:
    """Parse the TFLite file at ``path``; a file that is not one is a :class:`ConversionError`."""
    tflite = import_tflite()
    path = Path(path)
    try:
        buf = path.read_bytes()
    except OSError as exc:
        raise ConversionError(
            f"cannot read {path}: {exc.strerror or exc}. Check the path."
        ) from None
    if len(buf) < 8 or buf[4:8] != b"TFL3":
        raise ConversionError(
            f"{path} is not a TensorFlow Lite model (no TFL3 flatbuffer identifier). "
            "Give a .tflite file exported by TensorFlow Lite."
        )
    try:
        return _parse(tflite, tflite.Model.GetRootAsModel(buf, 0), buf)
    except ConversionError:
        raise
    except Exception as exc:  # a truncated or corrupted flatbuffer fails anywhere inside
        raise ConversionError(
            f"{path} is a damaged TensorFlow Lite file ({_damage(exc, len(buf))}). "
            "Export or download it again."
        ) from None


def _damage(error: Exception, size: int) -> str:
    """What a flatbuffer accessor's exception says about the file, in words."""
    if isinstance(error, struct.error):  # an offset past the end of the bytes read
        return f"truncated or corrupt: an offset points past the end of its {size:,} bytes"
    detail = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"corrupt: {type(error).__name__}{': ' + detail if detail else ''}"


def _parse(tflite: Any, model: Any, buf: bytes) -> Graph:
    names = {v: k for k, v in vars(tflite.BuiltinOperator).items() if not k.startswith("_")}
    if model.SubgraphsLength() < 1:
        raise ConversionError("the TFLite model has no graph. Export the model again.")
    graph = model.Subgraphs(0)
    tensors = []
    for i in range(graph.TensorsLength()):
        t = graph.Tensors(i)
        tensors.append(_tensor(i, t, model.Buffers(t.Buffer()), buf))
    ops = []
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        code = model.OperatorCodes(op.OpcodeIndex())
        kind = names.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "CUSTOM")
        ops.append(
            Op(
                i,
                kind,
                tuple(int(v) for v in _vector(op.InputsAsNumpy, op.InputsLength)),
                tuple(int(v) for v in _vector(op.OutputsAsNumpy, op.OutputsLength)),
                _options(tflite, kind, op.BuiltinOptions()),
            )
        )
    return Graph(
        tensors,
        ops,
        tuple(int(v) for v in _vector(graph.InputsAsNumpy, graph.InputsLength)),
        tuple(int(v) for v in _vector(graph.OutputsAsNumpy, graph.OutputsLength)),
    )


def _vector(as_numpy: Any, length: Any) -> np.ndarray:
    return as_numpy() if length() else np.zeros(0, dtype=np.int64)


def _tensor(index: int, t: Any, buffer: Any, buf: bytes) -> Tensor:
    data = None
    if buffer.DataLength():
        data = buffer.DataAsNumpy().tobytes()
    elif buffer.Offset() > 1:  # large models keep buffers after the flatbuffer
        data = buf[buffer.Offset() : buffer.Offset() + buffer.Size()]
    tensor = Tensor(
        index,
        t.Name().decode("utf-8", "replace"),
        tuple(int(v) for v in _vector(t.ShapeAsNumpy, t.ShapeLength)),
        t.Type(),
        data,
    )
    q = t.Quantization()
    if q is not None and q.ScaleLength():
        tensor.scale = q.ScaleAsNumpy().astype(np.float64)
        tensor.zero_point = _vector(q.ZeroPointAsNumpy, q.ZeroPointLength).astype(np.int64)
        tensor.quantized_dimension = q.QuantizedDimension()
    return tensor


def _options(tflite: Any, kind: str, table: Any) -> dict[str, Any]:
    """The options of the operators the DeepLab matcher reads, as a plain dict."""
    if table is None:
        return {}

    def load(cls_name: str) -> Any:
        opts = getattr(tflite, cls_name)()
        opts.Init(table.Bytes, table.Pos)
        return opts

    if kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        o = load("Conv2DOptions" if kind == "CONV_2D" else "DepthwiseConv2DOptions")
        result = {
            "padding": PADDING.get(o.Padding(), "?"),
            "stride": (o.StrideH(), o.StrideW()),
            "dilation": (o.DilationHFactor(), o.DilationWFactor()),
            "activation": ACTIVATIONS.get(o.FusedActivationFunction(), "?"),
        }
        if kind == "DEPTHWISE_CONV_2D":
            result["depth_multiplier"] = o.DepthMultiplier()
        return result
    if kind == "AVERAGE_POOL_2D":
        o = load("Pool2DOptions")
        return {
            "padding": PADDING.get(o.Padding(), "?"),
            "filter": (o.FilterHeight(), o.FilterWidth()),
            "activation": ACTIVATIONS.get(o.FusedActivationFunction(), "?"),
        }
    if kind == "RESIZE_BILINEAR":
        o = load("ResizeBilinearOptions")
        return {"align_corners": bool(o.AlignCorners()), "half_pixel": bool(o.HalfPixelCenters())}
    if kind in ("ADD", "CONCATENATION"):
        o = load("AddOptions" if kind == "ADD" else "ConcatenationOptions")
        result = {"activation": ACTIVATIONS.get(o.FusedActivationFunction(), "?")}
        if kind == "CONCATENATION":
            result["axis"] = o.Axis()
        return result
    return {}
