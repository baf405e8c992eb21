"""A local Hub and URL mirror with model cards and published files, for the weights tests."""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path

import pytest
import torch

from deeplabcli import DeepLabV3, build_model
from deeplabcli.weights.checkpoint import save_checkpoint
from support.fakehub import FakeServer

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


def url_card(cards, name: str, fmt: str, arch: str, url: str, *, extra: str = "", sha256=None):
    body = f'format = "{fmt}"\narchitecture = "{arch}"\n{extra}\n[source]\nurl = "{url}"\n'
    return cards(name, body + (f'sha256 = "{sha256}"\n' if sha256 else ""))


def bytes_of(state_dict) -> bytes:
    buffer = io.BytesIO()
    torch.save(state_dict, buffer)
    return buffer.getvalue()


def tv_name(stem: str, data: bytes) -> str:
    """torchvision's convention: the file name carries a sha256 prefix."""
    return f"{stem}-{hashlib.sha256(data).hexdigest()[:8]}.pth"


def logits_of(model: torch.nn.Module, size: int = 33) -> torch.Tensor:
    torch.manual_seed(3)
    with torch.no_grad():
        return model(torch.randn(1, 3, size, size))["out"]


def our_checkpoint_files(tmp_path: Path) -> tuple[DeepLabV3, dict[str, bytes]]:
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


class Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def evil_pickle(marker: Path) -> bytes:
    return bytes_of({"conv1.weight": torch.zeros(1), "payload": Exploit(marker)})
