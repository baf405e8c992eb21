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
from deeplabcli.errors import OutputWriteError
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
    for text in ("deeplabv3-mobilenetv2-voc-8bit *", "deeplabv3-resnet101-voc", "resnet50-imagenet",
                 "hf:google/deeplabv3_mobilenet_v2_1.0_513", "66.4 mIoU", "download.pytorch.org"):  # fmt: skip
        assert text in result.stderr, text

    listed = json.loads(run("models", "--json").stdout)
    by_name = {row["name"]: row for row in listed}
    assert [row["name"] for row in listed if row["default"]] == ["deeplabv3-mobilenetv2-voc-8bit"]
    resnet101 = by_name["deeplabv3-resnet101-voc"]
    assert resnet101["metric"] == "67.4 mIoU (COCO val2017 (VOC labels))"
    assert resnet101["source"].endswith("deeplabv3_resnet101_coco-586e9e4e.pth")
    assert resnet101["num_classes"] == 21 and resnet101["cached"] is False


def test_names_are_never_cut_at_80_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    from deeplabcli.weights.cards import list_cards

    monkeypatch.setenv("COLUMNS", "80")
    result = run("models")
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert "…" not in result.stderr
    for card in list_cards():  # each name whole, on one line, in the first column
        assert any(line.startswith(f"│ {card.name} ") for line in lines), card.name
    assert any("deeplabv3-mobilenetv2-voc-8bit *" in line and "embedded" in line for line in lines)


def test_info_describes_a_card_without_downloading(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_download(*args, **kwargs):
        raise AssertionError("deeplab info must not download")

    monkeypatch.setattr("deeplabcli.weights.download.hub_download", no_download)
    monkeypatch.setattr("deeplabcli.weights.download.url_download", no_download)
    result = run("info", "deeplabv3-resnet101-voc")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert "architecture:           deeplabv3_resnet101" in lines
    assert "license:                BSD-3-Clause" in lines
    assert ("weights:                not downloaded (`deeplab download deeplabv3-resnet101-voc` "
            "fetches it)") in lines  # fmt: skip
    assert not any(line.startswith("parameters:") for line in lines)
    info = json.loads(run("info", "deeplabv3-mobilenetv2-voc", "--json").stdout)
    assert info["card"]["on_this_machine"] is False and info["parameters"] is None
    assert info["card"]["source"] == "google/deeplabv3_mobilenet_v2_1.0_513@main/pytorch_model.bin"

    embedded = run("info", "deeplabv3-mobilenetv2-voc-8bit")
    assert embedded.exit_code == 0, embedded.output
    lines = embedded.stdout.splitlines()
    for line in ("name:                   deeplabv3-mobilenetv2-voc-8bit (default)",
                 "weights:                embedded in deeplabcli",
                 "license:                Apache-2.0",
                 "output stride:          16",
                 "parameters:             2,097,013",
                 "  upstream_file:        deeplabv3_mnv2_pascal_quant.tflite",
                 "  publisher:            Google (Coral test data, "
                 "https://github.com/google-coral/test_data)"):  # fmt: skip
        assert line in lines, line
    assert sum(line.startswith("  file:") and line.endswith(("LICENSE", "NOTICE"))
               for line in lines) == 2  # fmt: skip


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


# ---------------------------------------------------------------------- a full disk (issue 13 §4)
def test_convert_on_a_full_disk_is_one_line_and_leaves_nothing(checkpoint, tmp_path, monkeypatch):
    """Simulated: safetensors reports ENOSPC with its own error type, the OS text inside."""
    import safetensors
    from safetensors import torch as safetensors_torch
    from support.hashes import tree_hashes

    def full(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"half")
        raise safetensors.SafetensorError(
            "Error while serializing: I/O error: No space left on device (os error 28)"
        )

    monkeypatch.setattr(safetensors_torch, "save_file", full)
    before = tree_hashes(tmp_path)
    out = tmp_path / "converted"
    result = run("convert", checkpoint, "-o", out)
    assert result.exit_code == 1
    assert result.stderr == (
        f"Error: no space left on device while writing {out}. Free space on that disk or choose "
        "another output location.\n"
    )
    assert tree_hashes(tmp_path) == before  # no temporary folder, the source untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny-ckpt"]


def test_convert_onto_a_real_full_disk(checkpoint: Path, tmp_path: Path) -> None:
    from support.disks import small_tmpfs

    with small_tmpfs(tmp_path / "disk", "512k") as disk:  # the weights alone are 1 MB
        out = disk / "converted"
        result = run("convert", checkpoint, "-o", out)
        assert result.exit_code == 1
        assert result.stderr == (
            f"Error: no space left on device while writing {out}. Free space on that disk or "
            "choose another output location.\n"
        )
        assert list(disk.iterdir()) == []


@pytest.mark.parametrize("below", ["converted", "deeper/converted"])
def test_convert_to_a_path_under_a_file_says_so_before_loading(
    checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, below: str
) -> None:
    from deeplabcli.weights import resolve

    blocker = tmp_path / "notes.txt"
    blocker.write_text("mine")
    loaded: list[str] = []
    monkeypatch.setattr(resolve, "load_model", lambda ref: loaded.append(ref))
    result = run("convert", checkpoint, "-o", blocker / below)
    assert (result.exit_code, result.stderr) == (1, (
        f"Error: cannot write to {blocker / below} (it is under the file {blocker}). "
        "Choose another -o.\n"
    ))  # fmt: skip
    assert loaded == [] and blocker.read_text() == "mine"
    monkeypatch.undo()
    with pytest.raises(OutputWriteError) as caught:  # the library call says the same
        save_checkpoint(build_model("deeplabv3_tiny"), blocker / below)
    assert str(caught.value) == (
        f"cannot write to {blocker / below} (it is under the file {blocker}). "
        "Choose another output directory."
    )


# ---------------------------------------------------------------------- exported files (issue 11)
def test_info_describes_an_exported_file_and_the_backends(checkpoint: Path, tmp_path) -> None:
    pytest.importorskip("onnxruntime")
    from deeplabcli.exporting.onnx import export_onnx
    from deeplabcli.runtimes.extras import backend_installed

    model = load_checkpoint(checkpoint)
    exported = export_onnx(model, tmp_path / "tiny.onnx", static_size=(64, 80))
    runtimes = [b for b in ("onnxruntime", "openvino") if backend_installed(b)]
    installed = ", ".join(["torch", *runtimes])
    result = run("info", exported)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    for line in ("architecture:           deeplabv3_tiny",
                 "output stride:          16",
                 "classes:                3: sky, road, car",
                 "resize:                 none (whole image)",
                 f"exported:               onnx, {exported}",
                 "int8:                   no (float32)",
                 "input size:             80×64 only",
                 "  export:",
                 "    format:             onnx",
                 "    opset:              17",
                 "backend (auto):         onnxruntime (float32) on this machine",
                 f"backends installed:     {installed}"):  # fmt: skip
        assert line in lines, line
    assert not any(line.startswith("parameters:") for line in lines)
    info = json.loads(run("info", exported, "--json").stdout)
    assert info["exported"] == {"path": str(exported), "format": "onnx", "int8": False,
                                "static_size": [64, 80]}  # fmt: skip
    assert info["provenance"]["export"]["output_stride"] == 16
    assert {k: v for k, v in info["backends"].items() if k != "cpu"} == {
        "auto": "onnxruntime", "precision": "float32", "installed": installed.split(", "),
    }  # fmt: skip
    assert set(info["backends"]["cpu"]) == {"model", "cores", "features"}
    card = json.loads(run("info", "deeplabv3-mobilenetv2-voc-8bit", "--json").stdout)
    assert (card["backends"]["auto"], card["backends"]["precision"]) == ("onnxruntime", "int8")
    assert any(line.startswith("cpu:") for line in lines)


def test_torch_only_commands_refuse_an_exported_file(checkpoint: Path, tmp_path) -> None:
    pytest.importorskip("onnxruntime")
    from deeplabcli.exporting.onnx import export_onnx

    exported = export_onnx(load_checkpoint(checkpoint), tmp_path / "tiny.onnx")
    result = run("convert", exported, "-o", tmp_path / "ckpt")
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        f"Error: {exported} is an exported model (ONNX or OpenVINO IR), with no torch weights "
        f"for this command. Run it with deeplab predict or deeplab eval (--model {exported}), "
        "describe it with `deeplab info`, or use the model it was exported from here."
    ]
    assert not (tmp_path / "ckpt").exists()
