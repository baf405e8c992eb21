"""The embedded default model: Google's 8-bit DeepLabv3 MobileNetV2 shipped in the package.

It must be exactly what ``deeplab convert`` makes of Google's ``.tflite`` (same tensors, same
logits), load with no network and no cache, carry its licence and provenance, stay small, be
reproducible by ``weights/make_embedded_model.py``, and score on the real VOC val images at
least Google's own runtime minus 0.01 mIoU.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from deeplabcli import load_model, predict
from deeplabcli.cli import main
from deeplabcli.errors import IntegrityError
from deeplabcli.weights.cards import cards_dir, default_card
from deeplabcli.weights.resolve import card_is_cached

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "weights" / "make_embedded_model.py"
NAME = "deeplabv3-mobilenetv2-voc-8bit"
#: Google's TFLite runtime on the 120 shared VOC val images (uint8 model, its own preprocessing)
GOOGLE_RUNTIME_MIOU = 0.5866


def bits(t: torch.Tensor) -> bytes:
    return t.contiguous().numpy().tobytes()


def run(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_the_default_model_is_embedded_and_needs_no_network(monkeypatch) -> None:
    card = default_card()
    assert (card.name, card.embedded, card.license, card.format) == (
        NAME,
        True,
        "Apache-2.0",
        "ours",
    )
    assert card_is_cached(card)

    def no_network(*args, **kwargs):
        raise AssertionError("the embedded model must not touch the network")

    monkeypatch.setattr("deeplabcli.weights.download.hub_download", no_network)
    monkeypatch.setattr("deeplabcli.weights.download.url_download", no_network)
    model = load_model()  # HF_ENDPOINT points at a closed port (conftest)
    assert model.config.num_classes == 21 and model.config.output_stride == 16
    assert model.config.preprocessing.resize == "fit" and model.config.preprocessing.size == 513
    assert model.provenance["source"] == NAME and model.provenance["license"] == "Apache-2.0"
    assert model.provenance["converted_from"] == "tflite"
    assert model.provenance["upstream_file"] == "deeplabv3_mnv2_pascal_quant.tflite"
    assert model.provenance["upstream_sha256"] == card.upstream["sha256"]


def test_the_file_is_small_matches_its_card_and_carries_its_licence() -> None:
    card = default_card()
    weights = card.beside(card.file)
    assert weights.parent == cards_dir() and weights.stat().st_size == card.size
    assert card.size <= 5 * 2**20
    assert hashlib.sha256(weights.read_bytes()).hexdigest() == card.sha256
    licence, notice = (card.beside(name) for name in card.license_files)
    assert "Apache License" in licence.read_text() and "Version 2.0" in licence.read_text()
    text = notice.read_text()
    for fact in ("Google", "deeplabv3_mnv2_pascal_quant.tflite", "google-coral/test_data",
                 "Apache License, Version 2.0", "make_embedded_model.py"):  # fmt: skip
        assert fact in text, fact
    # git ignores *.safetensors except this one file
    ignored = subprocess.run(["git", "check-ignore", "-q", str(weights)], cwd=ROOT)
    assert ignored.returncode == 1, "the embedded model must not be git-ignored"


def test_it_is_exactly_deeplab_convert_of_the_tflite(tflite_quant_path, photos_dir, tmp_path):
    pytest.importorskip("tflite")
    converted = run("convert", tflite_quant_path, "-o", tmp_path / "converted")
    assert converted.exit_code == 0, converted.output
    reference = load_model(tmp_path / "converted")
    embedded = load_model()
    assert embedded.config == reference.config
    ours, theirs = embedded.state_dict(), reference.state_dict()
    assert list(ours) == list(theirs)
    for key in ours:  # the same float32 bits, not merely close
        assert bits(ours[key]) == bits(theirs[key]), key
    photo = np.asarray(Image.open(photos_dir / "dog.jpg").convert("RGB").resize((513, 385)))
    x = (torch.from_numpy(photo.copy()).permute(2, 0, 1)[None].float() / 255 - 0.5) / 0.5
    with torch.inference_mode():
        assert torch.equal(embedded(x)["out"], reference(x)["out"])
    mask = predict(embedded, photos_dir / "dog.jpg")
    assert np.array_equal(mask, predict(reference, photos_dir / "dog.jpg"))
    assert 12 in np.unique(mask)  # dog


def test_the_script_regenerates_the_same_bytes(tflite_quant_path, tflite_float_path, tmp_path):
    pytest.importorskip("tflite")
    out = tmp_path / "again.safetensors"
    done = subprocess.run(
        [sys.executable, SCRIPT, "--tflite", tflite_quant_path, "--output", out],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines()[-1] == f"matches {NAME}.toml"
    assert out.read_bytes() == default_card().beside(default_card().file).read_bytes()
    shipped = default_card().export  # the int8 export, written beside --output
    assert (tmp_path / shipped.file).read_bytes() == default_card().beside(
        shipped.file
    ).read_bytes()

    wrong = subprocess.run(
        [sys.executable, SCRIPT, "--tflite", tflite_float_path, "--output", tmp_path / "x"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert wrong.returncode == 1
    assert wrong.stdout.startswith(f"error: {tflite_float_path} has sha256 ")
    assert not (tmp_path / "x").exists()


def test_the_first_load_takes_under_two_seconds_beyond_imports() -> None:
    """Wall time of the first load_model() in a fresh process, torch and deeplabcli imported;
    the best of up to three processes, as the CPU is shared with other work."""
    code = (
        "import time, torch, deeplabcli.weights.resolve as r\n"
        "start = time.perf_counter(); r.load_model()\n"
        "print(time.perf_counter() - start)\n"
    )
    times = []
    for _ in range(3):
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        times.append(float(done.stdout))
        if times[-1] < 2.0:
            break
    print(f"first load of the embedded model: {', '.join(f'{t:.2f}' for t in times)} s")
    assert min(times) < 2.0


def test_a_damaged_embedded_file_is_refused_and_kept(tmp_path, monkeypatch) -> None:
    copy = tmp_path / "cards"
    shutil.copytree(cards_dir(), copy)
    monkeypatch.setenv("DEEPLAB_CARDS_DIR", str(copy))
    weights = copy / f"{NAME}.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    digest = hashlib.sha256(data).hexdigest()
    with pytest.raises(IntegrityError) as error:
        load_model()
    assert str(error.value) == (
        f"the embedded model file {weights} has sha256 {digest[:12]}… instead of the card's "
        f"{default_card().sha256[:12]}…, so it is damaged. Reinstall deeplabcli "
        "(from a checkout: pip install .)."
    )
    assert weights.read_bytes() == bytes(data)  # the installation's file is never deleted
    weights.unlink()  # (the torch model: `auto` would run the shipped export, test_shipped.py)
    result = run("predict", tmp_path / "photo.jpg", "-o", tmp_path / "m.png", "--backend", "torch")
    assert result.exit_code == 1
    assert result.stderr == (
        f"Error: the embedded model file {weights} of {NAME!r} is missing from this "
        "installation. Reinstall deeplabcli (from a checkout: pip install .).\n"
    )


@pytest.mark.slow
def test_it_scores_at_least_googles_runtime_on_voc_val(voc_root: Path) -> None:
    args = ["eval", "--dataset", "voc", "--data-root", voc_root.parent, "--split", "val",
            "--json", "-q", "--batch-size", "8"]  # fmt: skip
    result = run(*args)
    assert result.exit_code == 0, result.output
    scores = json.loads(result.stdout)
    print(f"embedded model, {scores['images']} VOC val images: mIoU {scores['miou']:.4f} "
          f"(Google's TFLite runtime {GOOGLE_RUNTIME_MIOU})")  # fmt: skip
    assert scores["model"] == NAME and scores["images"] == 120
    assert scores["miou"] >= GOOGLE_RUNTIME_MIOU - 0.01
