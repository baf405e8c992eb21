"""A minimal TensorFlow Lite writer for tests (not shipped): small graphs, and our MobileNetV2
DeepLab models exported the way Google's DeepLab TFLite graphs are laid out.

Lets the converter be tested without the real model files, on cases those files do not cover
(other depth multipliers and output strides, even input sizes, int8 per-channel weights).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import flatbuffers
import numpy as np
import tflite

CODES = {"ADD": 0, "AVERAGE_POOL_2D": 1, "CONCATENATION": 2, "CONV_2D": 3,
         "DEPTHWISE_CONV_2D": 4, "RESIZE_BILINEAR": 23, "MEAN": 40, "ARG_MAX": 56}  # fmt: skip
VERSIONS = {"DEPTHWISE_CONV_2D": 2, "RESIZE_BILINEAR": 3}
FLOAT32, INT32, INT64, INT8 = 0, 2, 4, 9
ACT = {"NONE": 0, "RELU": 1, "RELU6": 3}
PAD = {"SAME": 0, "VALID": 1}


class GraphWriter:
    """Collects tensors and operators, then serialises one subgraph as a .tflite file."""

    def __init__(self) -> None:
        self.tensors: list[dict[str, Any]] = []
        self.buffers: list[bytes] = [b""]
        self.ops: list[tuple[str, list[int], list[int], dict[str, Any]]] = []

    def tensor(self, name, shape, dtype=FLOAT32, data=None, scale=None, zero_point=None, axis=0):
        buffer = 0
        if data is not None:
            self.buffers.append(np.ascontiguousarray(data).tobytes())
            buffer = len(self.buffers) - 1
        self.tensors.append(dict(name=name, shape=list(shape), dtype=dtype, buffer=buffer,
                                 scale=scale, zero_point=zero_point, axis=axis))  # fmt: skip
        return len(self.tensors) - 1

    def op(self, kind: str, inputs: list[int], outputs: list[int], **options: Any) -> None:
        self.ops.append((kind, inputs, outputs, options))

    # ---------------------------------------------------------------- serialisation
    def write(self, path: Path, inputs: list[int], outputs: list[int]) -> Path:
        b = flatbuffers.Builder(1 << 16)
        buffers = [self._buffer(b, data) for data in self.buffers]
        tensors = [self._tensor(b, t) for t in self.tensors]
        kinds = sorted({kind for kind, *_ in self.ops}, key=list(CODES).index)
        ops = [self._op(b, kinds.index(k), k, i, o, opts) for k, i, o, opts in self.ops]
        codes = []
        for kind in kinds:
            tflite.OperatorCodeStart(b)
            tflite.OperatorCodeAddDeprecatedBuiltinCode(b, CODES[kind])
            tflite.OperatorCodeAddBuiltinCode(b, CODES[kind])
            tflite.OperatorCodeAddVersion(b, VERSIONS.get(kind, 1))
            codes.append(tflite.OperatorCodeEnd(b))
        t_vec, o_vec = self._tables(b, tensors), self._tables(b, ops)
        in_vec, out_vec = (b.CreateNumpyVector(np.array(v, np.int32)) for v in (inputs, outputs))
        tflite.SubGraphStart(b)
        tflite.SubGraphAddTensors(b, t_vec)
        tflite.SubGraphAddInputs(b, in_vec)
        tflite.SubGraphAddOutputs(b, out_vec)
        tflite.SubGraphAddOperators(b, o_vec)
        subgraph = tflite.SubGraphEnd(b)
        code_vec, sub_vec = self._tables(b, codes), self._tables(b, [subgraph])
        buf_vec = self._tables(b, buffers)
        tflite.ModelStart(b)
        tflite.ModelAddVersion(b, 3)
        tflite.ModelAddOperatorCodes(b, code_vec)
        tflite.ModelAddSubgraphs(b, sub_vec)
        tflite.ModelAddBuffers(b, buf_vec)
        b.Finish(tflite.ModelEnd(b), file_identifier=b"TFL3")
        Path(path).write_bytes(bytes(b.Output()))
        return Path(path)

    @staticmethod
    def _tables(b, offsets):
        b.StartVector(4, len(offsets), 4)
        for offset in reversed(offsets):
            b.PrependUOffsetTRelative(offset)
        return b.EndVector()

    @staticmethod
    def _buffer(b, data: bytes):
        vec = None
        if data:
            b.StartVector(1, len(data), 16)  # TFLite wants 16-byte aligned constants
            b.head = b.Head() - len(data)
            b.Bytes[b.Head() : b.Head() + len(data)] = data
            vec = b.EndVector()
        tflite.BufferStart(b)
        if vec is not None:
            tflite.BufferAddData(b, vec)
        return tflite.BufferEnd(b)

    @staticmethod
    def _tensor(b, t):
        name, shape = b.CreateString(t["name"]), b.CreateNumpyVector(np.array(t["shape"], np.int32))
        quant = None
        if t["scale"] is not None:
            scale = b.CreateNumpyVector(np.asarray(t["scale"], np.float32).ravel())
            zp = np.zeros(np.size(t["scale"])) if t["zero_point"] is None else t["zero_point"]
            zero = b.CreateNumpyVector(np.asarray(zp, np.int64).ravel())
            tflite.QuantizationParametersStart(b)
            tflite.QuantizationParametersAddScale(b, scale)
            tflite.QuantizationParametersAddZeroPoint(b, zero)
            tflite.QuantizationParametersAddQuantizedDimension(b, t["axis"])
            quant = tflite.QuantizationParametersEnd(b)
        tflite.TensorStart(b)
        tflite.TensorAddShape(b, shape)
        tflite.TensorAddType(b, t["dtype"])
        tflite.TensorAddBuffer(b, t["buffer"])
        tflite.TensorAddName(b, name)
        if quant is not None:
            tflite.TensorAddQuantization(b, quant)
        return tflite.TensorEnd(b)

    @staticmethod
    def _op(b, code_index, kind, inputs, outputs, opts):
        options_type, options = _options(b, kind, opts)
        in_vec = b.CreateNumpyVector(np.array(inputs, np.int32))
        out_vec = b.CreateNumpyVector(np.array(outputs, np.int32))
        tflite.OperatorStart(b)
        tflite.OperatorAddOpcodeIndex(b, code_index)
        tflite.OperatorAddInputs(b, in_vec)
        tflite.OperatorAddOutputs(b, out_vec)
        if options is not None:
            tflite.OperatorAddBuiltinOptionsType(b, options_type)
            tflite.OperatorAddBuiltinOptions(b, options)
        return tflite.OperatorEnd(b)


def _options(b, kind, o):
    kinds = tflite.BuiltinOptions
    if kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        prefix = "Conv2DOptions" if kind == "CONV_2D" else "DepthwiseConv2DOptions"
        getattr(tflite, prefix + "Start")(b)
        getattr(tflite, prefix + "AddPadding")(b, PAD[o.get("padding", "SAME")])
        getattr(tflite, prefix + "AddStrideH")(b, o.get("stride", 1))
        getattr(tflite, prefix + "AddStrideW")(b, o.get("stride", 1))
        getattr(tflite, prefix + "AddDilationHFactor")(b, o.get("dilation", 1))
        getattr(tflite, prefix + "AddDilationWFactor")(b, o.get("dilation", 1))
        getattr(tflite, prefix + "AddFusedActivationFunction")(b, ACT[o.get("activation", "NONE")])
        if kind == "DEPTHWISE_CONV_2D":
            tflite.DepthwiseConv2DOptionsAddDepthMultiplier(b, 1)
        return getattr(kinds, prefix), getattr(tflite, prefix + "End")(b)
    if kind == "AVERAGE_POOL_2D":
        tflite.Pool2DOptionsStart(b)
        tflite.Pool2DOptionsAddPadding(b, PAD["VALID"])
        tflite.Pool2DOptionsAddStrideH(b, 1)
        tflite.Pool2DOptionsAddStrideW(b, 1)
        tflite.Pool2DOptionsAddFilterHeight(b, o["filter"][0])
        tflite.Pool2DOptionsAddFilterWidth(b, o["filter"][1])
        return kinds.Pool2DOptions, tflite.Pool2DOptionsEnd(b)
    if kind == "RESIZE_BILINEAR":
        tflite.ResizeBilinearOptionsStart(b)
        tflite.ResizeBilinearOptionsAddAlignCorners(b, o["align_corners"])
        tflite.ResizeBilinearOptionsAddHalfPixelCenters(b, o.get("half_pixel", False))
        return kinds.ResizeBilinearOptions, tflite.ResizeBilinearOptionsEnd(b)
    if kind == "CONCATENATION":
        tflite.ConcatenationOptionsStart(b)
        tflite.ConcatenationOptionsAddAxis(b, 3)
        return kinds.ConcatenationOptions, tflite.ConcatenationOptionsEnd(b)
    if kind == "ADD":
        tflite.AddOptionsStart(b)
        return kinds.AddOptions, tflite.AddOptionsEnd(b)
    if kind == "MEAN":
        tflite.ReducerOptionsStart(b)
        tflite.ReducerOptionsAddKeepDims(b, True)
        return kinds.ReducerOptions, tflite.ReducerOptionsEnd(b)
    if kind == "ARG_MAX":
        tflite.ArgMaxOptionsStart(b)
        tflite.ArgMaxOptionsAddOutputType(b, INT64)
        return kinds.ArgMaxOptions, tflite.ArgMaxOptionsEnd(b)
    return 0, None


# -------------------------------------------------------------------- DeepLab export
class DeepLabExporter:
    """Writes a folded-BN, TF-padding MobileNetV2 DeepLabV3 of ours as Google lays it out.

    ``int8=True`` stores weights int8 per output channel (symmetric) and biases int32 with scale
    input scale × weight scale, activations marked int8 with ``act_scale`` (such a file is for
    the converter only; it is not meant to run). ``self.expected`` maps our parameter names to
    the float values a reader must recover.
    """

    def __init__(self, int8: bool = False, act_scale: float = 0.05) -> None:
        self.w = GraphWriter()
        self.int8, self.act_scale = int8, act_scale
        self.expected: dict[str, np.ndarray] = {}

    def activation(self, name: str, shape) -> int:
        if self.int8:
            return self.w.tensor(name, shape, INT8, scale=[self.act_scale], zero_point=[0])
        return self.w.tensor(name, shape)

    def conv(self, key, conv, x, out_hw, *, kind="CONV_2D", perm=None, **opts) -> int:
        weight = conv.weight.detach().numpy().astype(np.float64)  # (O, I, KH, KW)
        if perm is not None:
            weight = weight[:, perm]
        bias = conv.bias.detach().numpy().astype(np.float64)
        axes, axis = ((0, 2, 3, 1), 0) if kind == "CONV_2D" else ((1, 2, 3, 0), 3)
        tf_weight = weight.transpose(axes)
        out_channels = weight.shape[0]
        if self.int8:
            scale = np.abs(weight).reshape(out_channels, -1).max(1) / 127.0
            scale = scale.astype(np.float32).astype(np.float64)  # as stored in the file
            shape_c = [1] * 4
            shape_c[axis] = -1
            q = np.clip(np.round(tf_weight / scale.reshape(shape_c)), -127, 127).astype(np.int8)
            qb = np.round(bias / (self.act_scale * scale)).astype(np.int32)
            wt = self.w.tensor(f"{key}/weights", q.shape, INT8, q, scale, None, axis)
            bt = self.w.tensor(f"{key}/bias", qb.shape, INT32, qb, self.act_scale * scale)
            deq_w = (q.astype(np.float64) * scale.reshape(shape_c)).transpose(np.argsort(axes))
            deq_b = qb * (float(np.float32(self.act_scale)) * scale)
            self.expected[f"{key}.weight"] = deq_w.astype(np.float32)
            self.expected[f"{key}.bias"] = deq_b.astype(np.float32)
        else:
            wt = self.w.tensor(
                f"{key}/weights", tf_weight.shape, FLOAT32, tf_weight.astype(np.float32)
            )
            bt = self.w.tensor(f"{key}/bias", bias.shape, FLOAT32, bias.astype(np.float32))
        y = self.activation(key, [1, *out_hw, out_channels])
        self.w.op(kind, [x, wt, bt], [y], **opts)
        return y

    def export(
        self,
        model,
        path,
        size,
        *,
        pool_first=True,
        align_corners=True,
        half_pixel=None,
        argmax=False,
        mean_pool=False,
    ):
        """Write ``model`` for a fixed input ``size`` (H, W); returns the path. The logits resize
        uses ``align_corners`` and ``half_pixel`` (default: not ``align_corners``); the image
        pooling is AVERAGE_POOL_2D, or MEAN over height and width with ``mean_pool``."""
        half_pixel = not align_corners if half_pixel is None else half_pixel
        h, w = size
        x = self.activation("input", [1, h, w, 3])
        hw = (math.ceil(h / 2), math.ceil(w / 2))
        bb = model.backbone
        t = self.conv("backbone.stem.conv", bb.stem.conv, x, hw, stride=2, activation="RELU6")
        for i, block in enumerate(bb.blocks):
            key, t_in = f"backbone.blocks.{i}", t
            if block.expand is not None:
                t = self.conv(f"{key}.expand.conv", block.expand.conv, t, hw, activation="RELU6")
            stride, dilation = block.depthwise.conv.stride[0], block.depthwise.conv.dilation[0]
            hw = (math.ceil(hw[0] / stride), math.ceil(hw[1] / stride))
            t = self.conv(f"{key}.depthwise.conv", block.depthwise.conv, t, hw,
                          kind="DEPTHWISE_CONV_2D", stride=stride, dilation=dilation,
                          activation="RELU6")  # fmt: skip
            t = self.conv(f"{key}.project.conv", block.project.conv, t, hw)
            if block.use_residual:
                out = self.activation(f"{key}/add", [1, *hw, block.project.conv.out_channels])
                self.w.op("ADD", [t, t_in], [out])
                t = out
        head, channels = model.head, model.config.head_channels
        pooled = self.activation("AvgPool", [1, 1, 1, bb.out_channels])
        if mean_pool:
            axes = self.w.tensor("axes", [2], INT32, np.array([1, 2], np.int32))
            self.w.op("MEAN", [t, axes], [pooled])
        else:
            self.w.op("AVERAGE_POOL_2D", [t], [pooled], filter=hw)
        pool_conv = self.conv("head.aspp.convs.1.conv.0", head.aspp.convs[1].conv[0], pooled, (1, 1), activation="RELU")  # fmt: skip
        feature_size = self.w.tensor("size", [2], INT32, np.array(hw, np.int32))
        up = self.activation("ResizeBilinear", [1, *hw, channels])
        self.w.op("RESIZE_BILINEAR", [pool_conv, feature_size], [up], align_corners=True)
        aspp = self.conv("head.aspp.convs.0.0", head.aspp.convs[0][0], t, hw, activation="RELU")
        concat = self.activation("concat", [1, *hw, 2 * channels])
        self.w.op("CONCATENATION", [up, aspp] if pool_first else [aspp, up], [concat])
        perm = np.r_[channels : 2 * channels, 0:channels] if pool_first else None
        proj = self.conv("head.aspp.project.0", head.aspp.project[0], concat, hw,
                         perm=perm, activation="RELU")  # fmt: skip
        logits = self.conv("head.classifier", head.classifier, proj, hw)
        if self.int8 and perm is not None:  # expected values are in our channel order
            key = "head.aspp.project.0.weight"
            self.expected[key] = self.expected[key][:, np.argsort(perm)]
        out_size = self.w.tensor("out_size", [2], INT32, np.array(size, np.int32))
        out = self.w.tensor("logits", [1, h, w, model.config.num_classes])
        self.w.op("RESIZE_BILINEAR", [logits, out_size], [out], align_corners=align_corners,
                  half_pixel=half_pixel)  # fmt: skip
        if argmax:
            dim = self.w.tensor("dim", [], INT32, np.array(3, np.int32))
            labels = self.w.tensor("ArgMax", [1, h, w], INT64)
            self.w.op("ARG_MAX", [out, dim], [labels])
            out = labels
        return self.w.write(path, [x], [out])
