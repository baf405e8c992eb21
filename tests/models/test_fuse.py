"""Batch-norm folding and channels-last: the optimised copy computes the same network."""

from __future__ import annotations

import pytest
import torch
from support.fusion import VARIANTS, outputs, randomise_batchnorm
from torch import nn

from deeplabcli import build_model, list_archs
from deeplabcli.models.cpu_fusion import available as fusion_available
from deeplabcli.models.fuse import (
    count_batchnorms,
    fold_batchnorm,
    fold_conv_bn,
    optimize_for_inference,
)


@pytest.mark.parametrize(("arch", "overrides"), VARIANTS)
def test_folded_model_matches_unfused(arch: str, overrides: dict) -> None:
    torch.manual_seed(0)
    model = randomise_batchnorm(build_model(arch, **overrides))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    batchnorms = count_batchnorms(model)
    assert (batchnorms == 0) == bool(overrides.get("folded_bn"))
    fused = optimize_for_inference(model)
    assert count_batchnorms(fused) == 0
    assert count_batchnorms(model) == batchnorms
    x = torch.randn(2, 3, 67, 90)
    expected = outputs(model, x)
    got = outputs(fused, x, channels_last=True)
    assert set(got) == set(expected)
    for key in expected:
        assert got[key].shape == expected[key].shape
        torch.testing.assert_close(got[key], expected[key], atol=1e-4, rtol=0)
    # the original model is untouched
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert all(not p.requires_grad for p in fused.parameters())


def test_every_registered_architecture_folds_exactly() -> None:
    for arch in list_archs():
        torch.manual_seed(1)
        model = randomise_batchnorm(build_model(arch), seed=1)
        folded = fold_batchnorm(model)
        assert count_batchnorms(folded) == 0, arch
        x = torch.randn(1, 3, 41, 57)
        torch.testing.assert_close(
            outputs(folded, x)["out"], outputs(model, x)["out"], atol=1e-4, rtol=0, msg=arch
        )


@pytest.mark.parametrize(
    "cpu_fusion",
    [
        False,
        pytest.param(
            True,
            marks=pytest.mark.skipif(
                not fusion_available(), reason="this PyTorch build has no oneDNN fused convolution"
            ),
        ),
    ],
    ids=["folded", "folded+fused"],
)
def test_folded_model_switches_output_stride_like_the_original(cpu_fusion: bool) -> None:
    torch.manual_seed(0)
    model = randomise_batchnorm(build_model("deeplabv3_tiny", output_stride=16))
    fused = optimize_for_inference(model, cpu_fusion=cpu_fusion)
    model.set_output_stride(8)
    fused.set_output_stride(8)
    x = torch.randn(1, 3, 49, 49)
    torch.testing.assert_close(
        outputs(fused, x)["out"], outputs(model, x)["out"], atol=1e-4, rtol=0
    )


def test_fold_conv_bn_with_an_existing_bias_and_groups() -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 8, 3, padding=1, groups=2, bias=True)
    bn = randomise_batchnorm(nn.Sequential(nn.BatchNorm2d(8)))[0]
    x = torch.randn(2, 4, 9, 9)
    with torch.no_grad():
        expected = bn(conv(x))
        fold_conv_bn(conv, bn)
        torch.testing.assert_close(conv(x), expected, atol=1e-5, rtol=0)


def test_batchnorm_not_directly_after_a_conv_is_kept() -> None:
    model = randomise_batchnorm(nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU(), nn.BatchNorm2d(4)))
    folded = fold_batchnorm(model)
    assert count_batchnorms(folded) == 1
    x = torch.randn(1, 3, 5, 5)
    torch.testing.assert_close(folded(x), model(x))


def test_inplace_folding_modifies_the_model_itself() -> None:
    model = randomise_batchnorm(build_model("deeplabv3_tiny"))
    assert fold_batchnorm(model, inplace=True) is model
    assert count_batchnorms(model) == 0


def test_optimize_in_place_returns_the_model_itself() -> None:
    torch.manual_seed(0)
    model = randomise_batchnorm(build_model("deeplabv3_mobilenetv2_tiny"))
    expected = outputs(optimize_for_inference(model), torch.ones(1, 3, 33, 33))["out"]
    assert count_batchnorms(model) > 0  # the copy left it alone
    optimised = optimize_for_inference(model, inplace=True)
    assert optimised is model and count_batchnorms(model) == 0
    got = outputs(model, torch.ones(1, 3, 33, 33), channels_last=True)["out"]
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
