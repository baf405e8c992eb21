"""The MobileNetV2 backbone: TF "SAME" padding, channel rounding, dilation schedule, OS switch."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from deeplabcli import build_model
from deeplabcli.models.mobilenetv2 import ConvBNAct, block_channels, block_schedule, same_padding


@pytest.mark.parametrize(
    ("size", "kernel", "stride", "dilation", "expected"),
    [
        (9, 3, 2, 1, (1, 1)),  # odd size, stride 2: symmetric
        (8, 3, 2, 1, (0, 1)),  # even size, stride 2: TF pads only after
        (513, 3, 2, 1, (1, 1)),
        (512, 3, 2, 1, (0, 1)),
        (8, 3, 1, 1, (1, 1)),
        (8, 3, 1, 4, (4, 4)),  # dilated: (k−1)·d split evenly
        (8, 1, 1, 1, (0, 0)),
        (1, 3, 2, 1, (1, 1)),
    ],
)
def test_same_padding_follows_tensorflow(size, kernel, stride, dilation, expected):
    assert same_padding(size, kernel, stride, dilation) == expected
    before, after = expected
    out = (size + before + after - (kernel - 1) * dilation - 1) // stride + 1
    assert out == math.ceil(size / stride)  # "SAME" keeps ceil(size / stride)


def test_conv_pads_asymmetrically_only_where_tensorflow_does():
    torch.manual_seed(0)
    layer = ConvBNAct(2, 3, 3, folded_bn=True, relu6=False).eval()
    layer.configure(2, 1)
    x = torch.randn(1, 2, 8, 9)  # even height: pad (0, 1); odd width: pad (1, 1)
    reference = F.conv2d(F.pad(x, (1, 1, 0, 1)), layer.conv.weight, layer.conv.bias, stride=2)
    with torch.no_grad():
        assert torch.equal(layer(x), reference)
    explicit, padding = layer._padding(9, 9)
    assert explicit is None and padding == 1  # symmetric: the conv pads, no copy
    assert layer._padding(8, 9)[0] == (1, 1, 0, 1)
    symmetric = ConvBNAct(2, 3, 3, tf_padding=False, folded_bn=True)
    symmetric.configure(1, 2)
    assert symmetric.conv.padding == (2, 2)


def test_channels_with_and_without_rounding():
    def config(**overrides):
        return build_model("deeplabv3_mobilenetv2", **overrides).config

    full = block_channels(config())
    assert full[0] == (32, 32, 16) and full[1] == (16, 96, 24) and full[-1] == (160, 960, 320)
    # Google's 0.5 model keeps 0.5 × every width (no rounding to multiples of 8).
    half = block_channels(config(depth_multiplier=0.5, depth_divisible_by=1))
    assert [c[2] for c in half] == [
        8,
        12,
        12,
        16,
        16,
        16,
        32,
        32,
        32,
        32,
        48,
        48,
        48,
        80,
        80,
        80,
        160,
    ]
    assert [c[1] for c in half][:4] == [16, 48, 72, 72]
    rounded = block_channels(config(depth_multiplier=0.5))
    assert [c[2] for c in rounded][:3] == [8, 16, 16]  # 12 rounds up to 16
    tiny = build_model("deeplabv3_mobilenetv2_tiny").backbone
    assert tiny.out_channels == 80 and tiny.stem.conv.out_channels == 8  # min_depth 8


def test_dilation_schedule_for_each_output_stride():
    # OS 8: blocks 7..13 at rate 2, 14..16 at rate 4 (Google's PASCAL models).
    assert (
        block_schedule(8)
        == [(1, 1), (2, 1), (1, 1), (2, 1)] + [(1, 1)] * 3 + [(1, 2)] * 7 + [(1, 4)] * 3
    )
    assert [d for _, d in block_schedule(16)] == [1] * 14 + [2] * 3
    assert [s for s, _ in block_schedule(16)].count(2) == 3
    assert block_schedule(32) == [
        (s, 1) for s in (1, 2, 1, 2, 1, 1, 2, 1, 1, 1, 1, 1, 1, 2, 1, 1, 1)
    ]


def test_output_stride_switch_keeps_weights_and_gives_ceil_features():
    model = build_model("deeplabv3_mobilenetv2_tiny", output_stride=16).eval()
    backbone = model.backbone
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for output_stride in (8, 32, 16):
        model.set_output_stride(output_stride)
        assert backbone.output_stride == output_stride
        assert [d for _, d in block_schedule(output_stride)] == backbone.block_dilations()
        for height, width in ((65, 64), (33, 50)):
            with torch.no_grad():
                out = backbone(torch.zeros(1, 3, height, width))["out"]
            expected = (math.ceil(height / output_stride), math.ceil(width / output_stride))
            assert out.shape[-2:] == expected
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_no_1280_channel_layer_is_built():
    model = build_model("deeplabv3_mobilenetv2")
    assert model.backbone.out_channels == 320
    assert all(p.shape[0] != 1280 for p in model.parameters())


@pytest.mark.parametrize("output_stride", [8, 16, 32])
@pytest.mark.parametrize("folded_bn", [False, True])
def test_tiny_variant_trains_at_every_output_stride(output_stride, folded_bn):
    torch.manual_seed(0)
    model = build_model(
        "deeplabv3_mobilenetv2_tiny", output_stride=output_stride, folded_bn=folded_bn
    ).train()
    x = torch.randn(2, 3, 48, 37)
    out = model(x)["out"]
    assert out.shape == (2, 21, 48, 37)
    out.square().mean().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert model.backbone.stem.conv.weight.grad.abs().sum() > 0  # gradients reach the stem
