"""Model references, model cards and downloads, against a local fake Hub / URL server."""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import pytest
import torch
from support.hub import (
    DEFAULT_REPO,
    TV_URL,
    bytes_of,
    evil_pickle,
    logits_of,
    our_checkpoint_files,
    tv_name,
    url_card,
)

from deeplabcli import VOC_CLASSES, load_backbone_weights, load_model
from deeplabcli.errors import (
    DownloadError,
    IntegrityError,
    ModelLoadError,
    UnsafeFileError,
)
from deeplabcli.models.resnet import DilatedResNet
from deeplabcli.weights.cards import get_card
from deeplabcli.weights.download import url_cache_path
from deeplabcli.weights.resolve import card_is_cached


# ------------------------------------------------------------- the Hub MobileNetV2 (a named model)
def test_hub_card_downloads_verifies_caches_and_loads_offline(
    server, transformers_model, monkeypatch
) -> None:
    from deeplabcli.weights.convert.transformers import from_transformers

    config_dict, state_dict = transformers_model
    server.add_repo(
        DEFAULT_REPO,
        {
            "config.json": json.dumps(config_dict).encode(),
            "pytorch_model.bin": bytes_of(state_dict),
        },
    )
    card = get_card("deeplabv3-mobilenetv2-voc")
    assert not card.default and not card_is_cached(card)

    model = load_model(card.name)
    reference = logits_of(from_transformers(dict(state_dict), dict(config_dict)).eval())
    torch.testing.assert_close(logits_of(model), reference, rtol=0, atol=0)
    assert model.config.class_names == VOC_CLASSES
    assert model.config.preprocessing == card.preprocessing
    assert model.provenance["source"] == card.name
    assert model.provenance["converted_from"] == "transformers"
    assert model.provenance["sha256"] == hashlib.sha256(bytes_of(state_dict)).hexdigest()
    assert card_is_cached(card)
    assert ("GET", f"/{DEFAULT_REPO}/resolve/main/pytorch_model.bin") in server.requests
    assert not any("xet" in path.lower() for _, path in server.requests)  # plain HTTP only

    server.stop()  # server gone: the cache answers, first without and then with offline mode
    torch.testing.assert_close(logits_of(load_model(card.name)), reference, rtol=0, atol=0)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    torch.testing.assert_close(logits_of(load_model(card.name)), reference, rtol=0, atol=0)


def test_hub_card_corrupted_download_is_rejected_and_removed(server) -> None:
    weights = bytes_of({"mobilenet_v2.conv_stem.weight": torch.ones(8, 3, 3, 3)})
    server.add_repo(
        DEFAULT_REPO,
        {"config.json": b'{"model_type": "mobilenet_v2"}', "pytorch_model.bin": weights},
    )
    server.corrupt.add(f"{DEFAULT_REPO}/pytorch_model.bin")
    with pytest.raises(IntegrityError) as error:
        load_model("deeplabv3-mobilenetv2-voc")
    message = str(error.value)
    assert f"pytorch_model.bin of Hub repo {DEFAULT_REPO}" in message
    assert "(for model 'deeplabv3-mobilenetv2-voc')" in message
    assert "it was deleted from the cache" in message
    blob = hashlib.sha256(weights).hexdigest()
    assert not list(Path(os.environ["HF_HUB_CACHE"]).rglob(blob))
    assert not card_is_cached(get_card("deeplabv3-mobilenetv2-voc"))


def test_offline_without_cache_says_how_to_proceed(monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DownloadError) as error:
        load_model("deeplabv3-mobilenetv2-voc")
    message = str(error.value)
    assert message.startswith("cannot get model 'deeplabv3-mobilenetv2-voc': config.json of Hub")
    assert f"repo {DEFAULT_REPO}@main is not cached and offline mode is on" in message
    for hint in ("HF_ENDPOINT", "DEEPLAB_URL_MIRROR", "`deeplab download NAME`",
                 "use local weights in its place (a checkpoint folder or a weights file)."):  # fmt: skip
        assert hint in message
    assert "--" not in message  # names no option: not every command that loads has --model
    with pytest.raises(
        DownloadError, match=re.escape("download.pytorch.org/models/deeplabv3_resnet50_coco")
    ):
        load_model("deeplabv3-resnet50-voc")


def test_unreachable_hub_without_cache_is_one_clear_error(monkeypatch) -> None:
    monkeypatch.setattr("time.sleep", lambda seconds: None)  # skip huggingface_hub's backoff
    with pytest.raises(DownloadError, match=r"the Hub at http://127\.0\.0\.1:9 cannot be reached"):
        load_model("someone/some-model")


# ---------------------------------------------------------------------------- Hub repositories
def test_hub_repo_in_our_format_by_branch_and_commit(server, tmp_path) -> None:
    model, files = our_checkpoint_files(tmp_path)
    commit = server.add_repo("someone/tiny-deeplab", files)
    for ref in ("someone/tiny-deeplab", f"someone/tiny-deeplab@{commit}"):
        loaded = load_model(ref)
        assert loaded.config == model.config
        assert loaded.provenance["revision"] == commit
        torch.testing.assert_close(logits_of(loaded), logits_of(model), rtol=0, atol=0)
    with pytest.raises(DownloadError, match="has no revision 'v9'"):
        load_model("someone/tiny-deeplab@v9")
    with pytest.raises(DownloadError, match="Hub repo nobody/nothing was not found"):
        load_model("nobody/nothing")


def test_corrupted_hub_file_is_rejected_then_redownloaded(server, tmp_path) -> None:
    model, files = our_checkpoint_files(tmp_path)
    server.add_repo("someone/tiny-deeplab", files)
    server.corrupt.add("someone/tiny-deeplab/model.safetensors")
    with pytest.raises(
        IntegrityError, match=r"model\.safetensors of Hub repo someone/tiny-deeplab"
    ):
        load_model("someone/tiny-deeplab")
    server.corrupt.clear()
    torch.testing.assert_close(logits_of(load_model("someone/tiny-deeplab")), logits_of(model))


def test_hub_file_shorter_than_announced_is_rejected(server, tmp_path) -> None:
    _, files = our_checkpoint_files(tmp_path)
    server.add_repo("someone/tiny-deeplab", files)
    server.truncate.add("someone/tiny-deeplab/model.safetensors")
    with pytest.raises(IntegrityError, match="arrived with the wrong size"):
        load_model("someone/tiny-deeplab")
    assert not list(Path(os.environ["HF_HUB_CACHE"]).rglob("*.incomplete"))


def test_transformers_hub_repo_prefers_safetensors(server, transformers_model) -> None:
    from safetensors.torch import save

    config_dict, state_dict = transformers_model
    server.add_repo(
        "someone/mnv2-seg",
        {"config.json": json.dumps(config_dict).encode(), "model.safetensors": save(state_dict)},
    )
    model = load_model("someone/mnv2-seg")
    assert model.config.backbone == "mobilenetv2"
    assert model.provenance["converted_from"] == "transformers"
    assert not any(path.endswith("pytorch_model.bin") for _, path in server.requests)

    server.add_repo(  # an older repo with the pickled weights only: read with weights_only
        "someone/mnv2-seg-bin",
        {
            "config.json": json.dumps(config_dict).encode(),
            "pytorch_model.bin": bytes_of(state_dict),
        },
    )
    legacy = load_model("someone/mnv2-seg-bin")
    torch.testing.assert_close(logits_of(legacy), logits_of(model), rtol=0, atol=0)


def test_hub_repo_with_a_foreign_config_is_refused(server) -> None:
    server.add_repo(
        "someone/bert", {"config.json": b'{"model_type": "bert"}', "model.safetensors": b"x"}
    )
    with pytest.raises(ModelLoadError, match="transformers 'bert' model; only MobileNetV2"):
        load_model("someone/bert")


# ---------------------------------------------------------------------------- URL cards
def test_torchvision_url_card_downloads_verifies_caches_and_loads_offline(
    server, cards, monkeypatch
) -> None:
    torchvision = pytest.importorskip("torchvision")
    from deeplabcli.weights.convert import from_torchvision

    torch.manual_seed(0)
    tv = torchvision.models.segmentation.deeplabv3_resnet50(
        weights=None, weights_backbone=None, aux_loss=True, num_classes=21
    )
    data = bytes_of(tv.state_dict())
    name = tv_name("deeplabv3_resnet50_coco", data)
    server.add_url(f"models/{name}", data)
    url = TV_URL.format(name=name)
    url_card(cards, "tv-r50", "torchvision", "deeplabv3_resnet50", url, extra='classes = "voc"')

    model = load_model("tv-r50")
    reference = logits_of(from_torchvision(tv.state_dict(), "deeplabv3_resnet50").eval())
    torch.testing.assert_close(logits_of(model), reference, rtol=0, atol=0)
    assert model.provenance["origin"] == url
    assert url_cache_path(url).is_file()
    assert url_cache_path(url).parts[-3:] == ("download.pytorch.org", "models", name)
    assert ("GET", f"/files/models/{name}") in server.requests

    server.stop()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    torch.testing.assert_close(logits_of(load_model("tv-r50")), reference, rtol=0, atol=0)


@pytest.fixture
def resnet_tiny_file() -> bytes:
    """A torchvision-style ImageNet ResNet state dict (tiny), classifier included."""
    torch.manual_seed(0)
    backbone = DilatedResNet("resnet_tiny", output_stride=32)
    return bytes_of({**backbone.state_dict(), "fc.weight": torch.randn(10, 256)})


def test_backbone_url_card_gives_training_weights(server, cards, resnet_tiny_file) -> None:
    name = tv_name("resnet_tiny", resnet_tiny_file)
    server.add_url(f"models/{name}", resnet_tiny_file)
    url_card(
        cards, "tiny-imagenet", "torchvision-backbone", "deeplabv3_tiny", TV_URL.format(name=name)
    )
    state_dict = load_backbone_weights("tiny-imagenet")
    assert not any(k.startswith("fc.") for k in state_dict)
    DilatedResNet("resnet_tiny", output_stride=16).load_state_dict(state_dict, strict=True)
    with pytest.raises(ModelLoadError, match="is an ImageNet backbone for training"):
        load_model("tiny-imagenet")


@pytest.mark.parametrize("fault", ["corrupt", "truncate", "wrong-prefix"])
def test_bad_url_downloads_are_rejected_and_not_cached(
    server, cards, resnet_tiny_file, fault
) -> None:
    name = tv_name("resnet_tiny", resnet_tiny_file)
    if fault == "wrong-prefix":
        name = "resnet_tiny-00000000.pth"
    server.add_url(f"models/{name}", resnet_tiny_file)
    if fault in ("corrupt", "truncate"):
        getattr(server, fault).add(f"/files/models/{name}")
    url = TV_URL.format(name=name)
    url_card(cards, "tiny-imagenet", "torchvision-backbone", "deeplabv3_tiny", url)
    expected = "was truncated: got" if fault == "truncate" else "corrupted or truncated download"
    with pytest.raises(IntegrityError, match=expected):
        load_backbone_weights("tiny-imagenet")
    folder = url_cache_path(url).parent
    assert not folder.exists() or not list(folder.iterdir())  # nothing kept, no .incomplete


def test_card_sha256_is_checked_before_anything_is_unpickled(
    server, cards, tmp_path, resnet_tiny_file
) -> None:
    marker = tmp_path / "pwned"
    evil = evil_pickle(marker)
    server.add_url("models/evil.pth", evil)
    url = TV_URL.format(name="evil.pth")
    good_sha = hashlib.sha256(resnet_tiny_file).hexdigest()
    url_card(cards, "evil", "torchvision", "deeplabv3_resnet50", url, sha256=good_sha)
    with pytest.raises(IntegrityError, match="has sha256"):
        load_model("evil")
    # even with a matching hash, the pickle is read with weights_only=True and refused
    evil_sha = hashlib.sha256(evil).hexdigest()
    url_card(cards, "evil", "torchvision", "deeplabv3_resnet50", url, sha256=evil_sha)
    with pytest.raises(UnsafeFileError, match="unpickling it could run arbitrary code"):
        load_model("evil")
    assert not marker.exists()


def test_cached_url_file_damaged_on_disk_is_detected(server, cards, resnet_tiny_file) -> None:
    name = tv_name("resnet_tiny", resnet_tiny_file)
    server.add_url(f"models/{name}", resnet_tiny_file)
    url = TV_URL.format(name=name)
    url_card(cards, "tiny-imagenet", "torchvision-backbone", "deeplabv3_tiny", url)
    load_backbone_weights("tiny-imagenet")
    cached = url_cache_path(url)
    cached.write_bytes(cached.read_bytes()[:-100])
    with pytest.raises(IntegrityError, match=r"cached .* its name says"):
        load_backbone_weights("tiny-imagenet")
    assert not cached.exists()
    assert len(load_backbone_weights("tiny-imagenet")) > 0  # fetched afresh
