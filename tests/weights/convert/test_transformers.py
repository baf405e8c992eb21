"""transformers' MobileNetV2ForSemanticSegmentation → our model: exact parity."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from deeplabcli import ModelConfig, build_model
from deeplabcli.config import VOC_CLASSES
from deeplabcli.errors import ConversionError
from deeplabcli.weights.convert import from_transformers

transformers = pytest.importorskip("transformers")

#: The configuration of the Hub checkpoint google/deeplabv3_mobilenet_v2_1.0_513.
HUB_CONFIG = {
    "model_type": "mobilenet_v2",
    "depth_multiplier": 1.0,
    "depth_divisible_by": 8,
    "min_depth": 8,
    "output_stride": 8,
    "tf_padding": True,
    "finegrained_output": True,
    "first_layer_is_expansion": True,
    "expand_ratio": 6.0,
    "hidden_act": "relu6",
    "layer_norm_eps": 0.001,
    "classifier_dropout_prob": 0.1,
    "image_size": 513,
    "id2label": {str(i): name for i, name in enumerate(VOC_CLASSES)},
}


def reference_model(**changes):
    """A randomly initialised transformers model in eval mode. Conv weights get He-scaled
    variance (transformers' own init, std 0.02, lets activations die out and leaves near-constant
    logits) and BN statistics and affine parameters are random too (fresh BN would be nearly the
    identity and hide mistakes)."""
    config_dict = {**HUB_CONFIG, **changes}
    config = transformers.MobileNetV2Config(
        **{k: v for k, v in config_dict.items() if k != "model_type"},
        label2id={v: int(k) for k, v in config_dict["id2label"].items()},
    )
    torch.manual_seed(0)
    model = transformers.MobileNetV2ForSemanticSegmentation(config).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.3, 0.3)
            elif isinstance(module, torch.nn.Conv2d):
                fan_in = module.weight[0].numel()
                module.weight.normal_(0.0, (2.0 / fan_in) ** 0.5)
                if module.bias is not None:
                    module.bias.uniform_(-0.3, 0.3)
    return model, config_dict


@pytest.fixture(scope="module")
def hub_pair():
    theirs, config_dict = reference_model()
    ours = from_transformers(theirs.state_dict(), config_dict)
    return theirs, ours


def head_logits(model, x: torch.Tensor) -> torch.Tensor:
    """Our logits before upsampling: (N, C, ceil(H/OS), ceil(W/OS))."""
    return model.head(model.backbone(x)["out"])


@pytest.mark.parametrize(("height", "width"), [(513, 513), (384, 512)])
def test_hub_configuration_matches_transformers(hub_pair, height, width):
    theirs, ours = hub_pair
    torch.manual_seed(1)
    x = torch.randn(1, 3, height, width)
    with torch.no_grad():
        expected = theirs(pixel_values=x).logits
        low = head_logits(ours, x)
        out = ours(x)["out"]
    assert expected.shape == (1, 21, -(-height // 8), -(-width // 8))
    assert low.shape == expected.shape
    diff = (low - expected).abs().max().item()
    assert diff < 1e-4, diff
    # The comparison is between maps that vary over space and classes, not near-constant ones.
    assert expected.std(dim=(2, 3)).min() > 0.5
    upsampled = F.interpolate(expected, size=(height, width), mode="bilinear", align_corners=False)
    assert out.shape == (1, 21, height, width)
    assert (out - upsampled).abs().max().item() < 1e-4


def test_converted_config_describes_the_checkpoint(hub_pair):
    theirs, ours = hub_pair
    unused = sum(p.numel() for p in theirs.mobilenet_v2.conv_1x1.parameters())
    assert sum(p.numel() for p in ours.parameters()) == theirs.num_parameters() - unused
    config = ours.config
    assert config.backbone == "mobilenetv2"
    assert config.head == "mobile"
    assert config.output_stride == 8
    assert config.class_names == VOC_CLASSES
    assert config.align_corners is False
    assert config.tf_padding and not config.folded_bn
    assert config.backbone_bn_eps == 1e-3 and config.head_bn_eps == 1e-5
    assert config.preprocessing.mean == (0.5, 0.5, 0.5)
    assert ours.backbone.out_channels == 320
    assert not ours.training


def test_converted_config_round_trips_through_json(hub_pair):
    _, ours = hub_pair
    restored = ModelConfig.from_json(ours.config.to_json())
    assert restored == ours.config
    rebuilt = build_model(restored).eval()
    rebuilt.load_state_dict(ours.state_dict())
    x = torch.randn(1, 3, 65, 80)
    with torch.no_grad():
        assert torch.equal(rebuilt(x)["out"], ours(x)["out"])


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"depth_multiplier": 0.5, "output_stride": 16}, id="dm0.5-os16"),
        pytest.param(
            {"depth_multiplier": 0.35, "depth_divisible_by": 1, "output_stride": 32},
            id="dm0.35-unrounded-os32",
        ),
        pytest.param({"tf_padding": False, "layer_norm_eps": 1e-5}, id="torch-padding"),
    ],
)
def test_other_configurations_match_transformers(changes):
    theirs, config_dict = reference_model(**changes)
    ours = from_transformers(theirs.state_dict(), config_dict)
    assert ours.config.output_stride == config_dict["output_stride"]
    torch.manual_seed(2)
    x = torch.randn(2, 3, 130, 96)
    with torch.no_grad():
        expected = theirs(pixel_values=x).logits
        diff = (head_logits(ours, x) - expected).abs().max().item()
    assert diff < 1e-4, diff


def test_output_stride_switch_matches_transformers_at_the_new_stride():
    theirs16, config16 = reference_model(output_stride=16)
    theirs8, _ = reference_model(output_stride=8)  # same seed: the same weights, OS-8 layout
    ours = from_transformers(theirs16.state_dict(), config16)
    ours.set_output_stride(8)
    x = torch.randn(1, 3, 97, 120)
    with torch.no_grad():
        diff = (head_logits(ours, x) - theirs8(pixel_values=x).logits).abs().max().item()
    assert diff < 1e-4, diff


def test_state_dict_without_bn_step_counters_converts():
    theirs, config_dict = reference_model(depth_multiplier=0.35)
    state = {k: v for k, v in theirs.state_dict().items() if "num_batches_tracked" not in k}
    ours = from_transformers(state, config_dict)
    x = torch.randn(1, 3, 40, 40)
    with torch.no_grad():
        assert (head_logits(ours, x) - theirs(pixel_values=x).logits).abs().max() < 1e-4


def test_class_count_follows_the_classifier_and_names_follow_id2label():
    theirs, config_dict = reference_model(
        id2label={"0": "background", "1": "cat", "2": "dog"}, depth_multiplier=0.35
    )
    ours = from_transformers(theirs.state_dict(), config_dict)
    assert ours.config.num_classes == 3
    assert ours.config.class_names == ("background", "cat", "dog")


def test_not_a_mobilenetv2_segmentation_state_dict_is_a_clear_error():
    with pytest.raises(ConversionError, match=r"not a transformers MobileNetV2 segmentation"):
        from_transformers({"classifier.weight": torch.zeros(3, 3)}, HUB_CONFIG)
    theirs, config_dict = reference_model(depth_multiplier=0.35)
    state = dict(theirs.state_dict())
    state["segmentation_head.extra.weight"] = torch.zeros(1)
    with pytest.raises(ConversionError, match=r"unexpected key 'segmentation_head\.extra"):
        from_transformers(state, config_dict)
    with pytest.raises(ConversionError, match="first_layer_is_expansion=false"):
        from_transformers(theirs.state_dict(), {**config_dict, "first_layer_is_expansion": False})
    wrong_depth = {**config_dict, "depth_multiplier": 1.0}
    with pytest.raises(ConversionError, match="shape mismatch"):
        from_transformers(theirs.state_dict(), wrong_depth)
