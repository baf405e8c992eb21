"""Fused CPU inference (conv + ReLU/ReLU6 + residual sum in one oneDNN call) computes the same
network as the folded model it comes from."""

from __future__ import annotations

import copy

import pytest
import torch
from support.fusion import VARIANTS, outputs, randomise_batchnorm
from torch import nn

from deeplabcli import build_model
from deeplabcli.models import cpu_fusion
from deeplabcli.models.cpu_fusion import (
    ConvReLU,
    FusedBottleneck,
    FusedConvBNAct,
    FusedInvertedResidual,
    fuse_activations,
)
from deeplabcli.models.fuse import optimize_for_inference
from deeplabcli.models.resnet import Bottleneck

pytestmark = pytest.mark.skipif(
    not cpu_fusion.available(), reason="this PyTorch build has no oneDNN fused convolution"
)

FUSED = (ConvReLU, FusedBottleneck, FusedConvBNAct, FusedInvertedResidual)


def kinds(model: nn.Module) -> set[type]:
    return {type(m) for m in model.modules()}


@pytest.mark.parametrize(("arch", "overrides"), VARIANTS)
@pytest.mark.parametrize("channels_last", [True, False], ids=["channels-last", "contiguous"])
@pytest.mark.parametrize("size", [(67, 90), (64, 48)], ids=["odd", "even"])
def test_fused_model_matches_the_folded_one(arch, overrides, channels_last, size) -> None:
    torch.manual_seed(0)
    model = randomise_batchnorm(build_model(arch, **overrides))
    folded = optimize_for_inference(model, channels_last=channels_last)
    fused = optimize_for_inference(model, channels_last=channels_last, cpu_fusion=True)
    assert kinds(fused) & set(FUSED), "nothing was fused"
    assert fused.state_dict().keys() == folded.state_dict().keys()
    x = torch.randn(2, 3, *size)
    expected = outputs(folded, x, channels_last)
    got = outputs(fused, x, channels_last)
    assert set(got) == set(expected)
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], atol=1e-5, rtol=1e-5)


def test_every_conv_activation_pair_of_resnet_and_mobilenet_is_fused() -> None:
    resnet = optimize_for_inference(
        build_model("deeplabv3_tiny", head="torchvision"), cpu_fusion=True
    )
    blocks = [m for m in resnet.modules() if isinstance(m, Bottleneck)]
    assert blocks and all(type(m) is FusedBottleneck for m in blocks)
    assert not any(type(m) is nn.ReLU for m in resnet.head.modules())
    mobile = optimize_for_inference(build_model("deeplabv3_mobilenetv2_tiny"), cpu_fusion=True)
    assert {type(m) for m in mobile.backbone.modules()} >= {FusedConvBNAct, FusedInvertedResidual}
    assert not any(type(m).__name__ in ("ConvBNAct", "InvertedResidual") for m in mobile.modules())


def test_unfolded_batch_norm_is_left_alone() -> None:
    model = build_model("deeplabv3_tiny").eval()
    assert fuse_activations(model) is model
    assert not kinds(model) & set(FUSED)


def test_a_float64_model_is_left_alone() -> None:
    model = optimize_for_inference(build_model("deeplabv3_mobilenetv2_tiny")).double()
    fuse_activations(model)
    assert not kinds(model) & set(FUSED)


@pytest.mark.parametrize("arch", ["deeplabv3_tiny", "deeplabv3_mobilenetv2_tiny"])
def test_prepacked_weights_give_the_same_outputs_for_any_size_and_output_stride(arch) -> None:
    torch.manual_seed(0)
    model = randomise_batchnorm(build_model(arch, output_stride=16))
    plain = optimize_for_inference(model, cpu_fusion=True, prepack=False)
    packed = optimize_for_inference(model, cpu_fusion=True, prepack=True)
    assert cpu_fusion.packed_count(packed) == 0  # packed on first use
    for output_stride in (16, 8):
        plain.set_output_stride(output_stride)
        packed.set_output_stride(output_stride)
        for size in [(65, 65), (2, 48, 90), (1, 33, 20)]:
            shape = (1, 3, *size) if len(size) == 2 else (size[0], 3, *size[1:])
            x = torch.randn(shape)
            expected = outputs(plain, x, channels_last=True)["out"]
            torch.testing.assert_close(
                outputs(packed, x, channels_last=True)["out"], expected, atol=1e-5, rtol=1e-5
            )
    assert cpu_fusion.packed_count(packed) > 0 and cpu_fusion.packed_count(plain) == 0


def test_prepacked_weights_follow_new_weights() -> None:
    torch.manual_seed(0)
    packed = optimize_for_inference(build_model("deeplabv3_tiny"), cpu_fusion=True, prepack=True)
    x = torch.randn(1, 3, 40, 40)
    before = outputs(packed, x)["out"]
    other = optimize_for_inference(build_model("deeplabv3_tiny"), cpu_fusion=True, prepack=False)
    packed.load_state_dict(other.state_dict())
    after = outputs(packed, x)["out"]
    assert not torch.allclose(after, before)
    torch.testing.assert_close(after, outputs(other, x)["out"], atol=1e-5, rtol=1e-5)
    clone = copy.deepcopy(packed)  # the cache is not part of the module: copies repack
    torch.testing.assert_close(outputs(clone, x)["out"], after, atol=0, rtol=0)


def test_only_small_models_are_prepacked_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    small = optimize_for_inference(build_model("deeplabv3_mobilenetv2_tiny"), cpu_fusion=True)
    outputs(small, torch.randn(1, 3, 33, 33))
    assert cpu_fusion.packed_count(small) > 0
    monkeypatch.setattr(cpu_fusion, "PREPACK_LIMIT_BYTES", 1000)
    large = optimize_for_inference(build_model("deeplabv3_mobilenetv2_tiny"), cpu_fusion=True)
    outputs(large, torch.randn(1, 3, 33, 33))
    assert cpu_fusion.packed_count(large) == 0


def test_a_replaced_weight_parameter_is_repacked() -> None:
    torch.manual_seed(0)
    packed = optimize_for_inference(build_model("deeplabv3_tiny"), cpu_fusion=True, prepack=True)
    x = torch.randn(1, 3, 40, 40)
    outputs(packed, x)
    conv = packed.backbone.layer1[0].conv1
    conv.weight = nn.Parameter(torch.zeros_like(conv.weight), requires_grad=False)
    reference = optimize_for_inference(packed, cpu_fusion=True, prepack=False)
    torch.testing.assert_close(
        outputs(packed, x)["out"], outputs(reference, x)["out"], atol=1e-5, rtol=1e-5
    )
