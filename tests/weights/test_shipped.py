"""The default model's shipped int8 export (the card's ``[export]``, ``weights.shipped``).

It must match its card, be what ``--backend auto`` runs for the default model when the run asks
nothing the fixed 513×513 graph cannot do (and only then), be refused with one line when damaged,
run the default ``deeplab predict`` without importing torch, and be Google's 8-bit model: close
to Google's TFLite runtime on real VOC images, and at least as accurate as the float model.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from deeplabcli.cli import main
from deeplabcli.errors import IntegrityError, ModelLoadError
from deeplabcli.weights.cards import cards_dir, default_card
from deeplabcli.weights.shipped import shipped_export

pytest.importorskip("onnxruntime")

NAME = "deeplabv3-mobilenetv2-voc-8bit"


def run(*args: object):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_the_card_names_a_small_int8_export_beside_it() -> None:
    card = default_card()
    assert card.name == NAME and card.export is not None
    path = card.beside(card.export.file)
    data = path.read_bytes()
    assert hashlib.sha256(data).hexdigest() == card.export.sha256
    assert len(data) == card.export.size < 3_000_000
    assert (card.export.backend, card.export.output_stride) == ("onnxruntime", 16)
    from deeplabcli.runtimes.exported import load_exported

    model = load_exported(path, "onnxruntime")
    assert model.info.int8 and tuple(model.info.static_size) == (513, 513)
    assert model.config.num_classes == 21 and model.config.output_stride == 16
    assert model.provenance["source"] == NAME


def test_auto_runs_it_only_for_what_the_graph_can_do(monkeypatch) -> None:
    path = default_card().beside(default_card().export.file)
    assert shipped_export(None, backend="auto") == path
    assert shipped_export(NAME, backend="auto", device="cpu", output_stride=16) == path
    for ref, options in [
        (None, {"backend": "torch"}),
        (None, {"backend": "onnxruntime"}),  # a named backend runs the float model
        (None, {"backend": None}),  # the library's default: torch
        (None, {"backend": "auto", "output_stride": 8}),
        (None, {"backend": "auto", "scales": (0.5, 1.0)}),
        (None, {"backend": "auto", "tile": 513}),
        (None, {"backend": "auto", "device": "cuda"}),
        ("deeplabv3-resnet101-voc", {"backend": "auto"}),  # a card without [export]
        ("weights/model.safetensors", {"backend": "auto"}),
    ]:
        assert shipped_export(ref, **options) is None, (ref, options)
    monkeypatch.setattr("deeplabcli.weights.shipped.auto_backend", lambda device: "torch")
    assert shipped_export(None, backend="auto") is None  # no ONNX Runtime: auto means torch


def test_a_damaged_or_missing_export_is_one_line_and_kept(tmp_path, monkeypatch) -> None:
    copy = tmp_path / "cards"
    shutil.copytree(cards_dir(), copy)
    monkeypatch.setenv("DEEPLAB_CARDS_DIR", str(copy))
    shipped = copy / default_card().export.file
    data = bytearray(shipped.read_bytes())
    data[100] ^= 0xFF
    shipped.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match=r"^the shipped export .* is damaged\. Reinstall"):
        shipped_export(None, backend="auto")
    photo = tmp_path / "photo.png"
    Image.new("RGB", (64, 48), (90, 120, 30)).save(photo)
    result = run("predict", photo, "-o", tmp_path / "m.png")
    assert result.exit_code == 1 and not (tmp_path / "m.png").exists()
    assert result.stderr.startswith(f"Error: the shipped export {shipped} has sha256 ")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.output
    assert shipped.read_bytes() == bytes(data)  # the installation's file is never deleted
    result = run("predict", photo, "-o", tmp_path / "m.png", "--backend", "torch")
    assert result.exit_code == 0, result.output  # the torch model does not need it
    shipped.unlink()
    with pytest.raises(ModelLoadError, match="is missing from this installation"):
        shipped_export(None, backend="auto")


def test_the_default_predict_runs_it_without_torch(photos_dir, tmp_path) -> None:
    out = tmp_path / "mask.png"
    code = (
        "import sys\n"
        "from deeplabcli.cli import run\n"
        "try:\n"
        "    run()\n"
        "finally:\n"
        "    print(sorted(m for m in ('torch', 'onnx') if m in sys.modules), file=sys.stderr)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, "predict", photos_dir / "dog.jpg", "-o", out, "--json"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines()[-1] == "[]"  # neither torch nor onnx imported
    record = json.loads(done.stdout)
    assert record["backend"] == "onnxruntime"
    mask = Image.open(out)
    assert mask.mode == "P" and mask.size == (768, 576)
    assert set(np.unique(np.asarray(mask)).tolist()) == {0, 2, 7, 12}  # dog = 12


def test_eval_runs_it_and_says_which_model_and_backend_ran(voc_root, tmp_path) -> None:
    ids = (voc_root / "ImageSets" / "Segmentation" / "val.txt").read_text().split()[:4]
    split = tmp_path / "four.txt"
    split.write_text("\n".join(ids) + "\n")
    records = {}
    for backend in ("auto", "torch"):
        result = run("eval", "--data-root", voc_root.parent, "--split", split, "--json", "-q",
                     "--backend", backend)  # fmt: skip
        assert result.exit_code == 0, result.output
        records[backend] = json.loads(result.stdout)
    assert records["auto"]["images"] == 4
    assert (records["auto"]["model"], records["auto"]["backend"]) == (NAME, "onnxruntime")
    assert (records["torch"]["model"], records["torch"]["backend"]) == (NAME, "torch")
    assert records["auto"]["miou"] != records["torch"]["miou"]  # 8-bit vs float: not the same


def _tflite_classes(interpreter, rgb: np.ndarray) -> np.ndarray:
    """Google's runtime on one image, with the preprocessing of benchmarks/_tflite_predict.py."""
    inp = interpreter.get_input_details()[0]
    side = int(inp["shape"][1])
    height, width = rgb.shape[:2]
    ratio = side / max(height, width)
    h, w = max(1, round(height * ratio)), max(1, round(width * ratio))
    canvas = np.full((1, side, side, 3), inp["quantization"][1], dtype=np.uint8)
    canvas[0, :h, :w] = np.asarray(Image.fromarray(rgb).resize((w, h), Image.Resampling.BILINEAR))
    interpreter.set_tensor(inp["index"], canvas)
    interpreter.invoke()
    out = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])[0]
    region = Image.fromarray(out[:h, :w].astype(np.uint8))
    return np.asarray(region.resize((width, height), Image.Resampling.NEAREST))


def test_it_agrees_with_googles_runtime_more_than_the_float_model(voc_root, tflite_quant_path):
    """On real VOC val images the 8-bit export is closer to Google's 8-bit runtime than our
    float model is (it runs the same integers)."""
    litert = pytest.importorskip("ai_edge_litert.interpreter")
    from deeplabcli import load_model, predict
    from deeplabcli.runtimes.exported import load_exported

    interpreter = litert.Interpreter(model_path=str(tflite_quant_path), num_threads=2)
    interpreter.allocate_tensors()
    int8 = load_exported(default_card().beside(default_card().export.file), "onnxruntime")
    model = load_model()
    ids = (voc_root / "ImageSets" / "Segmentation" / "val.txt").read_text().split()[:8]
    same = {"int8": 0, "float": 0}
    total = 0
    for image_id in ids:
        path = voc_root / "JPEGImages" / f"{image_id}.jpg"
        rgb = np.asarray(Image.open(path).convert("RGB"))
        google = _tflite_classes(interpreter, rgb)
        same["int8"] += int((predict(int8, path) == google).sum())
        same["float"] += int((predict(model, path, backend="torch") == google).sum())
        total += google.size
    shares = {k: v / total for k, v in same.items()}
    print(f"pixels equal to Google's runtime on {len(ids)} VOC val images: {shares}")
    assert shares["int8"] >= 0.99 and shares["int8"] > shares["float"]


@pytest.mark.slow
def test_it_scores_at_least_the_float_model_on_voc_val(voc_root) -> None:
    args = ("eval", "--data-root", voc_root.parent, "--json", "-q")
    scores = {b: json.loads(run(*args, "--backend", b).stdout)["miou"] for b in ("auto", "torch")}
    print(
        f"120 VOC val images: mIoU shipped int8 {scores['auto']:.4f}, float {scores['torch']:.4f}"
    )
    assert scores["auto"] >= scores["torch"]
    assert abs(scores["auto"] - 0.5902) < 0.0005  # measured: 0.5902 (TFLite runtime 0.5866)
