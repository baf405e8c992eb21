"""deeplabcli.weights.resolve: model references → models, without any network.

The model cards come from a card folder written here (``DEEPLAB_CARDS_DIR``); Hub references
are only tried offline (``HF_HUB_OFFLINE=1``), and tests/conftest.py points ``HF_ENDPOINT`` at
a closed port besides.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from support.threads import one_thread  # noqa: F401 (autouse: applies to this module)

from deeplabcli.errors import (
    DeeplabError,
    DownloadError,
    ModelLoadError,
    OutputWriteError,
    UnknownModelError,
)
from deeplabcli.models import DeepLabV3, build_model
from deeplabcli.weights.checkpoint import save_checkpoint
from deeplabcli.weights.resolve import (
    convert_model,
    default_model_name,
    describe_model,
    load_model,
    parse_hub_ref,
)

CARDS = {
    "tiny-voc.toml": """
name = "tiny-voc"
description = "a test card"
default = true
format = "ours"
architecture = "deeplabv3_tiny"
backbone = "resnet_tiny"
license = "apache-2.0"

[source]
repo = "nobody/tiny-voc"
filename = "model.safetensors"
""",
    "tiny-imagenet.toml": """
name = "tiny-imagenet"
description = "a backbone card"
format = "torchvision-backbone"
architecture = "deeplabv3_tiny"
backbone = "resnet_tiny"
license = "apache-2.0"

[source]
url = "https://example.invalid/resnet_tiny.pth"
""",
}
TAIL = ("Run `deeplab models` to list the names, or pass a checkpoint directory, a weights file "
        "or a Hub repo (owner/name).")  # fmt: skip


@pytest.fixture(autouse=True)
def cards(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path_factory.mktemp("cards")
    for name, text in CARDS.items():
        (folder / name).write_text(text, encoding="utf-8")
    monkeypatch.setenv("DEEPLAB_CARDS_DIR", str(folder))
    return folder


@pytest.fixture(scope="module")
def tiny() -> DeepLabV3:
    torch.manual_seed(0)
    return build_model("deeplabv3_tiny", num_classes=3, class_names=("bg", "cat", "dog"))


@pytest.fixture
def checkpoint(tmp_path: Path, tiny: DeepLabV3) -> Path:
    return save_checkpoint(tiny, tmp_path / "ckpt", provenance={"source": "unit-test", "n": 1})


def assert_same_weights(model: torch.nn.Module, reference: torch.nn.Module) -> None:
    ours, theirs = model.state_dict(), reference.state_dict()
    assert list(ours) == list(theirs)
    for key, value in theirs.items():
        assert torch.equal(ours[key], value), key


# ---------------------------------------------------------------------- parse_hub_ref
@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("owner/name", ("owner/name", "main")),
        (
            "google/deeplabv3_mobilenet_v2_1.0_513",
            ("google/deeplabv3_mobilenet_v2_1.0_513", "main"),
        ),
        ("owner/name@v1.0", ("owner/name", "v1.0")),
        ("a/b@refs/pr/1", ("a/b", "refs/pr/1")),
        ("Org-1/model.x@0123abcd", ("Org-1/model.x", "0123abcd")),
    ],
)
def test_parse_hub_ref_good(ref: str, expected: tuple[str, str]) -> None:
    assert parse_hub_ref(ref) == expected


@pytest.mark.parametrize(
    "ref",
    ["no-slash", "a/b/c", "/abs/path", "./rel/x", "-x/y", "_x/y", "owner/", "/name", "a/b@",
     "a b/c", "a/b@rev with space", "", "a/b@x@y"],
)  # fmt: skip
def test_parse_hub_ref_bad(ref: str) -> None:
    assert parse_hub_ref(ref) is None


# ---------------------------------------------------------------------- local checkpoints
def test_load_model_on_a_checkpoint_directory(checkpoint: Path, tiny: DeepLabV3) -> None:
    tiny.train()
    model = load_model(checkpoint)
    assert isinstance(model, DeepLabV3) and not model.training
    assert model.config == tiny.config
    assert model.provenance == {"source": "unit-test", "n": 1}
    assert {p.device.type for p in model.parameters()} == {"cpu"}
    assert_same_weights(model, tiny)
    tiny.eval()
    x = torch.rand(1, 3, 33, 33)
    with torch.no_grad():
        torch.testing.assert_close(model(x)["out"], tiny(x)["out"])
    assert_same_weights(load_model(str(checkpoint)), tiny)  # a str works as well as a Path


def test_load_model_expands_the_home_folder(checkpoint: Path, tiny, monkeypatch) -> None:
    monkeypatch.setenv("HOME", str(checkpoint.parent))
    assert_same_weights(load_model("~/ckpt"), tiny)


def test_a_local_path_wins_over_a_card_of_the_same_name(checkpoint, tiny, monkeypatch) -> None:
    checkpoint.rename(checkpoint.parent / "tiny-voc")
    monkeypatch.chdir(checkpoint.parent)
    model = load_model("tiny-voc")  # the folder, not the card (which would need the Hub)
    assert_same_weights(model, tiny)
    assert model.provenance["source"] == "unit-test"


def test_load_model_on_a_lone_safetensors_file(checkpoint: Path, tiny, tmp_path) -> None:
    lone = tmp_path / "lone.safetensors"
    lone.write_bytes((checkpoint / "model.safetensors").read_bytes())
    model = load_model(lone)
    assert model.config == tiny.config and not model.training
    assert_same_weights(model, tiny)


# ---------------------------------------------------------------------- describe_model
def test_describe_model(checkpoint: Path, tiny: DeepLabV3) -> None:
    info = describe_model(load_model(checkpoint))
    assert list(info) == [
        "architecture", "backbone", "output_stride", "head", "aspp_rates", "image_pooling",
        "aux_head", "num_classes", "classes", "preprocessing", "parameters", "provenance",
    ]  # fmt: skip
    assert info == {
        "architecture": "deeplabv3_tiny",
        "backbone": "resnet_tiny",
        "output_stride": 16,
        "head": "paper",
        "aspp_rates": [6, 12, 18],
        "image_pooling": True,
        "aux_head": False,
        "num_classes": 3,
        "classes": ["bg", "cat", "dog"],
        "preprocessing": {
            "mean": [0.485, 0.456, 0.406],
            "std": [0.229, 0.224, 0.225],
            "resize": "none",
            "size": None,
        },
        "parameters": sum(p.numel() for p in tiny.parameters()),
        "provenance": {"source": "unit-test", "n": 1},
    }
    assert json.loads(json.dumps(info)) == info


def test_describe_model_scales_aspp_rates_and_copies_provenance() -> None:
    model = build_model("deeplabv3_tiny", num_classes=2, output_stride=8, aux_head=True)
    info = describe_model(model)
    assert info["aspp_rates"] == [12, 24, 36]  # rates × 16 / OS
    assert (info["output_stride"], info["aux_head"], info["classes"]) == (
        8, True, ["class_0", "class_1"],
    )  # fmt: skip
    assert info["provenance"] == {}
    info["provenance"]["x"] = 1
    assert model.provenance == {}  # a copy, not the model's own dict
    mobile = describe_model(build_model("deeplabv3_mobilenetv2_tiny", num_classes=2))
    assert (mobile["head"], mobile["aspp_rates"], mobile["backbone"]) == (
        "mobile", [], "mobilenetv2",
    )  # fmt: skip
    assert mobile["preprocessing"]["mean"] == [0.5, 0.5, 0.5]


# ---------------------------------------------------------------------- bad references
def one_line_error(ref: str | None, error: type[DeeplabError]) -> str:
    with pytest.raises(error) as caught:
        load_model(ref)
    message = str(caught.value)
    assert isinstance(caught.value, DeeplabError) and "\n" not in message
    return message


def test_an_unknown_name_is_one_clear_error() -> None:
    assert one_line_error("zzz", UnknownModelError) == f"unknown model 'zzz'. {TAIL}"


def test_an_unknown_name_close_to_a_card_gets_a_suggestion() -> None:
    assert one_line_error("tiny-vco", UnknownModelError) == (
        f"unknown model 'tiny-vco'. Did you mean 'tiny-voc'? {TAIL}"
    )


@pytest.mark.parametrize(
    "ref",
    ["missing.pth", "weights.safetensors", "model.tflite", "config.json", "./nowhere",
     "~/nowhere", "a/b/c", "dir\\file", "/no/such/dir/"],
)  # fmt: skip
def test_a_missing_path_is_not_taken_for_a_name(ref: str) -> None:
    assert one_line_error(ref, ModelLoadError) == (
        f"{ref} does not exist. Check the path, or run `deeplab models` for model names."
    )


def test_a_hub_reference_is_tried_offline_only(monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    message = one_line_error("nobody/nothing@v2", DownloadError)
    assert message.startswith(
        "cannot get nobody/nothing@v2: config.json of Hub repo nobody/nothing@v2 is not cached "
        "and offline mode is on (HF_HUB_OFFLINE). "
    )


def test_no_reference_means_the_default_card(monkeypatch) -> None:
    assert default_model_name() == "tiny-voc"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    message = one_line_error(None, DownloadError)
    assert message.startswith(
        "cannot get model 'tiny-voc': config.json of Hub repo nobody/tiny-voc@main is not "
        "cached and offline mode is on (HF_HUB_OFFLINE). "
    )


def test_a_backbone_card_is_not_a_segmentation_model() -> None:
    assert one_line_error("tiny-imagenet", ModelLoadError) == (
        "'tiny-imagenet' is an ImageNet backbone for training, not a segmentation model. Use it "
        "as training initialisation; run `deeplab models` to list model names to pick a model."
    )


# ---------------------------------------------------------------------- convert_model
def test_convert_model_writes_a_checkpoint_and_refuses_to_overwrite(checkpoint, tiny, tmp_path):
    out = convert_model(checkpoint, tmp_path / "copy")
    assert out == tmp_path / "copy"
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    copied = load_model(out)
    assert_same_weights(copied, tiny)
    assert copied.provenance == {"source": "unit-test", "n": 1}
    with pytest.raises(OutputWriteError) as caught:
        convert_model(checkpoint, out)
    assert str(caught.value) == (
        f"{out} already exists. Pass --overwrite to replace it, or choose another -o."
    )
    assert convert_model(checkpoint, out, overwrite=True) == out


# ---------------------------------------------------------------------------- moved from the Hub tests
DEFAULT_REPO = "google/deeplabv3_mobilenet_v2_1.0_513"


@pytest.mark.parametrize(
    ("ref", "error", "expected"),
    [
        ("nonexistent", UnknownModelError, "unknown model 'nonexistent'. Run `deeplab models`"),
        ("deeplabv3-resnet50-vco", UnknownModelError, "Did you mean 'deeplabv3-resnet50-voc'?"),
        ("missing.pth", ModelLoadError, "missing.pth does not exist. Check the path"),
        ("./some/dir/", ModelLoadError, "does not exist"),
    ],
)
def test_bad_references(ref: str, error: type, expected: str, monkeypatch) -> None:
    monkeypatch.delenv("DEEPLAB_CARDS_DIR")  # the shipped cards: their names are suggested
    with pytest.raises(error, match=expected.replace("?", r"\?").replace("(", r"\(")):
        load_model(ref)


def test_hub_reference_syntax() -> None:
    assert parse_hub_ref("google/deeplabv3_mobilenet_v2_1.0_513") == (DEFAULT_REPO, "main")
    assert parse_hub_ref("a/b@refs/pr/1") == ("a/b", "refs/pr/1")
    assert parse_hub_ref("no-slash") is None
    assert parse_hub_ref("a/b/c") is None
