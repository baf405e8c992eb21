"""Model references, model cards and downloads, against a local fake Hub / URL server."""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import re
from pathlib import Path

import pytest
import torch
from fakehub import FakeServer

from deeplabcli import VOC_CLASSES, DeepLabV3, build_model, load_backbone_weights, load_model
from deeplabcli.cards import cards_dir, default_card, get_card, list_cards
from deeplabcli.checkpoint import save_checkpoint
from deeplabcli.errors import (
    DownloadError,
    IntegrityError,
    ModelLoadError,
    UnknownModelError,
    UnsafeFileError,
)
from deeplabcli.hub import url_cache_path
from deeplabcli.models.resnet import DilatedResNet
from deeplabcli.resolve import card_is_cached, parse_hub_ref

DEFAULT_REPO = "google/deeplabv3_mobilenet_v2_1.0_513"
TV_URL = "https://download.pytorch.org/models/{name}"


@pytest.fixture
def server(monkeypatch):
    with FakeServer() as fake:
        monkeypatch.setenv("HF_ENDPOINT", fake.endpoint)
        monkeypatch.setenv("DEEPLAB_URL_MIRROR", f"{fake.endpoint}/files")
        yield fake


@pytest.fixture
def cards(tmp_path, monkeypatch):
    """Write model cards into a private registry: ``cards(name=..., toml=...)``."""
    directory = tmp_path / "cards"
    directory.mkdir()
    monkeypatch.setenv("DEEPLAB_CARDS_DIR", str(directory))

    def write(name: str, body: str) -> str:
        (directory / f"{name}.toml").write_text(f'name = "{name}"\nlicense = "test"\n{body}')
        return name

    return write


def _url_card(cards, name: str, fmt: str, arch: str, url: str, *, extra: str = "", sha256=None):
    body = f'format = "{fmt}"\narchitecture = "{arch}"\n{extra}\n[source]\nurl = "{url}"\n'
    return cards(name, body + (f'sha256 = "{sha256}"\n' if sha256 else ""))


def _bytes_of(state_dict) -> bytes:
    buffer = io.BytesIO()
    torch.save(state_dict, buffer)
    return buffer.getvalue()


def _tv_name(stem: str, data: bytes) -> str:
    """torchvision's convention: the file name carries a sha256 prefix."""
    return f"{stem}-{hashlib.sha256(data).hexdigest()[:8]}.pth"


def _logits(model: torch.nn.Module, size: int = 33) -> torch.Tensor:
    torch.manual_seed(3)
    with torch.no_grad():
        return model(torch.randn(1, 3, size, size))["out"]


def _our_checkpoint_files(tmp_path: Path) -> tuple[DeepLabV3, dict[str, bytes]]:
    torch.manual_seed(0)
    model = build_model("deeplabv3_tiny", num_classes=3).eval()
    out = save_checkpoint(model, tmp_path / "published")
    return model, {p.name: p.read_bytes() for p in out.iterdir()}


@pytest.fixture(scope="module")
def transformers_model():
    """A small random transformers MobileNetV2 segmentation model (21 classes) and its files."""
    transformers = pytest.importorskip("transformers")
    config = transformers.MobileNetV2Config(
        depth_multiplier=0.25, output_stride=8, tf_padding=True, num_labels=21,
        layer_norm_eps=0.001, hidden_act="relu6", finegrained_output=True,
    )  # fmt: skip
    torch.manual_seed(0)
    model = transformers.MobileNetV2ForSemanticSegmentation(config).eval()
    config_dict = json.loads(config.to_json_string())
    state_dict = {k: v.clone() for k, v in model.state_dict().items()}
    return config_dict, state_dict


# ---------------------------------------------------------------------------- the default model
def test_default_card_downloads_verifies_caches_and_loads_offline(
    server, transformers_model, monkeypatch
) -> None:
    from deeplabcli.convert.transformers import from_transformers

    config_dict, state_dict = transformers_model
    server.add_repo(
        DEFAULT_REPO,
        {
            "config.json": json.dumps(config_dict).encode(),
            "pytorch_model.bin": _bytes_of(state_dict),
        },
    )
    card = default_card()
    assert card.name == "deeplabv3-mobilenetv2-voc" and not card_is_cached(card)

    model = load_model()  # no reference: the default card
    reference = _logits(from_transformers(dict(state_dict), dict(config_dict)).eval())
    torch.testing.assert_close(_logits(model), reference, rtol=0, atol=0)
    assert model.config.class_names == VOC_CLASSES
    assert model.config.preprocessing == card.preprocessing
    assert model.provenance["source"] == card.name
    assert model.provenance["converted_from"] == "transformers"
    assert model.provenance["sha256"] == hashlib.sha256(_bytes_of(state_dict)).hexdigest()
    assert card_is_cached(card)
    assert ("GET", f"/{DEFAULT_REPO}/resolve/main/pytorch_model.bin") in server.requests
    assert not any("xet" in path.lower() for _, path in server.requests)  # plain HTTP only

    server.stop()  # server gone: the cache answers, first without and then with offline mode
    torch.testing.assert_close(_logits(load_model(card.name)), reference, rtol=0, atol=0)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    torch.testing.assert_close(_logits(load_model(card.name)), reference, rtol=0, atol=0)


def test_default_card_corrupted_download_is_rejected_and_removed(server) -> None:
    weights = _bytes_of({"mobilenet_v2.conv_stem.weight": torch.ones(8, 3, 3, 3)})
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
    assert not card_is_cached(default_card())


def test_offline_without_cache_says_how_to_proceed(monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DownloadError) as error:
        load_model("deeplabv3-mobilenetv2-voc")
    message = str(error.value)
    assert message.startswith("cannot get model 'deeplabv3-mobilenetv2-voc': config.json of Hub")
    assert f"repo {DEFAULT_REPO}@main is not cached and offline mode is on" in message
    for hint in ("HF_ENDPOINT", "DEEPLAB_URL_MIRROR", "`deeplab download NAME`", "--model PATH"):
        assert hint in message
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
    model, files = _our_checkpoint_files(tmp_path)
    commit = server.add_repo("someone/tiny-deeplab", files)
    for ref in ("someone/tiny-deeplab", f"someone/tiny-deeplab@{commit}"):
        loaded = load_model(ref)
        assert loaded.config == model.config
        assert loaded.provenance["revision"] == commit
        torch.testing.assert_close(_logits(loaded), _logits(model), rtol=0, atol=0)
    with pytest.raises(DownloadError, match="has no revision 'v9'"):
        load_model("someone/tiny-deeplab@v9")
    with pytest.raises(DownloadError, match="Hub repo nobody/nothing was not found"):
        load_model("nobody/nothing")


def test_corrupted_hub_file_is_rejected_then_redownloaded(server, tmp_path) -> None:
    model, files = _our_checkpoint_files(tmp_path)
    server.add_repo("someone/tiny-deeplab", files)
    server.corrupt.add("someone/tiny-deeplab/model.safetensors")
    with pytest.raises(
        IntegrityError, match=r"model\.safetensors of Hub repo someone/tiny-deeplab"
    ):
        load_model("someone/tiny-deeplab")
    server.corrupt.clear()
    torch.testing.assert_close(_logits(load_model("someone/tiny-deeplab")), _logits(model))


def test_hub_file_shorter_than_announced_is_rejected(server, tmp_path) -> None:
    _, files = _our_checkpoint_files(tmp_path)
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
            "pytorch_model.bin": _bytes_of(state_dict),
        },
    )
    legacy = load_model("someone/mnv2-seg-bin")
    torch.testing.assert_close(_logits(legacy), _logits(model), rtol=0, atol=0)


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
    from deeplabcli.convert import from_torchvision

    torch.manual_seed(0)
    tv = torchvision.models.segmentation.deeplabv3_resnet50(
        weights=None, weights_backbone=None, aux_loss=True, num_classes=21
    )
    data = _bytes_of(tv.state_dict())
    name = _tv_name("deeplabv3_resnet50_coco", data)
    server.add_url(f"models/{name}", data)
    url = TV_URL.format(name=name)
    _url_card(cards, "tv-r50", "torchvision", "deeplabv3_resnet50", url, extra='classes = "voc"')

    model = load_model("tv-r50")
    reference = _logits(from_torchvision(tv.state_dict(), "deeplabv3_resnet50").eval())
    torch.testing.assert_close(_logits(model), reference, rtol=0, atol=0)
    assert model.provenance["origin"] == url
    assert url_cache_path(url).is_file()
    assert url_cache_path(url).parts[-3:] == ("download.pytorch.org", "models", name)
    assert ("GET", f"/files/models/{name}") in server.requests

    server.stop()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    torch.testing.assert_close(_logits(load_model("tv-r50")), reference, rtol=0, atol=0)


@pytest.fixture
def resnet_tiny_file() -> bytes:
    """A torchvision-style ImageNet ResNet state dict (tiny), classifier included."""
    torch.manual_seed(0)
    backbone = DilatedResNet("resnet_tiny", output_stride=32)
    return _bytes_of({**backbone.state_dict(), "fc.weight": torch.randn(10, 256)})


def test_backbone_url_card_gives_training_weights(server, cards, resnet_tiny_file) -> None:
    name = _tv_name("resnet_tiny", resnet_tiny_file)
    server.add_url(f"models/{name}", resnet_tiny_file)
    _url_card(
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
    name = _tv_name("resnet_tiny", resnet_tiny_file)
    if fault == "wrong-prefix":
        name = "resnet_tiny-00000000.pth"
    server.add_url(f"models/{name}", resnet_tiny_file)
    if fault in ("corrupt", "truncate"):
        getattr(server, fault).add(f"/files/models/{name}")
    url = TV_URL.format(name=name)
    _url_card(cards, "tiny-imagenet", "torchvision-backbone", "deeplabv3_tiny", url)
    expected = "was truncated: got" if fault == "truncate" else "corrupted or truncated download"
    with pytest.raises(IntegrityError, match=expected):
        load_backbone_weights("tiny-imagenet")
    folder = url_cache_path(url).parent
    assert not folder.exists() or not list(folder.iterdir())  # nothing kept, no .incomplete


def test_card_sha256_is_checked_before_anything_is_unpickled(
    server, cards, tmp_path, resnet_tiny_file
) -> None:
    marker = tmp_path / "pwned"
    evil = _evil_pickle(marker)
    server.add_url("models/evil.pth", evil)
    url = TV_URL.format(name="evil.pth")
    good_sha = hashlib.sha256(resnet_tiny_file).hexdigest()
    _url_card(cards, "evil", "torchvision", "deeplabv3_resnet50", url, sha256=good_sha)
    with pytest.raises(IntegrityError, match="has sha256"):
        load_model("evil")
    # even with a matching hash, the pickle is read with weights_only=True and refused
    evil_sha = hashlib.sha256(evil).hexdigest()
    _url_card(cards, "evil", "torchvision", "deeplabv3_resnet50", url, sha256=evil_sha)
    with pytest.raises(UnsafeFileError, match="unpickling it could run arbitrary code"):
        load_model("evil")
    assert not marker.exists()


def test_cached_url_file_damaged_on_disk_is_detected(server, cards, resnet_tiny_file) -> None:
    name = _tv_name("resnet_tiny", resnet_tiny_file)
    server.add_url(f"models/{name}", resnet_tiny_file)
    url = TV_URL.format(name=name)
    _url_card(cards, "tiny-imagenet", "torchvision-backbone", "deeplabv3_tiny", url)
    load_backbone_weights("tiny-imagenet")
    cached = url_cache_path(url)
    cached.write_bytes(cached.read_bytes()[:-100])
    with pytest.raises(IntegrityError, match=r"cached .* its name says"):
        load_backbone_weights("tiny-imagenet")
    assert not cached.exists()
    assert len(load_backbone_weights("tiny-imagenet")) > 0  # fetched afresh


# ---------------------------------------------------------------------------- local files
class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _evil_pickle(marker: Path) -> bytes:
    return _bytes_of({"conv1.weight": torch.zeros(1), "payload": _Exploit(marker)})


@pytest.mark.parametrize("container", ["torch.save", "plain pickle"])
def test_malicious_pickle_is_refused(tmp_path: Path, container: str) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "weights.pth"
    if container == "torch.save":
        path.write_bytes(_evil_pickle(marker))
    else:
        path.write_bytes(pickle.dumps({"payload": _Exploit(marker)}))
    with pytest.raises(UnsafeFileError, match="contains Python objects other than tensors"):
        load_model(path)
    with pytest.raises(UnsafeFileError):
        load_backbone_weights(path)
    assert not marker.exists()


def test_torchvision_pth_is_detected_and_arch_inferred(tmp_path: Path) -> None:
    torchvision = pytest.importorskip("torchvision")
    tv = torchvision.models.segmentation.deeplabv3_resnet50(
        weights=None, weights_backbone=None, aux_loss=False, num_classes=4
    )
    path = tmp_path / "finetuned.pth"
    torch.save({"model": tv.state_dict(), "epoch": 3}, path)  # a training checkpoint wrapper
    model = load_model(path)
    assert (model.config.arch, model.config.num_classes) == ("deeplabv3_resnet50", 4)
    assert model.provenance["converted_from"] == "torchvision"


def test_transformers_directory(tmp_path: Path, transformers_model) -> None:
    from safetensors.torch import save_file

    config_dict, state_dict = transformers_model
    (tmp_path / "config.json").write_text(json.dumps(config_dict))
    save_file(state_dict, str(tmp_path / "model.safetensors"))
    model = load_model(tmp_path)
    assert model.config.num_classes == 21
    assert model.provenance["converted_from"] == "transformers"


def test_tflite_file_dispatches_to_the_converter(tflite_float_path: Path) -> None:
    model = load_model(tflite_float_path)
    assert isinstance(model, DeepLabV3)
    assert model.config.num_classes == 21
    assert model.provenance["converted_from"] == "tflite"
    assert model.provenance["sha256"] == hashlib.sha256(tflite_float_path.read_bytes()).hexdigest()


@pytest.mark.parametrize(
    ("ref", "error", "expected"),
    [
        ("nonexistent", UnknownModelError, "unknown model 'nonexistent'. Run `deeplab models`"),
        ("deeplabv3-resnet50-vco", UnknownModelError, "Did you mean 'deeplabv3-resnet50-voc'?"),
        ("missing.pth", ModelLoadError, "missing.pth does not exist. Check the path"),
        ("./some/dir/", ModelLoadError, "does not exist"),
    ],
)
def test_bad_references(ref: str, error: type, expected: str) -> None:
    with pytest.raises(error, match=expected.replace("?", r"\?").replace("(", r"\(")):
        load_model(ref)


def test_hub_reference_syntax() -> None:
    assert parse_hub_ref("google/deeplabv3_mobilenet_v2_1.0_513") == (DEFAULT_REPO, "main")
    assert parse_hub_ref("a/b@refs/pr/1") == ("a/b", "refs/pr/1")
    assert parse_hub_ref("no-slash") is None
    assert parse_hub_ref("a/b/c") is None


# ---------------------------------------------------------------------------- shipped cards
def test_shipped_cards_are_complete_and_consistent(monkeypatch) -> None:
    monkeypatch.delenv("DEEPLAB_CARDS_DIR", raising=False)
    shipped = list_cards()
    names = {c.name for c in shipped}
    assert {"deeplabv3-mobilenetv2-voc", "deeplabv3-resnet50-voc", "deeplabv3-resnet101-voc",
            "resnet50-imagenet", "resnet101-imagenet"} <= names  # fmt: skip
    assert [c.name for c in shipped if c.default] == ["deeplabv3-mobilenetv2-voc"]
    assert cards_dir().is_dir()
    assert get_card("deeplabv3-mobilenetv2-voc").repo == DEFAULT_REPO
    for card in shipped:
        assert card.license and card.metric and card.metric.source, card.name
        if card.url:  # torchvision URLs carry their sha256 prefix
            assert card.url.startswith("https://download.pytorch.org/models/"), card.name
            assert len(card.url.rsplit("-", 1)[1].split(".")[0]) == 8, card.name
    assert get_card("deeplabv3-resnet50-voc").metric.value == 66.4
    assert get_card("deeplabv3-resnet101-voc").metric.value == 67.4
