"""`deeplab models | download | convert | info` through click's CliRunner."""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from support.fakehub import FakeServer

from deeplabcli import build_model, load_checkpoint, save_checkpoint
from deeplabcli.cli import main
from deeplabcli.models.resnet import DilatedResNet
from deeplabcli.weights.checkpoint import CONFIG_NAME, WEIGHTS_NAME


def run(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    model = build_model("deeplabv3_tiny", num_classes=3, class_names=("sky", "road", "car"))
    return save_checkpoint(model, tmp_path / "tiny-ckpt")


@pytest.fixture
def url_card(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A private card registry holding one torchvision-backbone URL card, served locally."""
    torch.manual_seed(0)
    buffer = io.BytesIO()
    torch.save(DilatedResNet("resnet_tiny", output_stride=32).state_dict(), buffer)
    data = buffer.getvalue()
    name = f"resnet_tiny-{hashlib.sha256(data).hexdigest()[:8]}.pth"
    cards = tmp_path / "cards"
    cards.mkdir()
    (cards / "tiny-imagenet.toml").write_text(
        'name = "tiny-imagenet"\nlicense = "test"\nformat = "torchvision-backbone"\n'
        'architecture = "deeplabv3_tiny"\nbackbone = "resnet_tiny"\ndefault = true\n'
        f'[source]\nurl = "https://download.pytorch.org/models/{name}"\n'
    )
    monkeypatch.setenv("DEEPLAB_CARDS_DIR", str(cards))
    with FakeServer() as server:
        server.add_url(f"models/{name}", data)
        monkeypatch.setenv("DEEPLAB_URL_MIRROR", f"{server.endpoint}/files")
        yield name


def test_models_table_and_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    result = run("models")
    assert result.exit_code == 0, result.output
    assert result.stdout == ""  # the table is a side display on stderr
    for text in ("deeplabv3-mobilenetv2-voc *", "deeplabv3-resnet101-voc", "resnet50-imagenet",
                 "hf:google/deeplabv3_mobilenet_v2_1.0_513", "66.4 mIoU", "download.pytorch.org"):  # fmt: skip
        assert text in result.stderr, text

    listed = json.loads(run("models", "--json").stdout)
    by_name = {row["name"]: row for row in listed}
    assert [row["name"] for row in listed if row["default"]] == ["deeplabv3-mobilenetv2-voc"]
    resnet101 = by_name["deeplabv3-resnet101-voc"]
    assert resnet101["metric"] == "67.4 mIoU (COCO val2017 (VOC labels))"
    assert resnet101["source"].endswith("deeplabv3_resnet101_coco-586e9e4e.pth")
    assert resnet101["num_classes"] == 21 and resnet101["cached"] is False


def test_download_then_listed_as_cached(url_card: str, monkeypatch: pytest.MonkeyPatch) -> None:
    before = json.loads(run("models", "--json").stdout)
    assert [row["cached"] for row in before] == [False]
    result = run("download", "tiny-imagenet", "--quiet")
    assert result.exit_code == 0, result.output
    path = Path(result.stdout.strip())
    assert path.is_file() and path.name == url_card
    assert path.is_relative_to(Path(os.environ["HF_HOME"]) / "deeplabcli" / "urls")
    after = json.loads(run("models", "--json").stdout)
    assert [row["cached"] for row in after] == [True]
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # cached: works offline too
    assert run("download", "tiny-imagenet", "-q").exit_code == 0


def test_download_hub_repo_for_offline_use(tmp_path: Path, monkeypatch) -> None:
    torch.manual_seed(0)
    model = build_model("deeplabv3_tiny", num_classes=2)
    published = save_checkpoint(model, tmp_path / "published")
    with FakeServer() as server:
        server.add_repo(
            "someone/tiny-deeplab", {p.name: p.read_bytes() for p in published.iterdir()}
        )
        monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
        result = run("download", "someone/tiny-deeplab", "-q")
    assert result.exit_code == 0, result.output
    config, weights = (Path(line) for line in result.stdout.splitlines())
    assert (config.name, weights.name) == (CONFIG_NAME, WEIGHTS_NAME)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    info = json.loads(run("info", "someone/tiny-deeplab", "--json").stdout)
    assert info["provenance"]["source"] == "hf://someone/tiny-deeplab@main"
    assert info["num_classes"] == 2


def test_download_unknown_name() -> None:
    result = run("download", "deeplabv3-resnet50")
    assert result.exit_code == 1
    assert result.stderr == (
        "Error: unknown model 'deeplabv3-resnet50'. Did you mean 'deeplabv3-resnet50-voc'? "
        "Run `deeplab models` to list the names, or pass a checkpoint directory, a weights file "
        "or a Hub repo (owner/name).\n"
    )


def test_convert_writes_a_checkpoint_and_refuses_to_overwrite(
    checkpoint: Path, tmp_path: Path
) -> None:
    source = tmp_path / "lone.safetensors"  # a lone weights file: its config is in the metadata
    source.write_bytes((checkpoint / WEIGHTS_NAME).read_bytes())
    out = tmp_path / "converted"
    result = run("convert", source, "-o", out)
    assert result.exit_code == 0, result.output
    assert result.stdout == f"{out}\n"
    assert sorted(p.name for p in out.iterdir()) == [CONFIG_NAME, WEIGHTS_NAME]
    assert load_checkpoint(out).config == load_checkpoint(checkpoint).config

    again = run("convert", source, "-o", out)
    assert again.exit_code == 1
    assert again.stderr == (
        f"Error: {out} already exists. Pass --overwrite to replace it, or choose another -o.\n"
    )
    assert run("convert", source, "-o", out, "--overwrite").exit_code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "converted",
        "lone.safetensors",
        "tiny-ckpt",
    ]


def test_convert_tflite_then_info(tflite_float_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "google-mnv2"
    assert run("convert", tflite_float_path, "-o", out).exit_code == 0
    info = json.loads(run("info", out, "--json").stdout)
    assert info["backbone"] == "mobilenetv2" and info["num_classes"] == 21
    assert info["provenance"]["converted_from"] == "tflite"
    assert info["provenance"]["source"] == str(tflite_float_path.resolve())


def test_info_text_and_json(checkpoint: Path) -> None:
    result = run("info", checkpoint)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert "architecture:           deeplabv3_tiny" in lines
    assert "output stride:          16" in lines
    assert "head:                   paper, ASPP rates 6, 12, 18, image pooling" in lines
    assert "classes:                3: sky, road, car" in lines
    assert "resize:                 none (whole image)" in lines
    model = load_checkpoint(checkpoint)
    parameters = sum(p.numel() for p in model.parameters())
    assert f"parameters:             {parameters:,}" in lines

    info = json.loads(run("info", checkpoint, "--json").stdout)
    assert info["parameters"] == parameters
    assert info["classes"] == ["sky", "road", "car"]
    assert info["preprocessing"]["mean"] == [0.485, 0.456, 0.406]


def test_bad_references_are_one_line_errors(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("not a model\n")
    fake_pth = tmp_path / "weights.pth"
    fake_pth.write_text("not a model either\n")
    empty = tmp_path / "empty-dir"
    empty.mkdir()
    cases = {
        "nonexistent": "Error: unknown model 'nonexistent'. Run `deeplab models` to list the "
        "names, or pass a checkpoint directory, a weights file or a Hub repo (owner/name).",
        notes: f"Error: {notes} is not a model file (expected a checkpoint directory or a "
        ".safetensors, .pth, .pt or .tflite file). Run `deeplab models` to list model names.",
        fake_pth: f"Error: {fake_pth} is not a readable PyTorch weights file. Check the path or "
        "re-download it.",
        empty: f"Error: {empty} has no config.json, so it is neither a deeplabcli checkpoint nor "
        "a transformers model directory. Pass a checkpoint directory or a weights file; run "
        "`deeplab models` to list model names.",
        tmp_path / "gone.pth": f"Error: {tmp_path / 'gone.pth'} does not exist. Check the path, "
        "or run `deeplab models` for model names.",
    }
    for ref, line in cases.items():
        result = run("info", ref)
        assert result.exit_code == 1, ref
        assert result.stderr == line + "\n"
        assert result.stdout == ""


def test_malicious_pickle_is_refused_on_the_command_line(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    evil = tmp_path / "evil.pth"
    torch.save({"weight": torch.zeros(1), "payload": Exploit()}, evil)
    result = run("info", evil)
    assert result.exit_code == 1
    assert result.stderr.startswith(f"Error: {evil} contains Python objects other than tensors")
    assert result.stderr.count("\n") == 1
    assert not marker.exists()
