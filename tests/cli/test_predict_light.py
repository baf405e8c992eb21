"""``deeplab predict`` on its torch-free path: a warm export cache or an exported file, and the
same lines, records and exit codes as the torch pipeline."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from support.exports import fill_cache

from deeplabcli import build_model
from deeplabcli.cli import main
from deeplabcli.data.palette import voc_palette
from deeplabcli.exporting.onnx import export_onnx
from deeplabcli.inference.segmenter import Segmenter
from deeplabcli.prediction import pipeline
from deeplabcli.runtimes.cache import CACHE_ENV
from deeplabcli.weights.checkpoint import save_checkpoint
from deeplabcli.weights.resolve import load_model

#: Runs the CLI in a fresh interpreter and prints its exit code and which heavy modules it
#: imported: torch (what this path exists to avoid), rich (only for a progress bar) and onnx
#: (ONNX Runtime reads the metadata itself).
PROBE = """
import json, sys
from deeplabcli.cli import main
try:
    main(sys.argv[1:], prog_name="deeplab")
except SystemExit as done:
    code = done.code
heavy = sorted(name for name in ("torch", "rich", "onnx") if name in sys.modules)
print(json.dumps({"code": code, "heavy": heavy}))
"""


def deeplab(*args: str, cache: Path) -> tuple[dict, str]:
    """``deeplab ARGS`` in a subprocess with the export cache at ``cache``: (the probe's
    report, stderr)."""
    env = {**os.environ, CACHE_ENV: str(cache)}
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *args], capture_output=True, text=True, env=env, timeout=600
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1]), done.stderr


#: A model with no shipped export (the default model's runs it: tests/weights/test_shipped.py),
#: so the torch-free path needs the export cache
FLOAT_TFLITE = (
    Path(__file__).resolve().parents[2].parent / "shared/data/models/deeplabv3_257_mv_gpu.tflite"
)


@pytest.fixture(scope="module")
def float_model():
    if not FLOAT_TFLITE.is_file():
        pytest.skip(f"real test data not found at {FLOAT_TFLITE} (see ../shared/data/README.md)")
    return load_model(FLOAT_TFLITE)


@pytest.fixture(scope="module")
def warm_cache(tmp_path_factory: pytest.TempPathFactory, float_model) -> Path:
    """An export cache holding the float model's ONNX export, as a first run leaves it."""
    cache = tmp_path_factory.mktemp("cache")
    fill_cache(cache, float_model, reference=FLOAT_TFLITE)
    return cache


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory):
    """(checkpoint folder, ONNX export) of one random deeplabv3_tiny."""
    torch.manual_seed(0)
    model = build_model("deeplabv3_tiny").eval()
    folder = tmp_path_factory.mktemp("tiny")
    return save_checkpoint(model, folder / "ckpt"), export_onnx(model, folder / "tiny.onnx")


def agreement(mask_path: Path, segmenter: Segmenter, image: Path) -> float:
    return float((np.asarray(Image.open(mask_path)) == segmenter.predict(image)).mean())


def test_one_photo_with_a_warm_cache_never_imports_torch(
    tmp_path: Path, photos_dir: Path, warm_cache: Path, float_model
) -> None:
    photo, mask = photos_dir / "dog.jpg", tmp_path / "mask.png"
    report, err = deeplab(
        "predict", str(photo), "-o", str(mask), "--model", str(FLOAT_TFLITE), cache=warm_cache
    )
    assert report == {"code": 0, "heavy": []}
    assert re.fullmatch(r"Wrote 1 mask in \d+\.\d s \(\d+\.\d\d images/s\)\.", err.strip())
    image = Image.open(mask)
    assert image.mode == "P" and image.size == (768, 576)
    assert image.getpalette()[: 3 * 256] == voc_palette().ravel().tolist()
    segmenter = Segmenter(float_model, device="cpu", backend="torch")
    assert agreement(mask, segmenter, photo) >= 0.999


def test_a_cold_cache_runs_the_pipeline_once_and_fills_the_cache(
    tmp_path: Path, photos_dir: Path, float_model
) -> None:
    photo, cache = photos_dir / "person.jpg", tmp_path / "cache"
    model = ("--model", str(FLOAT_TFLITE))
    first, _ = deeplab(
        "predict", str(photo), "-o", str(tmp_path / "first.png"), *model, cache=cache
    )
    assert first == {"code": 0, "heavy": ["onnx", "rich", "torch"]}  # exported on the way
    assert len(list(cache.glob("*.onnx"))) == 1 and len(list(cache.glob("refs/*.json"))) == 1
    second, _ = deeplab("predict", str(photo), "-o", str(tmp_path / "second.png"), *model,
                        cache=cache)  # fmt: skip
    assert second == {"code": 0, "heavy": []}
    first_mask = np.asarray(Image.open(tmp_path / "first.png"))  # torch's preprocessing
    assert (np.asarray(Image.open(tmp_path / "second.png")) == first_mask).mean() >= 0.999
    segmenter = Segmenter(float_model, device="cpu", backend="torch")
    assert agreement(tmp_path / "second.png", segmenter, photo) >= 0.999


# ---------------------------------------------------------------------- same as the pipeline
def photo_file(path: Path, height: int, width: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)
    return path


def scene(root: Path) -> list[str]:
    """Three photos, a corrupt one and a missing input; b's mask already exists."""
    photo_file(root / "in" / "a.png", 30, 40, 0)
    photo_file(root / "in" / "b.png", 25, 33, 1)
    photo_file(root / "in" / "c.jpg", 41, 17, 2)
    (root / "in" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n and then nothing")
    (root / "out").mkdir()
    (root / "out" / "b.png").write_bytes(b"an earlier mask")
    return [str(root / "in"), str(root / "missing.jpg")]


def run_both(tmp_path: Path, tiny, monkeypatch, build, *options: str) -> dict[str, tuple]:
    """``deeplab predict`` over ``build(root)`` with the tiny model on the torch pipeline
    (its checkpoint, --backend torch) and on the light path (its export, which must not reach
    the pipeline): {path: (exit code, stdout lines, stderr lines)} with ``root`` as <root>
    the timings as <t> and the
    progress bar's last state as <bar>."""
    ckpt, onnx = tiny
    runs = {}
    for path, model in (("torch", [str(ckpt), "--backend", "torch"]), ("light", [str(onnx)])):
        root = tmp_path / path
        inputs = build(root)
        with monkeypatch.context() as patch:
            if path == "light":
                patch.setattr(pipeline, "predict_files", None)  # any call fails
            args = ["predict", *inputs, "-o", str(root / "out"), "--model", *model, *options]
            result = CliRunner().invoke(main, args, catch_exceptions=False)

        def tidy(text: str, root: Path = root) -> list[str]:
            text = text.replace(str(root), "<root>")
            text = re.sub(r'"seconds": [0-9.e-]+', '"seconds": "<t>"', text)
            text = re.sub(r"in \d+\.\d s( \(\d+\.\d\d images/s\))?", "in <t>", text)
            text = re.sub(r"^Predicting .*$", "Predicting <bar>", text, flags=re.MULTILINE)
            return [line for line in text.splitlines() if line.strip()]

        runs[path] = (result.exit_code, tidy(result.stdout), tidy(result.stderr))
    return runs


def test_json_skips_and_bad_inputs_say_what_the_pipeline_says(tmp_path, monkeypatch, tiny):
    runs = run_both(tmp_path, tiny, monkeypatch, scene, "--json")
    (code, out, err), (torch_code, torch_out, torch_err) = runs["light"], runs["torch"]
    records, theirs = ([json.loads(line) for line in lines] for lines in (out, torch_out))
    assert [r.pop("backend", None) for r in records] == [
        None,
        None,
        "onnxruntime",
        None,
        "onnxruntime",
    ]
    assert [r.pop("backend", None) for r in theirs].count("torch") == 2
    key = lambda record: record["input"]  # noqa: E731 - the pipeline reports images as they finish
    assert sorted(records, key=key) == sorted(theirs, key=key)
    assert [(r["input"], r["status"]) for r in records] == [
        ("<root>/missing.jpg", "failed"), ("<root>/in/b.png", "skipped"),
        ("<root>/in/a.png", "written"), ("<root>/in/broken.png", "failed"),
        ("<root>/in/c.jpg", "written"),
    ]  # fmt: skip
    assert records[2]["classes"] == theirs[3]["classes"] and records[2]["seconds"] == "<t>"
    assert (code, torch_code) == (1, 1)
    assert (
        err
        == torch_err
        == [
            "Predicting <bar>",
            "Skipped <root>/out/b.png: already exists, not replaced. Use --overwrite to replace it.",
            "Error: <root>/missing.jpg: no such file or directory. Check the path.",
            "Error: <root>/in/broken.png: not an image (unknown format). Give a JPEG, PNG, BMP, "
            "TIFF or WebP file.",
            "Wrote 2 masks in <t>; 1 skipped (already exist; --overwrite replaces them); 2 failed.",
        ]
    )
    assert (tmp_path / "light" / "out" / "b.png").read_bytes() == b"an earlier mask"
    for name in ("a.png", "c.png"):  # the same masks, byte for byte
        masks = [(tmp_path / path / "out" / name).read_bytes() for path in ("light", "torch")]
        assert masks[0] == masks[1], name


def test_an_unwritable_output_says_what_the_pipeline_says(tmp_path, monkeypatch, tiny):
    def build(root: Path) -> list[str]:
        photo_file(root / "in" / "a.png", 30, 40, 0)
        photo_file(root / "in" / "b.png", 25, 33, 1)
        (root / "out").parent.mkdir(parents=True, exist_ok=True)
        (root / "out").write_bytes(b"a file where the folder should be")
        return [str(root / "in")]

    runs = run_both(tmp_path, tiny, monkeypatch, build)
    assert runs["light"] == runs["torch"]
    assert runs["light"] == (
        1,
        [],
        ["Predicting <bar>"]
        + [
            f"Error: <root>/in/{name}: cannot write <root>/out/{name} (Not a directory). "
            "Choose a writable output location with -o."
            for name in ("a.png", "b.png")
        ]
        + ["Wrote 0 masks in <t>; 2 failed."],
    )
    assert (tmp_path / "light" / "out").read_bytes() == b"a file where the folder should be"


def test_a_corrupt_export_is_one_error_line(tmp_path: Path) -> None:
    model = tmp_path / "model.onnx"
    model.write_bytes(b"this is not protobuf")
    photo = photo_file(tmp_path / "a.png", 20, 20, 0)
    result = CliRunner().invoke(
        main, ["predict", str(photo), "--model", str(model)], catch_exceptions=False
    )
    assert result.exit_code != 0 and result.stdout == ""
    assert re.fullmatch(
        re.escape(f"Error: {model} is not a readable ONNX model (") + r"[^\n]+"
        + re.escape("). Export it again with `deeplab export`.") + "\n",
        result.stderr,
    )  # fmt: skip
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "model.onnx"]
