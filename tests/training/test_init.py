"""`--init`: the backbone's ImageNet card (downloaded like any model), a local ImageNet ResNet
file, random weights; and what a backbone that does not fit says."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest
import torch
from support.fakehub import FakeServer

from deeplabcli import build_model
from deeplabcli.config import VOC_CLASSES, TrainConfig
from deeplabcli.errors import ModelLoadError
from deeplabcli.training.init import training_model


def imagenet_resnet(arch: str, seed: int) -> dict[str, torch.Tensor]:
    """A ResNet state dict in torchvision's names (``fc`` included), as ImageNet files are."""
    torch.manual_seed(seed)
    backbone = build_model(arch).backbone.state_dict()
    width = 2048 if arch != "deeplabv3_tiny" else 256
    return {**backbone, "fc.weight": torch.randn(10, width), "fc.bias": torch.zeros(10)}


def pth_bytes(state: dict[str, torch.Tensor]) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def assert_backbone_loaded(model, state: dict[str, torch.Tensor]) -> None:
    loaded = model.backbone.state_dict()
    assert loaded.keys() == {k for k in state if not k.startswith("fc.")}
    assert all(torch.equal(loaded[k], state[k]) for k in loaded)


def test_default_init_is_the_backbones_imagenet_card(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    weights = imagenet_resnet("deeplabv3_tiny", seed=3)
    data = pth_bytes(weights)
    cards = tmp_path / "cards"
    cards.mkdir()
    messages: list[str] = []
    with FakeServer() as server:
        url = server.add_url("models/resnet_tiny_in1k.pth", data)
        (cards / "resnet_tiny-imagenet.toml").write_text(
            'name = "resnet_tiny-imagenet"\nformat = "torchvision-backbone"\n'
            'architecture = "deeplabv3_tiny"\nbackbone = "resnet_tiny"\nlicense = "MIT"\n'
            f'[source]\nurl = "{url}"\nsha256 = "{hashlib.sha256(data).hexdigest()}"\n'
        )
        monkeypatch.setenv("DEEPLAB_CARDS_DIR", str(cards))
        model = training_model(TrainConfig(arch="deeplabv3_tiny"), VOC_CLASSES, say=messages.append)
    assert_backbone_loaded(model, weights)
    assert messages == [
        "Initialised the resnet_tiny backbone from resnet_tiny-imagenet; the head starts from "
        "random weights."
    ]
    assert model.training and model.config.output_stride == 16


def test_local_imagenet_file_and_cascaded_blocks(tmp_path: Path) -> None:
    weights = imagenet_resnet("deeplabv3_tiny", seed=4)
    path = tmp_path / "resnet_tiny.pth"
    path.write_bytes(pth_bytes(weights))
    config = TrainConfig(arch="deeplabv3_tiny", init=str(path), cascade=6, num_classes=21)
    model = training_model(config, VOC_CLASSES, say=lambda _: None)
    loaded = model.backbone.state_dict()
    # block1..4 from the file; the paper's extra blocks 5 and 6 have no ImageNet weights
    assert all(torch.equal(loaded[k], weights[k]) for k in weights if not k.startswith("fc."))
    assert any(k.startswith("layer6.") for k in loaded)
    # random init is seeded: the same config builds the same model
    again = training_model(config.replace(init="none"), VOC_CLASSES, say=lambda _: None)
    twice = training_model(config.replace(init="none"), VOC_CLASSES, say=lambda _: None)
    assert all(
        torch.equal(a, b)
        for a, b in zip(again.state_dict().values(), twice.state_dict().values(), strict=True)
    )


def test_backbone_of_another_depth_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "resnet_tiny.pth"
    path.write_bytes(pth_bytes(imagenet_resnet("deeplabv3_tiny", seed=5)))
    config = TrainConfig(arch="deeplabv3_resnet50", init=str(path))
    with pytest.raises(ModelLoadError) as error:
        training_model(config, VOC_CLASSES, say=lambda _: None)
    assert str(error.value).startswith(f"{path} does not fit the resnet50 backbone (missing ")
    assert str(error.value).endswith("Pass backbone weights of resnet50, or --init none.")


def test_no_image_pooling_reaches_the_training_model() -> None:
    """``--no-image-pooling`` (``TrainConfig.image_pooling=False``): the model a run trains has
    no pooling branch, and its config says so (config.json is written from it)."""
    from deeplabcli.models.heads import ASPPPooling

    for pooling in (None, False, True):
        config = TrainConfig(arch="deeplabv3_tiny", init="none", image_pooling=pooling)
        model = training_model(config, VOC_CLASSES, say=lambda _: None)
        present = any(isinstance(m, ASPPPooling) for m in model.modules())
        assert present is (pooling is not False)
        assert model.config.image_pooling is (pooling is not False)
        assert model.head.aspp.project[0].in_channels == (5 if present else 4) * 16
