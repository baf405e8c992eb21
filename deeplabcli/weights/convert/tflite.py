"""Google's DeepLabv3 MobileNetV2 TensorFlow Lite models → our model (float32).

The graph is read, not assumed: starting at the input, the matcher follows the data flow through
the stem conv, every inverted-residual block (expand → depthwise → project [+ shortcut]) and the
mobile head ([global pooling → 1×1, 1×1] → concat → projection → logits → bilinear resize
[→ ARG_MAX]), checking kernels, fused activations and padding on the way. The architecture is
then inferred from what was found: depth multiplier and channel rounding (from the channel
counts), output stride and dilations (from the strides), number of classes, head width and the
resize's ``align_corners``. TFLite exports always fold batch norm into conv biases.

Float32, float16 and quantized (uint8 or int8, per-tensor or per-channel) exports are supported;
quantized weights are dequantized exactly and int32 biases use scale = input scale × weight
scale, as TFLite's kernels do. Activation quantization is dropped: the result is a float model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...config import INCEPTION_MEAN, INCEPTION_STD, ModelConfig, Preprocessing
from ...errors import ConversionError
from ...models import DeepLabV3, arch_config
from ...models.mobilenetv2 import BLOCK_SPECS, STEM_CHANNELS, block_channels, block_schedule
from ._load import load_converted
from .tflite_graph import Graph, Op, read_graph

#: Depth multipliers tried besides the ones the channel counts suggest.
_COMMON_MULTIPLIERS = (1.0, 0.5, 0.75, 0.35, 1.3, 1.4, 0.25)


@dataclass
class Block:
    expand: Op | None
    depthwise: Op
    project: Op
    residual: bool


@dataclass
class DeepLabGraph:
    """The DeepLab MobileNetV2 structure found in a TFLite graph."""

    graph: Graph
    input_size: tuple[int, int]  # native (H, W) of the exported input tensor
    stem: Op
    blocks: list[Block]
    aspp: Op  # the 1×1 branch
    pool_conv: Op  # the image-pooling branch's 1×1 conv
    pool_first: bool  # concatenation order [pooling, 1×1] (Google's) or [1×1, pooling]
    projection: Op
    logits: Op
    align_corners: bool
    output: str  # "logits" or "argmax"

    def channels(self) -> list[tuple[int, int, int]]:
        """(input, expanded, output) channels of every block, read from the weights."""
        result, previous = [], self._out(self.stem)
        for block in self.blocks:
            expanded = self.graph.tensors[block.depthwise.inputs[1]].shape[3]
            result.append((previous, expanded, self._out(block.project)))
            previous = result[-1][2]
        return result

    def _out(self, op: Op) -> int:
        return self.graph.tensors[op.inputs[1]].shape[0]

    def config(self) -> ModelConfig:
        """The :class:`ModelConfig` that reproduces this graph."""
        strides = [b.depthwise.options["stride"][0] for b in self.blocks]
        output_stride = 2 * int(np.prod(strides))
        schedule = [
            (b.depthwise.options["stride"][0], b.depthwise.options["dilation"][0])
            for b in self.blocks
        ]
        if output_stride not in (8, 16, 32) or schedule != block_schedule(output_stride):
            raise _not_deeplab(f"its block strides/dilations {schedule} follow no output stride")
        base = {
            "num_classes": self._out(self.logits),
            "output_stride": output_stride,
            "tf_padding": True,
            "folded_bn": True,
            "head_channels": self._out(self.aspp),
            "align_corners": self.align_corners,
            "preprocessing": Preprocessing(
                mean=INCEPTION_MEAN, std=INCEPTION_STD, resize="fit", size=max(self.input_size)
            ),
        }
        found = self.channels()
        stem = self._out(self.stem)
        candidates = [found[-1][2] / BLOCK_SPECS[-1][1], stem / STEM_CHANNELS, *_COMMON_MULTIPLIERS]
        for multiplier in dict.fromkeys(round(m, 4) for m in candidates):
            for divisible_by, min_depth in ((8, 8), (1, 8), (1, 1), (8, 1)):
                config = arch_config(
                    "deeplabv3_mobilenetv2",
                    depth_multiplier=multiplier,
                    depth_divisible_by=divisible_by,
                    min_depth=min_depth,
                    **base,
                )
                if block_channels(config) == found and found[0][0] == stem:
                    return config
        raise _not_deeplab(f"its channel counts {found} follow no MobileNetV2 depth multiplier")

    def layers(self) -> dict[str, Op]:
        """Our name of each conv (``backbone.stem.conv``, ...) → its TFLite operator."""
        layers = {"backbone.stem.conv": self.stem}
        for i, block in enumerate(self.blocks):
            if block.expand is not None:
                layers[f"backbone.blocks.{i}.expand.conv"] = block.expand
            layers[f"backbone.blocks.{i}.depthwise.conv"] = block.depthwise
            layers[f"backbone.blocks.{i}.project.conv"] = block.project
        layers["head.aspp.convs.0.0"] = self.aspp
        layers["head.aspp.convs.1.conv.0"] = self.pool_conv
        layers["head.aspp.project.0"] = self.projection
        layers["head.classifier"] = self.logits
        return layers

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Our parameter names → float32 tensors (PyTorch OIHW layout)."""
        state: dict[str, torch.Tensor] = {}
        for name, op in self.layers().items():
            weight, bias = self.graph.conv_weights(op)
            state[f"{name}.weight"] = torch.from_numpy(weight)
            state[f"{name}.bias"] = torch.from_numpy(bias)
        state["head.aspp.project.0.weight"] = self._our_branch_order(
            state["head.aspp.project.0.weight"]
        )
        return state

    def weight_codes(self) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """For every 8-bit quantized conv weight: ``(codes (O, I/groups, KH, KW) uint8/int8,
        scale float64 (1 or O), zero_point int64)`` in PyTorch's layout and our channel order,
        so that :func:`~.tflite_graph.dequantize` of them is :meth:`state_dict`'s weight."""
        found = {}
        for name, op in self.layers().items():
            tensor = self.graph.tensors[op.inputs[1]]
            if tensor.dtype not in (3, 9) or tensor.scale is None:  # uint8, int8
                continue
            axes = (0, 3, 1, 2) if op.kind == "CONV_2D" else (3, 0, 1, 2)
            if tensor.scale.size > 1 and axes.index(tensor.quantized_dimension) != 0:
                continue  # scales along another axis than the output channels: keep float
            codes = self.graph.values(op.inputs[1]).transpose(axes)
            if name == "head.aspp.project.0":
                codes = self._our_branch_order(torch.from_numpy(codes.copy())).numpy()
            found[f"{name}.weight"] = (np.ascontiguousarray(codes), tensor.scale, tensor.zero_point)
        return found

    def _our_branch_order(self, weight: torch.Tensor) -> torch.Tensor:
        """The projection's (O, 2·C, 1, 1) weight with its inputs in our concatenation order,
        [1×1, pooling] (Google's is [pooling, 1×1])."""
        if not self.pool_first:
            return weight
        pool, one_by_one = weight.split(weight.shape[1] // 2, dim=1)
        return torch.cat([one_by_one, pool], dim=1)


def _not_deeplab(detail: str) -> ConversionError:
    return ConversionError(
        f"the TFLite graph is not a DeepLabv3 MobileNetV2 this converter reads: {detail}. "
        "Use one of Google's DeepLab MobileNetV2 exports."
    )


def _single(graph: Graph, t: int, kinds: tuple[str, ...], where: str) -> Op:
    users = graph.users(t)
    if len(users) != 1 or users[0].kind not in kinds:
        found = ", ".join(op.kind for op in users) or "nothing"
        raise _not_deeplab(f"expected {' or '.join(kinds)} after {where}, found {found}")
    return users[0]


def _check_conv(graph: Graph, op: Op, kernel: int, activation: str, where: str) -> None:
    shape = graph.tensors[op.inputs[1]].shape
    opts = op.options
    problems = []
    if shape[1:3] != (kernel, kernel):
        problems.append(f"kernel {shape[1]}×{shape[2]} instead of {kernel}×{kernel}")
    if kernel > 1 and opts.get("padding") != "SAME":
        problems.append(f"{opts.get('padding')} padding instead of SAME")
    if opts.get("activation") != activation:
        problems.append(f"activation {opts.get('activation')} instead of {activation}")
    if opts.get("stride", (1, 1))[0] != opts.get("stride", (1, 1))[1]:
        problems.append(f"unequal strides {opts['stride']}")
    if opts.get("dilation", (1, 1))[0] != opts.get("dilation", (1, 1))[1]:
        problems.append(f"unequal dilations {opts['dilation']}")
    if op.kind == "DEPTHWISE_CONV_2D" and opts.get("depth_multiplier", 1) not in (0, 1):
        problems.append(f"depth multiplier {opts['depth_multiplier']}")
    if problems:
        raise _not_deeplab(f"{where} ({op.kind} #{op.index}) has {', '.join(problems)}")


def match_deeplab(graph: Graph) -> DeepLabGraph:
    """Find the DeepLab MobileNetV2 structure in ``graph`` (a :class:`ConversionError` if absent)."""
    if len(graph.inputs) != 1:
        raise _not_deeplab(f"it has {len(graph.inputs)} inputs instead of one image")
    shape = graph.tensors[graph.inputs[0]].shape
    if len(shape) != 4 or shape[3] != 3:
        raise _not_deeplab(f"its input has shape {list(shape)} instead of [1, H, W, 3]")
    stem = _single(graph, graph.inputs[0], ("CONV_2D",), "the input")
    _check_conv(graph, stem, 3, "RELU6", "the stem conv")
    if stem.options["stride"] != (2, 2):
        raise _not_deeplab(f"the stem conv has stride {stem.options['stride']} instead of 2")
    blocks, t = [], stem.outputs[0]
    while not {op.kind for op in graph.users(t)} & {"AVERAGE_POOL_2D", "MEAN"}:
        if len(blocks) == len(BLOCK_SPECS):
            raise _not_deeplab(f"no image pooling after {len(BLOCK_SPECS)} blocks")
        blocks.append(_match_block(graph, t, len(blocks)))
        last = blocks[-1].project.outputs[0]
        t = graph.users(last)[0].outputs[0] if blocks[-1].residual else last
    if len(blocks) != len(BLOCK_SPECS) or blocks[0].expand is not None:
        raise _not_deeplab(f"{len(blocks)} inverted-residual blocks instead of {len(BLOCK_SPECS)}")
    return _match_head(graph, t, stem, blocks, (shape[1], shape[2]))


def _match_block(graph: Graph, t: int, index: int) -> Block:
    where = f"block {index}"
    users = graph.users(t)
    convs = [op for op in users if op.kind in ("CONV_2D", "DEPTHWISE_CONV_2D")]
    if len(convs) != 1 or any(op.kind not in ("ADD", *{c.kind for c in convs}) for op in users):
        found = ", ".join(op.kind for op in users) or "nothing"
        raise _not_deeplab(f"expected the convs of {where}, found {found}")
    expand, depthwise = None, convs[0]
    if depthwise.kind == "CONV_2D":
        expand = depthwise
        _check_conv(graph, expand, 1, "RELU6", f"the expand conv of {where}")
        depthwise = _single(graph, expand.outputs[0], ("DEPTHWISE_CONV_2D",), f"{where}'s expand")
    _check_conv(graph, depthwise, 3, "RELU6", f"the depthwise conv of {where}")
    project = _single(graph, depthwise.outputs[0], ("CONV_2D",), f"{where}'s depthwise conv")
    _check_conv(graph, project, 1, "NONE", f"the projection of {where}")
    out = project.outputs[0]
    pair = {graph.canonical(out), graph.canonical(t)}
    shortcut = [
        op
        for op in graph.users(out)
        if op.kind == "ADD" and {graph.canonical(i) for i in op.inputs} == pair
    ]
    residual = bool(shortcut)
    if residual and (len(graph.users(out)) != 1 or shortcut[0].options["activation"] != "NONE"):
        raise _not_deeplab(f"the shortcut of {where} is not a plain addition")
    stride = depthwise.options["stride"][0]
    in_channels = graph.tensors[t].shape[3]
    if residual != (stride == 1 and in_channels == graph.tensors[out].shape[3]):
        raise _not_deeplab(
            f"{where} has a shortcut where MobileNetV2 has none, or none where it has one"
        )
    return Block(expand, depthwise, project, residual)


def _match_head(
    graph: Graph, t: int, stem: Op, blocks: list[Block], input_size: tuple[int, int]
) -> DeepLabGraph:
    users = graph.users(t)
    pools = [op for op in users if op.kind in ("AVERAGE_POOL_2D", "MEAN")]
    convs = [op for op in users if op.kind == "CONV_2D"]
    if len(pools) != 1 or len(convs) != 1 or len(users) != 2:
        found = ", ".join(op.kind for op in users)
        raise _not_deeplab(
            f"the head should read the features with one pooling and one 1×1 conv, found {found}"
        )
    pool, aspp = pools[0], convs[0]
    features = graph.tensors[t].shape
    if pool.kind == "AVERAGE_POOL_2D" and pool.options["filter"] != features[1:3]:
        raise _not_deeplab(
            f"the image pooling covers {pool.options['filter']}, not the whole {features[1:3]} feature map"
        )
    axes = (
        {int(a) % 4 for a in graph.values(pool.inputs[1]).ravel()}
        if pool.kind == "MEAN"
        else {1, 2}
    )
    if axes != {1, 2}:
        raise _not_deeplab("the image pooling does not average over height and width")
    _check_conv(graph, aspp, 1, "RELU", "the 1×1 ASPP branch")
    pool_conv = _single(graph, pool.outputs[0], ("CONV_2D",), "the image pooling")
    _check_conv(graph, pool_conv, 1, "RELU", "the image pooling conv")
    upsample = _single(graph, pool_conv.outputs[0], ("RESIZE_BILINEAR",), "the image pooling conv")
    concat = _single(graph, upsample.outputs[0], ("CONCATENATION",), "the image pooling resize")
    if _single(graph, aspp.outputs[0], ("CONCATENATION",), "the 1×1 ASPP branch") is not concat:
        raise _not_deeplab("the ASPP branches are not concatenated together")
    branches = [graph.canonical(i) for i in concat.inputs]
    pooled = graph.canonical(upsample.outputs[0])
    expected = {pooled, graph.canonical(aspp.outputs[0])}
    if len(branches) != 2 or set(branches) != expected or concat.options["axis"] not in (3, -1):
        raise _not_deeplab(
            "the ASPP concatenation does not join exactly its two branches on channels"
        )
    projection = _single(graph, concat.outputs[0], ("CONV_2D",), "the ASPP concatenation")
    _check_conv(graph, projection, 1, "RELU", "the ASPP projection")
    logits = _single(graph, projection.outputs[0], ("CONV_2D",), "the ASPP projection")
    _check_conv(graph, logits, 1, "NONE", "the logits conv")
    t, align_corners = logits.outputs[0], True
    while (users := graph.users(t)) and users[0].kind == "RESIZE_BILINEAR" and len(users) == 1:
        resize = users[0]
        if graph.tensors[resize.outputs[0]].shape != graph.tensors[t].shape:
            if not (resize.options["align_corners"] or resize.options["half_pixel"]):
                raise _not_deeplab(
                    "the logits are resized with TensorFlow's legacy (asymmetric) bilinear mode"
                )
            align_corners = resize.options["align_corners"]
        t = resize.outputs[0]
    kinds = [op.kind for op in graph.users(t)]
    if kinds not in ([], ["ARG_MAX"], ["SOFTMAX"]):
        raise _not_deeplab(f"the logits feed {', '.join(kinds)}")
    return DeepLabGraph(
        graph=graph,
        input_size=input_size,
        stem=stem,
        blocks=blocks,
        aspp=aspp,
        pool_conv=pool_conv,
        pool_first=branches[0] == pooled,
        projection=projection,
        logits=logits,
        align_corners=align_corners,
        output="argmax" if kinds == ["ARG_MAX"] else "logits",
    )


def from_tflite(path: str | Path, *, provenance: dict[str, Any] | None = None) -> DeepLabV3:
    """Our float32 model from a Google DeepLab MobileNetV2 ``.tflite`` file (float or quantized).

    The model's config records Google's preprocessing: pixels scaled to [-1, 1], the long side
    resized to the native input size and padded with the mean. Returned in eval mode.
    """
    graph = read_graph(path)  # its errors name the file
    try:  # the graph's do not: say which file they are about
        found = match_deeplab(graph)
        config, state = found.config(), found.state_dict()
    except ConversionError as error:
        raise ConversionError(f"{path}: {error}") from None
    return load_converted(config, state, source=f"TFLite {Path(path).name}", provenance=provenance)
