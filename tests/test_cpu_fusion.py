"""Fused CPU inference (conv + ReLU/ReLU6 + residual sum in one oneDNN call) computes the same
network as the folded model it comes from."""

from __future__ import annotations

import pytest
import torch
from test_fuse import VARIANTS, outputs, randomise_batchnorm
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


def test_fused_model_switches_output_stride() -> None:
    torch.manual_seed(0)
    model = randomise_batchnorm(build_model("deeplabv3_tiny", output_stride=16))
    fused = optimize_for_inference(model, cpu_fusion=True)
    model.set_output_stride(8)
    fused.set_output_stride(8)
    x = torch.randn(1, 3, 49, 49)
    torch.testing.assert_close(
        outputs(fused, x)["out"], outputs(model, x)["out"], atol=1e-4, rtol=0
    )


def test_unfolded_batch_norm_is_left_alone() -> None:
    model = build_model("deeplabv3_tiny").eval()
    assert fuse_activations(model) is model
    assert not kinds(model) & set(FUSED)


def test_a_float64_model_is_left_alone() -> None:
    model = optimize_for_inference(build_model("deeplabv3_mobilenetv2_tiny")).double()
    fuse_activations(model)
    assert not kinds(model) & set(FUSED)
