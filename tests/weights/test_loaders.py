"""deeplabcli.weights.loaders: local weight files and directories → models, one per format."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from deeplabcli.errors import ModelLoadError
from deeplabcli.models import DeepLabV3, build_model
from deeplabcli.weights.checkpoint import METADATA_CONFIG_KEY, save_checkpoint
from deeplabcli.weights.loaders import (
    TRANSFORMERS_WEIGHTS,
    load_directory,
    load_path,
    load_safetensors_file,
    read_json,
)

HINT = "Run `deeplab models` to list model names"


@pytest.fixture(scope="module")
def tiny() -> DeepLabV3:
    torch.manual_seed(0)
    return build_model("deeplabv3_tiny", num_classes=3, class_names=("bg", "cat", "dog")).eval()


@pytest.fixture
def checkpoint(tmp_path: Path, tiny: DeepLabV3) -> Path:
    return save_checkpoint(tiny, tmp_path / "ckpt", provenance={"source": "unit-test"})


def assert_same_model(model: DeepLabV3, reference: DeepLabV3) -> None:
    assert isinstance(model, DeepLabV3)
    assert model.config == reference.config
    ours, theirs = model.state_dict(), reference.state_dict()
    assert list(ours) == list(theirs)
    for key, value in theirs.items():
        assert torch.equal(ours[key], value), key


def bare_state_dict(model: DeepLabV3) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


# ---------------------------------------------------------------------- our formats
def test_checkpoint_directory(checkpoint: Path, tiny: DeepLabV3) -> None:
    model = load_path(checkpoint)
    assert_same_model(model, tiny)
    assert model.provenance == {"source": "unit-test"}
    assert model.config.class_names == ("bg", "cat", "dog")


def test_safetensors_file_alone_carries_its_config(checkpoint: Path, tiny, tmp_path) -> None:
    lone = tmp_path / "elsewhere" / "weights.safetensors"
    lone.parent.mkdir()
    shutil.copy(checkpoint / "model.safetensors", lone)  # no config.json beside it
    model = load_path(lone)
    assert_same_model(model, tiny)
    assert model.provenance == {"source": "unit-test"}
    assert_same_model(load_safetensors_file(lone), tiny)


def test_suffixes_match_in_any_case(checkpoint: Path, tiny, tmp_path) -> None:
    upper = tmp_path / "WEIGHTS.SAFETENSORS"
    shutil.copy(checkpoint / "model.safetensors", upper)
    assert_same_model(load_path(upper), tiny)


def test_safetensors_with_a_broken_embedded_config(tmp_path: Path, tiny) -> None:
    path = tmp_path / "broken.safetensors"
    save_file(bare_state_dict(tiny), str(path), metadata={METADATA_CONFIG_KEY: "{not json"})
    with pytest.raises(ModelLoadError) as caught:
        load_path(path)
    assert str(caught.value) == (
        f"{path} is not a deeplabcli checkpoint config. Pass a checkpoint written by deeplabcli, "
        "or convert the model with `deeplab convert`."
    )


def test_bare_state_dict_of_ours_without_config_json_is_refused(tmp_path: Path, tiny) -> None:
    path = tmp_path / "weights.pth"
    torch.save(bare_state_dict(tiny), path)
    with pytest.raises(ModelLoadError) as caught:
        load_path(path)
    assert str(caught.value) == (
        f"{path} holds deeplabcli weights without their config.json. "
        "Load the whole checkpoint directory instead."
    )


def test_safetensors_without_metadata_or_config_json_is_refused(tmp_path: Path, tiny) -> None:
    path = tmp_path / "plain.safetensors"
    save_file(bare_state_dict(tiny), str(path))
    with pytest.raises(ModelLoadError) as caught:
        load_path(path)
    assert str(caught.value) == (
        f"{path} holds deeplabcli weights without their config.json. "
        "Load the whole checkpoint directory instead."
    )


def test_bare_state_dict_next_to_its_config_json_loads(checkpoint: Path, tiny, tmp_path) -> None:
    folder = tmp_path / "pair"
    folder.mkdir()
    shutil.copy(checkpoint / "config.json", folder / "config.json")
    torch.save({"state_dict": bare_state_dict(tiny)}, folder / "weights.pt")  # wrapped: unwrapped
    model = load_path(folder / "weights.pt")
    assert_same_model(model, tiny)
    assert model.provenance == {"source": "unit-test"}


# ---------------------------------------------------------------------- refusals
def test_unknown_layout_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.pth"
    torch.save({"encoder.weight": torch.zeros(2, 2)}, path)
    with pytest.raises(ModelLoadError) as caught:
        load_path(path)
    assert str(caught.value) == (
        f"{path} is not a known layout (torchvision DeepLabv3, transformers MobileNetV2 or "
        "deeplabcli). Convert it to a deeplabcli checkpoint first."
    )


def test_imagenet_resnet_is_not_a_segmentation_model(tmp_path: Path) -> None:
    path = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(1), "layer3.0.conv1.weight": torch.zeros(1)}, path)
    with pytest.raises(ModelLoadError) as caught:
        load_path(path)
    assert str(caught.value) == (
        f"{path} is an ImageNet ResNet backbone, not a segmentation model. Use it to initialise "
        "training (load_backbone_weights), or pass a segmentation model."
    )


def test_transformers_weights_without_config_json(tmp_path: Path) -> None:
    path = tmp_path / "hf.bin"
    torch.save({"mobilenet_v2.conv_stem.weight": torch.zeros(1),
                "segmentation_head.classifier.weight": torch.zeros(1)}, path)  # fmt: skip
    with pytest.raises(ModelLoadError) as caught:
        load_path(path)
    assert str(caught.value) == (
        f"{path} holds transformers weights without their config.json. "
        "Put the transformers config.json next to it."
    )


@pytest.mark.parametrize("name", ["notes.txt", "model.onnx", "weights"])
def test_a_file_that_is_not_a_model_file(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(b"\x00\x01")
    with pytest.raises(ModelLoadError) as caught:
        load_path(path)
    assert str(caught.value) == (
        f"{path} is not a model file (expected a checkpoint directory or a .safetensors, .pth, "
        f".pt or .tflite file). {HINT}."
    )


def test_a_damaged_pickle_is_not_a_weights_file(tmp_path: Path) -> None:
    path = tmp_path / "junk.pth"
    path.write_text("this is not a pickle")
    with pytest.raises(ModelLoadError) as caught:
        load_path(path)
    assert str(caught.value) == (
        f"{path} is not a readable PyTorch weights file. Check the path or re-download it."
    )


def test_directory_without_config_json(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError) as caught:
        load_path(tmp_path / "empty")
    assert str(caught.value) == (
        f"{tmp_path / 'empty'} has no config.json, so it is neither a deeplabcli checkpoint nor "
        "a transformers model directory. Pass a checkpoint directory or a weights file; "
        "run `deeplab models` to list model names."
    )


def test_directory_with_a_foreign_config_json(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["Something"]}))
    with pytest.raises(ModelLoadError) as caught:
        load_directory(tmp_path)
    assert str(caught.value) == (
        f"{tmp_path / 'config.json'} is neither a deeplabcli checkpoint config nor a "
        "transformers config. Pass a checkpoint directory; run `deeplab models` to list model "
        "names."
    )


def test_transformers_directory_without_weights(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "mobilenet_v2"}))
    assert TRANSFORMERS_WEIGHTS == ("model.safetensors", "pytorch_model.bin")
    with pytest.raises(ModelLoadError) as caught:
        load_path(tmp_path)
    assert str(caught.value) == (
        f"{tmp_path} has a transformers config but no model.safetensors or pytorch_model.bin. "
        "Copy the weights file next to config.json."
    )


def test_transformers_directory_of_another_model_type(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "segformer"}))
    torch.save({"x": torch.zeros(1)}, tmp_path / "pytorch_model.bin")
    with pytest.raises(ModelLoadError) as caught:
        load_path(tmp_path)
    assert str(caught.value) == (
        f"{tmp_path} is a transformers 'segformer' model; only MobileNetV2 segmentation models "
        f"(model_type 'mobilenet_v2') convert. {HINT}."
    )


def test_checkpoint_directory_with_a_broken_config_json(checkpoint: Path) -> None:
    (checkpoint / "config.json").write_text('{"format": "deeplabcli", ')
    with pytest.raises(ModelLoadError) as caught:
        load_path(checkpoint)
    message = str(caught.value)
    assert message.startswith(f"{checkpoint / 'config.json'} is not valid JSON (")
    assert message.endswith("). Check the file.") and "\n" not in message


# ---------------------------------------------------------------------- read_json
def test_read_json_parses_valid_json(tmp_path: Path) -> None:
    path = tmp_path / "ok.json"
    path.write_text('{"a": [1, 2], "b": null}', encoding="utf-8")
    assert read_json(path) == {"a": [1, 2], "b": None}


@pytest.mark.parametrize("text", ["{broken", "", '{"a": 1,}', "[1, 2"])
def test_read_json_on_broken_json(tmp_path: Path, text: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(text, encoding="utf-8")
    try:
        json.loads(text)
    except json.JSONDecodeError as error:
        reason = str(error)
    with pytest.raises(ModelLoadError) as caught:
        read_json(path)
    assert str(caught.value) == f"{path} is not valid JSON ({reason}). Check the file."


def test_read_json_on_a_missing_or_undecodable_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.json"
    with pytest.raises(ModelLoadError) as caught:
        read_json(missing)
    assert str(caught.value) == (
        f"{missing} is not valid JSON ([Errno 2] No such file or directory: '{missing}'). "
        "Check the file."
    )
    latin = tmp_path / "latin.json"
    latin.write_bytes(b'{"name": "caf\xe9"}')
    with pytest.raises(ModelLoadError, match=r"latin\.json is not valid JSON \('utf-8' codec"):
        read_json(latin)
