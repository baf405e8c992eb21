"""``deeplab export`` through the CLI: what it prints and writes, and every bad input as one
``Error:`` line, a non-zero exit and nothing written (the folder's files hashed before/after)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from support.export_data import tiny_model
from support.hashes import sha256, tree_hashes
from support.threads import one_thread  # noqa: F401 - applies to this module

from deeplabcli.cli import main
from deeplabcli.errors import ModelLoadError, extra_hint
from deeplabcli.runtimes.exported import load_exported
from deeplabcli.weights.checkpoint import save_checkpoint

pytest.importorskip("onnxruntime", reason="needs the onnx extra")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint folder of a random tiny ResNet DeepLab (OS 16, 21 classes)."""
    return save_checkpoint(tiny_model(), tmp_path_factory.mktemp("ckpt") / "tiny")


def deeplab(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def photos(folder: Path, count: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (32, 40, 3), dtype=np.uint8)).save(folder / f"{i}.jpg")
    return folder


def test_export_prints_what_it_wrote(tmp_path: Path, ckpt: Path) -> None:
    result = deeplab("export", ckpt, "-o", tmp_path / "m.onnx")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == f"{tmp_path / 'm.onnx'}\n"
    size = (tmp_path / "m.onnx").stat().st_size / 1e6
    assert result.stderr == (
        f"wrote {tmp_path / 'm.onnx'} ({size:.1f} MB): ONNX opset 17, float32; input pixels "
        "float32 (N, 3, H, W), dynamic N, H, W; output logits (N, 21, H, W); OS 16.\n"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]
    assert load_exported(tmp_path / "m.onnx").config.arch == "deeplabv3_tiny"


def test_options_reach_the_file(tmp_path: Path, ckpt: Path) -> None:
    out = tmp_path / "m.xml"
    result = deeplab("export", ckpt, "-o", out, "--os", "8", "--opset", "18",
                     "--static-size", "65,97", "-q")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert result.stdout == f"{out}\n" and result.stderr == ""  # -q: only the path
    info = load_exported(out).info
    assert info.config.output_stride == 8 and info.static_size == (65, 97)
    assert info.provenance["export"]["opset"] == 18
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.bin", "m.xml"]


def test_an_existing_output_is_kept_without_overwrite(tmp_path: Path, ckpt: Path) -> None:
    out = tmp_path / "m.onnx"
    out.write_bytes(b"the user's file")
    before = sha256(out)
    result = deeplab("export", ckpt, "-o", out)
    assert result.exit_code == 1
    assert result.stderr == (
        f"Error: {out} already exists. Pass --overwrite to replace it, or choose another -o.\n"
    )
    assert sha256(out) == before and sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]
    assert deeplab("export", ckpt, "-o", out, "--overwrite", "-q").exit_code == 0
    assert load_exported(out).config.arch == "deeplabv3_tiny"


def test_an_existing_bin_of_openvino_ir_is_kept_too(tmp_path: Path, ckpt: Path) -> None:
    (tmp_path / "m.bin").write_bytes(b"weights of another model")
    before = tree_hashes(tmp_path)
    result = deeplab("export", ckpt, "-o", tmp_path / "m.xml")
    assert result.exit_code == 1
    assert result.stderr == (
        f"Error: {tmp_path / 'm.bin'} already exists. Pass --overwrite to replace it, or "
        "choose another -o.\n"
    )
    assert tree_hashes(tmp_path) == before


def bad_cases(tmp_path: Path, ckpt: Path) -> list[tuple[list, str]]:
    """(arguments, the one error line) of each mistake; files made here exist beforehand."""
    notes = tmp_path / "notes.txt"
    notes.write_text("not a model")
    jpg = photos(tmp_path / "pics", 1) / "0.jpg"
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "sub" / "readme.md").write_text("no images here")
    out = tmp_path / "m.onnx"
    folder = tmp_path / "folder.onnx"
    (folder / "inside").mkdir(parents=True)
    (folder / "inside" / "keep.txt").write_text("a folder named like a model")
    hint = "Give a folder of images, or a data set split such as voc:trainaug with --data-root"
    not_a_model = (
        "is not a model file (expected a checkpoint directory or a .safetensors, .pth, .pt or "
        ".tflite file). Run `deeplab models` to list model names."
    )
    return [
        ([notes, "-o", out], f"{notes} {not_a_model}"),
        ([jpg, "-o", out], f"{jpg} {not_a_model}"),
        ([ckpt, "-o", notes / "m.onnx"],
         f"cannot write to {notes / 'm.onnx'} (it is under the file {notes}). Choose another -o."),
        ([ckpt, "-o", out, "--int8"],
         "--int8 needs calibration images. Pass --calibrate FOLDER (a folder of images) or "
         "--calibrate voc:trainaug with --data-root (a quantised .tflite file needs none)."),
        ([ckpt, "-o", out, "--calibrate", tmp_path / "pics"],
         "--calibrate is only used with --int8. Add --int8, or drop --calibrate."),
        ([ckpt, "-o", out, "--int8", "--calibrate", empty],
         f"--calibrate folder {empty} holds no image files (.jpg, .png, .bmp, ...). {hint}."),
        ([ckpt, "-o", out, "--int8", "--calibrate", tmp_path / "nothing"],
         f"--calibrate {tmp_path / 'nothing'} is neither a folder nor a split. {hint}."),
        ([ckpt, "-o", out, "--int8", "--calibrate", notes],
         f"--calibrate {notes} is a file, not a folder. {hint}."),
        ([ckpt, "-o", tmp_path / "m.bin"],
         f"-o {tmp_path / 'm.bin'} does not end in .onnx, the suffix of ONNX files. Name the "
         "output m.onnx (or pass --format openvino for .xml)."),
        ([ckpt, "-o", out, "--format", "openvino"],
         f"-o {out} does not end in .xml, the suffix of OpenVINO IR files. Name the output "
         "m.xml."),
        ([ckpt, "-o", out, "--opset", "11"],
         "opset 11 is not supported. Use an --opset from 13 to 20 (default 17)."),
        ([ckpt, "-o", folder], f"{folder} is a folder. Choose a file name for -o."),
        ([out.with_name("exported.onnx"), "-o", out],
         f"{out.with_name('exported.onnx')} is already an exported network, which `deeplab "
         "export` does not read. Export the model it came from (a model name, a checkpoint, a "
         ".pth, .safetensors or .tflite file)."),
    ]  # fmt: skip


def test_each_mistake_is_one_error_line_and_nothing_written(tmp_path: Path, ckpt: Path) -> None:
    cases = bad_cases(tmp_path, ckpt)
    (tmp_path / "exported.onnx").write_bytes(b"an exported network, as far as its name says")
    before = tree_hashes(tmp_path)
    for args, line in cases:
        result = deeplab("export", *args)
        assert (result.exit_code, result.stderr) == (1, f"Error: {line}\n"), args
        assert result.stdout == ""
        assert tree_hashes(tmp_path) == before, args  # nothing written, not even a temporary
        assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_a_bad_static_size_is_a_usage_error(tmp_path: Path, ckpt: Path) -> None:
    result = deeplab("export", ckpt, "-o", tmp_path / "m.onnx", "--static-size", "0,5")
    assert result.exit_code == 2
    assert "Invalid value for '--static-size': '0,5' has a side that is not positive." in (
        result.stderr
    )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("missing", "args", "line"),
    [
        ({"onnxruntime"}, [], "export needs onnxruntime, which is not installed. "
         f"{extra_hint('onnx')}."),
        ({"onnx"}, [], f"export needs the onnx package, which is not installed. "
         f"{extra_hint('onnx')}."),
        ({"openvino"}, ["--format", "openvino"], "--format openvino needs openvino, which is not "
         f"installed. {extra_hint('openvino')}."),
        ({"nncf"}, ["--format", "openvino", "--int8", "--calibrate", "PICS"],
         "--int8 with --format openvino needs nncf, which is not installed. "
         f"{extra_hint('openvino')}."),
    ],
)  # fmt: skip
def test_a_missing_extra_names_the_pip_command(
    tmp_path: Path, ckpt: Path, monkeypatch: pytest.MonkeyPatch, missing, args, line
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name in missing else real(name, *a)
    )
    pics = photos(tmp_path / "pics", 2)
    before = tree_hashes(tmp_path)
    suffix = ".xml" if "openvino" in args else ".onnx"
    args = [str(pics) if a == "PICS" else a for a in args]
    result = deeplab("export", ckpt, "-o", tmp_path / f"m{suffix}", *args)
    assert (result.exit_code, result.stderr) == (1, f"Error: {line}\n")
    assert tree_hashes(tmp_path) == before


@pytest.mark.parametrize("damage", ["truncated", "random bytes"])
def test_a_corrupt_onnx_file_is_one_model_load_error(tmp_path: Path, ckpt: Path, damage) -> None:
    good = tmp_path / "good.onnx"
    assert deeplab("export", ckpt, "-o", good, "-q").exit_code == 0
    bad = tmp_path / "bad.onnx"
    if damage == "truncated":
        bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    else:
        bad.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(ModelLoadError) as error:
        load_exported(bad)
    message = str(error.value)
    assert message.startswith(f"{bad} is not a readable ONNX model (") and "\n" not in message
    assert message.endswith("). Export it again with `deeplab export`.")
    image = photos(tmp_path / "in", 1) / "0.jpg"
    before = tree_hashes(tmp_path)
    result = deeplab("predict", image, "--model", bad, "-o", tmp_path / "mask.png")
    assert result.exit_code == 1 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr == f"Error: {message}\n"
    assert tree_hashes(tmp_path) == before


def test_help_documents_the_calibration_sources() -> None:
    result = deeplab("export", "--help")
    assert result.exit_code == 0
    text = " ".join(result.stdout.split())
    assert "a FOLDER of images (with images/, masks/ and classes.txt: labelled)" in text
    assert "KIND:SPLIT (voc, folder), e.g. voc:trainaug with" in text
    assert json.dumps("--static-size")[1:-1] in text and "--os [8|16]" in text


def test_own_quantisation_is_onnx_only_and_float_tflite_files_need_calibration(
    tmp_path: Path, tflite_quant_path: Path, tflite_float_path: Path
) -> None:
    before = tree_hashes(tmp_path)
    result = deeplab("export", tflite_quant_path, "-o", tmp_path / "m.xml", "--int8")
    assert (result.exit_code, result.stderr) == (1, (
        "Error: --int8 from a .tflite file's own quantisation writes ONNX only. Export to "
        ".onnx, or pass --calibrate for an OpenVINO int8 export.\n"
    ))  # fmt: skip
    result = deeplab("export", tflite_float_path, "-o", tmp_path / "m.onnx", "--int8")
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: --int8 needs calibration images.")
    assert tree_hashes(tmp_path) == before  # nothing written
