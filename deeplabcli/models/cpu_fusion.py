"""CPU inference: a convolution, its activation and a residual sum in one oneDNN call.

After batch norm is folded (``models.fuse``), a ResNet bottleneck is conv → ReLU → conv → ReLU →
conv → + shortcut → ReLU, and a MobileNetV2 block conv → ReLU6 → conv → ReLU6 → conv (+ input).
Eager PyTorch runs every ReLU, ReLU6 and sum as its own pass over the feature map. oneDNN applies
them as post-ops of the convolution instead (``torch.ops.mkldnn._convolution_pointwise``, the
kernel that ``torch.compile`` emits for the same pattern on CPU), so the feature map is written
once. Same arithmetic, same results (the post-ops act on the conv's float32 output).

Measured with ``benchmarks/model_speed.py`` / ``predict_speed.py``: ~5% on ResNet-101 at OS 8
and ~10% on Google's MobileNetV2 (2 AVX2 cores).

oneDNN computes with weights in a blocked layout; given plain weights it reorders them on every
call. Small models therefore keep a prepacked copy of each weight (made on the first call,
remade when the weight or its dilation changes): 8% faster for Google's MobileNetV2 at the cost
of 2 MB. A ResNet-101 gains 2.6% but would hold 170 MiB more, so by default only models whose
convolution weights total at most ``PREPACK_LIMIT_BYTES`` are prepacked. The fused forwards serve inference only (no
autograd), on float32 CPU tensors; :func:`fuse_activations` leaves a model untouched where the
op is missing (a PyTorch build without oneDNN).
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from .mobilenetv2 import ConvBNAct, InvertedResidual
from .resnet import Bottleneck


def _pointwise_op():
    try:
        return torch.ops.mkldnn._convolution_pointwise
    except (AttributeError, RuntimeError):
        return None


def _has_reorder_op() -> bool:
    try:
        return torch.ops.mkldnn._reorder_convolution_weight is not None
    except (AttributeError, RuntimeError):
        return False


def available() -> bool:
    """Whether this PyTorch build has oneDNN's fused convolution."""
    return torch.backends.mkldnn.is_available() and _pointwise_op() is not None


PREPACK_LIMIT_BYTES = 32 * 2**20
"""Models whose convolution weights are at most this large keep them prepacked by default."""

# conv -> (what the packed copy was made from, the packed copy); dies with the conv.
_PACKED: weakref.WeakKeyDictionary[nn.Conv2d, tuple[tuple, torch.Tensor]] = (
    weakref.WeakKeyDictionary()
)


def _weight(conv: nn.Conv2d, x: torch.Tensor, padding: Sequence[int]) -> torch.Tensor:
    """The weight to hand oneDNN: a cached blocked-layout copy for a prepacked conv (any input
    size computes correctly with it; the first input's size picks the layout), else the weight."""
    if not conv.__dict__.get("prepack_weights", False):
        return conv.weight
    weight = conv.weight
    # A replaced parameter is a different referent; an edited one has a new version or storage.
    source = (
        weakref.ref(weight), weight.data_ptr(), weight._version, tuple(conv.stride),
        tuple(conv.dilation),
    )  # fmt: skip
    entry = _PACKED.get(conv)
    if entry is None or entry[0] != source:
        packed = torch.ops.mkldnn._reorder_convolution_weight(
            weight, list(padding), list(conv.stride), list(conv.dilation), conv.groups,
            list(x.shape),
        )  # fmt: skip
        entry = _PACKED[conv] = (source, packed)
    return entry[1]


def packed_count(model: nn.Module) -> int:
    """How many of ``model``'s convolutions hold a prepacked weight now."""
    return sum(1 for m in model.modules() if isinstance(m, nn.Conv2d) and m in _PACKED)


def _conv(
    conv: nn.Conv2d,
    x: torch.Tensor,
    attr: str = "none",
    scalars: Sequence[float] = (),
    padding: Sequence[int] | None = None,
) -> torch.Tensor:
    """``conv(x)`` followed by the unary post-op ``attr`` ("none", "relu", "hardtanh")."""
    padding = list(padding or conv.padding)
    return torch.ops.mkldnn._convolution_pointwise(
        x, _weight(conv, x, padding), conv.bias, padding, list(conv.stride),
        list(conv.dilation), conv.groups, attr, list(scalars), "",
    )  # fmt: skip


def _conv_add(
    conv: nn.Conv2d,
    x: torch.Tensor,
    other: torch.Tensor,
    unary: str | None = None,
    padding: Sequence[int] | None = None,
) -> torch.Tensor:
    """``conv(x) + other``, then the optional post-op ``unary`` ("relu")."""
    padding = list(padding or conv.padding)
    return torch.ops.mkldnn._convolution_pointwise.binary(
        x, other, _weight(conv, x, padding), conv.bias, padding, list(conv.stride),
        list(conv.dilation), conv.groups, "add", None, unary, [], None,
    )  # fmt: skip


class ConvReLU(nn.Conv2d):
    """A Conv2d whose following ReLU runs as its post-op (the ReLU module becomes Identity)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _conv(self, x, "relu")


class FusedBottleneck(Bottleneck):
    """:class:`Bottleneck` with BN folded: ReLUs and the shortcut sum are post-ops."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = _conv(self.conv2, _conv(self.conv1, x, "relu"), "relu")
        return _conv_add(self.conv3, out, identity, "relu")


class FusedConvBNAct(ConvBNAct):
    """:class:`ConvBNAct` with BN folded: ReLU6 is the conv's post-op."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, padding = self.padded(x)
        if self.relu6:
            return _conv(self.conv, x, "hardtanh", (0.0, 6.0), padding=padding)
        return _conv(self.conv, x, padding=padding)

    def padded(self, x: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
        """The input with TF "SAME" padding applied as the unfused layer does, and the conv's
        symmetric padding."""
        if not self.tf_padding:
            return x, list(self.conv.padding)
        explicit, padding = self._padding(x.shape[-2], x.shape[-1])
        if explicit is not None:
            x = F.pad(x, explicit)
        return x, [padding, padding]


class FusedInvertedResidual(InvertedResidual):
    """:class:`InvertedResidual` whose residual sum is the projection's post-op."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x if self.expand is None else self.expand(x)
        out = self.depthwise(out)
        if not self.use_residual:
            return self.project(out)
        project: FusedConvBNAct = self.project  # type: ignore[assignment]
        out, padding = project.padded(out)
        return _conv_add(project.conv, out, x, padding=padding)


def _is_folded(*modules: nn.Module) -> bool:
    return all(isinstance(m, nn.Identity) for m in modules)


def _fusable(conv: nn.Module) -> bool:
    return (
        type(conv) is nn.Conv2d
        and conv.padding_mode == "zeros"
        and not isinstance(conv.padding, str)
        and conv.weight.dtype == torch.float32
        and conv.weight.device.type == "cpu"
    )


def fuse_activations(model: nn.Module, *, prepack: bool | None = None) -> nn.Module:
    """Switch ``model``'s folded layers (no BatchNorm left between conv and activation) to the
    fused CPU forwards, in place; returns ``model``. Parameter names and the output-stride switch
    are unchanged (the layers keep their modules; only their class changes). A model with
    unfolded batch norm, on another device or in another dtype is returned as it is.

    ``prepack`` keeps the fused convolutions' weights in oneDNN's layout too (more memory, less
    time per call); ``None`` decides by size (``PREPACK_LIMIT_BYTES``)."""
    if not available():
        return model
    for module in model.modules():
        if type(module) is Bottleneck:
            if _is_folded(module.bn1, module.bn2, module.bn3) and all(
                _fusable(c) for c in (module.conv1, module.conv2, module.conv3)
            ):
                module.__class__ = FusedBottleneck
        elif type(module) is ConvBNAct:
            if _is_folded(module.bn) and _fusable(module.conv):
                module.__class__ = FusedConvBNAct
        elif type(module) is InvertedResidual:
            if isinstance(module.project, ConvBNAct | FusedConvBNAct) and _is_folded(
                module.project.bn
            ):
                module.__class__ = FusedInvertedResidual
        elif isinstance(module, nn.Sequential):
            _fuse_sequential(module)
    for module in model.modules():  # a block whose projection could not be fused falls back
        if type(module) is FusedInvertedResidual and type(module.project) is not FusedConvBNAct:
            module.__class__ = InvertedResidual
    _mark_prepacked(model, prepack)
    return model


def _fused_convs(model: nn.Module) -> list[nn.Conv2d]:
    convs: list[nn.Conv2d] = []
    for module in model.modules():
        if type(module) is ConvReLU:
            convs.append(module)
        elif type(module) is FusedBottleneck:
            convs += [module.conv1, module.conv2, module.conv3]
        elif type(module) is FusedConvBNAct:
            convs.append(module.conv)
    return convs


def _mark_prepacked(model: nn.Module, prepack: bool | None) -> None:
    convs = _fused_convs(model)
    if prepack is None:
        size = sum(c.weight.numel() * c.weight.element_size() for c in convs)
        prepack = size <= PREPACK_LIMIT_BYTES
    if prepack and not _has_reorder_op():
        prepack = False
    for conv in convs:
        conv.prepack_weights = prepack


def _fuse_sequential(sequence: nn.Sequential) -> None:
    """``[conv, Identity..., ReLU]`` runs (our heads' folded conv-BN-ReLU) → ``[ConvReLU,
    Identity..., Identity]``."""
    children = list(sequence)
    for i, conv in enumerate(children):
        if not _fusable(conv):
            continue
        j = i + 1
        while j < len(children) and type(children[j]) is nn.Identity:
            j += 1
        if j < len(children) and type(children[j]) is nn.ReLU:
            conv.__class__ = ConvReLU
            sequence[j] = nn.Identity()
