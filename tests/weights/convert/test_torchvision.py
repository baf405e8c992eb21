"""torchvision parity: our converted DeepLabv3 ResNets reproduce torchvision's outputs."""

from __future__ import annotations

import pytest
import torch
from torchvision.models.segmentation import deeplabv3_resnet50, deeplabv3_resnet101

from deeplabcli import ModelConfig, build_model
from deeplabcli.errors import ConversionError
from deeplabcli.weights.convert import from_torchvision

PEERS = {
    "deeplabv3_resnet50": (deeplabv3_resnet50, 42_004_074),
    "deeplabv3_resnet101": (deeplabv3_resnet101, 60_996_202),
}


def randomise_batch_norm(model: torch.nn.Module, seed: int = 1) -> None:
    """Non-trivial BN statistics, so that a wrong BN mapping cannot go unnoticed."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            n = module.num_features
            module.running_mean.copy_(torch.rand(n, generator=generator) * 0.2 - 0.1)
            module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
            module.weight.data.copy_(torch.rand(n, generator=generator) + 0.5)
            module.bias.data.copy_(torch.rand(n, generator=generator) * 0.2 - 0.1)


@pytest.fixture(scope="module", params=sorted(PEERS))
def pair(request):
    builder, _ = PEERS[request.param]
    torch.manual_seed(0)
    peer = builder(weights=None, weights_backbone=None, aux_loss=True, num_classes=21).eval()
    ours = from_torchvision(peer.state_dict(), request.param)
    return request.param, peer, ours


@pytest.mark.parametrize("shape", [(1, 3, 257, 257), (1, 3, 200, 300)])
def test_outputs_match_torchvision(pair, shape):
    _, peer, ours = pair
    x = torch.randn(shape, generator=torch.Generator().manual_seed(shape[-1]))
    with torch.inference_mode():
        expected, actual = peer(x), ours(x)
    assert set(actual) == {"out", "aux"}
    for key in ("out", "aux"):
        assert actual[key].shape == expected[key].shape
        assert (actual[key] - expected[key]).abs().max().item() <= 1e-4


def test_parameter_counts_equal_torchvision(pair):
    arch, peer, ours = pair
    count = sum(p.numel() for p in ours.parameters())
    assert count == sum(p.numel() for p in peer.parameters()) == PEERS[arch][1]


def test_converted_config_records_torchvision_conventions(pair):
    _, _, ours = pair
    config = ours.config
    assert config.output_stride == 8
    assert config.dilation_convention == "torchvision"
    assert config.head == "torchvision"
    assert config.scaled_aspp_rates() == (12, 24, 36)
    assert config.align_corners is False
    assert config.aux_head is True
    assert ModelConfig.from_json(config.to_json()) == config
    # layer3: first unit at the previous rate (1), then 2; layer4: 2 then 4.
    dilations = ours.backbone.unit_dilations()
    assert dilations[2][:2] == [1, 2]
    assert dilations[3] == [2, 4, 4]


def test_randomised_batch_norm_still_matches():
    torch.manual_seed(0)
    peer = deeplabv3_resnet50(weights=None, weights_backbone=None, num_classes=7).eval()
    randomise_batch_norm(peer)
    ours = from_torchvision(peer.state_dict(), "deeplabv3_resnet50")
    assert ours.config.num_classes == 7 and ours.aux_head is None
    x = torch.randn(1, 3, 97, 131)
    with torch.inference_mode():
        diff = (peer(x)["out"] - ours(x)["out"]).abs().max().item()
    assert diff <= 1e-4


def test_switching_converted_model_to_os16_matches_restrided_torchvision():
    """OS 16: torchvision with only layer4 dilated (rates 6/12/18 in its ASPP)."""
    from torchvision.models import resnet50
    from torchvision.models._utils import IntermediateLayerGetter
    from torchvision.models.segmentation.deeplabv3 import DeepLabHead, DeepLabV3

    torch.manual_seed(0)
    body = resnet50(weights=None, replace_stride_with_dilation=[False, False, True])
    body = IntermediateLayerGetter(body, return_layers={"layer4": "out"})
    peer = DeepLabV3(body, DeepLabHead(2048, 21, atrous_rates=(6, 12, 18))).eval()
    randomise_batch_norm(peer)
    ours = from_torchvision(peer.state_dict(), "deeplabv3_resnet50")
    ours.set_output_stride(16)
    x = torch.randn(1, 3, 129, 161)
    with torch.inference_mode():
        diff = (peer(x)["out"] - ours(x)["out"]).abs().max().item()
    assert diff <= 1e-4


def test_imagenet_backbone_weights_load_unchanged():
    from torchvision.models import resnet101

    torch.manual_seed(0)
    imagenet = resnet101(weights=None).state_dict()
    model = build_model("deeplabv3_resnet101")
    backbone_only = {k: v for k, v in imagenet.items() if not k.startswith("fc.")}
    result = model.backbone.load_state_dict(backbone_only, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert torch.equal(model.backbone.layer4[2].conv3.weight, imagenet["layer4.2.conv3.weight"])


def test_not_a_torchvision_state_dict_is_refused():
    with pytest.raises(ConversionError, match="not a torchvision DeepLabv3"):
        from_torchvision({"fc.weight": torch.zeros(2, 2)}, "deeplabv3_resnet50")
    torch.manual_seed(0)
    peer = deeplabv3_resnet50(weights=None, weights_backbone=None, num_classes=21)
    with pytest.raises(ConversionError, match="missing"):
        from_torchvision(peer.state_dict(), "deeplabv3_resnet101")
