"""Weight files read safely: pickles, torchvision and transformers layouts, TFLite files."""

from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path

import pytest
import torch
from support.hub import (
    Exploit,
    evil_pickle,
)

from deeplabcli import DeepLabV3, load_backbone_weights, load_model
from deeplabcli.errors import (
    UnsafeFileError,
)


# ---------------------------------------------------------------------------- local files
@pytest.mark.parametrize("container", ["torch.save", "plain pickle"])
def test_malicious_pickle_is_refused(tmp_path: Path, container: str) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "weights.pth"
    if container == "torch.save":
        path.write_bytes(evil_pickle(marker))
    else:
        path.write_bytes(pickle.dumps({"payload": Exploit(marker)}))
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
