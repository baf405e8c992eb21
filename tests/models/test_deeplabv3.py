"""The model core: the paper's architecture, output-stride switching, config round trips."""

from __future__ import annotations

import math

import pytest
import torch

from deeplabcli import ModelConfig, build_model, list_archs
from deeplabcli.errors import ConfigError, UnknownArchitectureError
from deeplabcli.models.resnet import block_schedule


def backbone_features(model, size: int, width: int | None = None) -> tuple[int, int]:
    with torch.no_grad():
        out = model.eval().backbone(torch.zeros(1, 3, size, width or size))["out"]
    return out.shape[-2], out.shape[-1]


def test_public_api_names_the_paper_architectures():
    assert {"deeplabv3_resnet50", "deeplabv3_resnet101", "deeplabv3_mobilenetv2"} <= set(
        list_archs()
    )


def test_resnet101_paper_configuration_and_output_stride_switch():
    model = build_model("deeplabv3_resnet101", output_stride=16, multi_grid=(1, 2, 4))
    backbone = model.backbone
    # OS 16: block3 keeps stride 2, block4 becomes atrous with rates 2·(1, 2, 4).
    assert backbone.block_strides() == [1, 2, 2, 1]
    assert backbone.unit_dilations()[2] == [1] * 23
    assert backbone.unit_dilations()[3] == [2, 4, 8]
    assert model.head.aspp.rates == (6, 12, 18)
    assert len(model.head.aspp.convs) == 5  # 1×1, three atrous, image pooling
    for size in (513, 512):  # a narrow strip keeps the test fast; both sides are checked
        assert backbone_features(model, size, 41) == (math.ceil(size / 16), math.ceil(41 / 16))

    weights_before = {k: v.clone() for k, v in model.state_dict().items()}
    model.set_output_stride(8)
    assert model.config.output_stride == 8
    assert backbone.block_strides() == [1, 2, 1, 1]
    assert backbone.unit_dilations()[2] == [2] * 23
    assert backbone.unit_dilations()[3] == [4, 8, 16]
    assert model.head.aspp.rates == (12, 24, 36)
    for size in (513, 512):
        assert backbone_features(model, size, 41) == (math.ceil(size / 8), math.ceil(41 / 8))
    after = model.state_dict()
    assert all(torch.equal(weights_before[k], after[k]) for k in weights_before)

    model.set_output_stride(16)
    assert backbone.unit_dilations()[3] == [2, 4, 8]
    assert model.head.aspp.rates == (6, 12, 18)


def test_atrous_conv_padding_keeps_ceil_size():
    # Dilated 3×3 convs must pad by their rate, or features shrink at every unit.
    model = build_model("deeplabv3_resnet50", output_stride=8)
    for block in model.backbone.blocks():
        for unit in block:
            assert unit.conv2.padding == unit.conv2.dilation


def test_cascade_to_block7_keeps_os16_with_doubling_rates():
    model = build_model("deeplabv3_resnet50", cascade=7, output_stride=16, multi_grid=(1, 2, 1))
    backbone = model.backbone
    assert backbone.block_strides() == [1, 2, 2, 1, 1, 1, 1]
    # block4..7 rates 2, 4, 8, 16, times Multi_Grid (1, 2, 1).
    assert backbone.unit_dilations()[3:] == [[2, 4, 2], [4, 8, 4], [8, 16, 8], [16, 32, 16]]
    assert backbone_features(model, 129) == (9, 9)


@pytest.mark.parametrize(
    ("output_stride", "expected_strides"),
    [
        (8, [1, 2, 1, 1, 1, 1, 1]),
        (32, [1, 2, 2, 2, 1, 1, 1]),
        (256, [1, 2, 2, 2, 2, 2, 2]),  # no atrous at all (paper Table 1)
    ],
)
def test_cascade_output_strides_of_table1(output_stride, expected_strides):
    model = build_model("deeplabv3_tiny", cascade=7, output_stride=output_stride)
    assert model.backbone.block_strides() == expected_strides
    size = 513
    assert backbone_features(model, size) == (math.ceil(size / output_stride),) * 2


def test_block_schedule_torchvision_convention_keeps_previous_rate_in_first_unit():
    schedule = block_schedule(8, (3, 4, 6, 3), (1, 1, 1), "torchvision")
    assert schedule[2] == (1, [1, 2, 2, 2, 2, 2])
    assert schedule[3] == (1, [2, 4, 4])
    paper = block_schedule(8, (3, 4, 6, 3), (1, 1, 1), "paper")
    assert paper[2] == (1, [2] * 6)
    assert paper[3] == (1, [4, 4, 4])


def test_invalid_output_stride_is_a_clear_error():
    with pytest.raises(
        ConfigError, match=r"output stride 64 is not possible.*Use one of: 8, 16, 32\."
    ):
        build_model("deeplabv3_tiny", output_stride=64)
    model = build_model("deeplabv3_tiny")
    with pytest.raises(ConfigError, match="output stride 4 is not possible"):
        model.set_output_stride(4)


def test_unknown_architecture_lists_the_known_ones():
    with pytest.raises(UnknownArchitectureError, match="deeplabv3_resnet101"):
        build_model("deeplabv3_vgg16")


def test_model_config_round_trips_through_json_and_rebuilds_the_same_model():
    config = build_model(
        "deeplabv3_tiny", num_classes=3, aux_head=True, cascade=5, aspp_rates=(3, 6)
    ).config
    restored = ModelConfig.from_json(config.to_json())
    assert restored == config
    torch.manual_seed(0)
    a = build_model(config).eval()
    b = build_model(restored).eval()
    b.load_state_dict(a.state_dict())
    x = torch.randn(1, 3, 47, 61)
    with torch.no_grad():
        assert torch.equal(a(x)["out"], b(x)["out"])


def test_model_config_rejects_unknown_fields_and_inconsistent_values():
    data = ModelConfig().to_dict()
    data["colour"] = "blue"
    with pytest.raises(ConfigError, match="unknown model config fields: colour"):
        ModelConfig.from_dict(data)
    with pytest.raises(ConfigError, match="2 class names for 3 classes"):
        ModelConfig(num_classes=3, class_names=("a", "b"))
    assert ModelConfig(num_classes=3).class_names == ("class_0", "class_1", "class_2")
    with pytest.raises(ConfigError, match=r"the mobile head has no atrous ASPP branches"):
        build_model("deeplabv3_resnet101", head="mobile")  # rates it would silently drop


def test_mobile_head_switches_output_stride():
    model = build_model("deeplabv3_tiny", head="mobile", aspp_rates=())
    model.set_output_stride(8)
    assert model.output_stride == 8 and model.config.scaled_aspp_rates() == ()


def test_output_is_upsampled_to_the_input_size_with_aux():
    model = build_model("deeplabv3_tiny", num_classes=5, aux_head=True).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 70, 93))
    assert set(out) == {"out", "aux"}
    assert out["out"].shape == (2, 5, 70, 93)
    assert out["aux"].shape == (2, 5, 70, 93)
    assert set(build_model("deeplabv3_tiny").eval()(torch.randn(1, 3, 33, 33))) == {"out"}


SMALL_CONFIGS = [
    pytest.param("deeplabv3_tiny", {}, id="tiny-paper"),
    pytest.param("deeplabv3_tiny", {"output_stride": 8, "aux_head": True}, id="tiny-os8-aux"),
    pytest.param("deeplabv3_tiny", {"output_stride": 32}, id="tiny-os32"),
    pytest.param("deeplabv3_tiny", {"image_pooling": False}, id="tiny-no-pooling"),
    pytest.param("deeplabv3_tiny", {"aspp_rates": (6, 12, 18, 24)}, id="tiny-rate24"),
    pytest.param("deeplabv3_tiny", {"aspp_rates": ()}, id="tiny-no-atrous-branches"),
    pytest.param("deeplabv3_tiny", {"head": "torchvision"}, id="tiny-torchvision-head"),
    pytest.param("deeplabv3_tiny", {"head": "mobile", "aspp_rates": ()}, id="tiny-mobile-head"),
    pytest.param("deeplabv3_tiny", {"folded_bn": True}, id="tiny-folded-bn"),
    pytest.param("deeplabv3_tiny", {"cascade": 7, "multi_grid": (1, 2, 1)}, id="tiny-block7"),
    pytest.param("deeplabv3_tiny", {"cascade": 7, "output_stride": 256}, id="tiny-block7-os256"),
    pytest.param(
        "deeplabv3_tiny", {"dilation_convention": "torchvision"}, id="tiny-torchvision-dilation"
    ),
    pytest.param("deeplabv3_tiny", {"align_corners": True}, id="tiny-align-corners"),
    pytest.param("deeplabv3_mobilenetv2_tiny", {}, id="mobilenetv2-tiny"),
    pytest.param("deeplabv3_mobilenetv2_tiny", {"output_stride": 16}, id="mobilenetv2-tiny-os16"),
    pytest.param(
        "deeplabv3_mobilenetv2_tiny",
        {"folded_bn": True, "depth_divisible_by": 1, "depth_multiplier": 0.5},
        id="mobilenetv2-folded-unrounded",
    ),
    pytest.param("deeplabv3_resnet50", {"aux_head": True}, id="resnet50"),
    pytest.param("deeplabv3_resnet101", {}, id="resnet101"),
    pytest.param("deeplabv3_mobilenetv2", {}, id="mobilenetv2"),
]


@pytest.mark.parametrize(("arch", "overrides"), SMALL_CONFIGS)
def test_every_configuration_runs_forward_and_backward(arch, overrides):
    torch.manual_seed(0)
    model = build_model(arch, num_classes=4, **overrides).train()
    x = torch.randn(2, 3, 66, 50)
    out = model(x)
    assert out["out"].shape == (2, 4, 66, 50)
    loss = sum(v.float().mean() for v in out.values())
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize(
    ("arch", "overrides", "branches"),
    [
        ("deeplabv3_tiny", {}, 4),  # 1×1, rates 6, 12, 18
        ("deeplabv3_tiny", {"head": "torchvision"}, 4),
        ("deeplabv3_mobilenetv2_tiny", {}, 1),  # 1×1 only
    ],
)
def test_image_pooling_off_reaches_the_built_head(arch, overrides, branches):
    """``image_pooling=False`` builds an ASPP without the pooling branch: fewer branches, a
    narrower projection and no pooling weights; ``True`` builds it."""
    from deeplabcli.models.heads import ASPP, ASPPPooling

    for pooling in (True, False):
        model = build_model(arch, num_classes=3, image_pooling=pooling, **overrides)
        assert model.config.image_pooling is pooling
        [aspp] = [m for m in model.modules() if isinstance(m, ASPP)]
        pools = [m for m in model.modules() if isinstance(m, ASPPPooling)]
        assert len(pools) == (1 if pooling else 0)
        assert len(aspp.convs) == branches + pooling
        channels = model.config.head_channels
        assert aspp.project[0].in_channels == (branches + pooling) * channels
        keys = [k for k in model.state_dict() if k.startswith(f"head.aspp.convs.{branches}.")]
        assert bool(keys) is pooling
