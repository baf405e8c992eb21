"""``deeplab predict --backend``: ONNX Runtime and OpenVINO give torch's masks on real photos
with every inference option, exported files are model references, the JSON records say which
backend ran, and every mistake is one ``Error:`` line with nothing written."""

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

from deeplabcli import build_model
from deeplabcli.cli import main
from deeplabcli.exporting import cache as export_cache
from deeplabcli.exporting.onnx import export_onnx
from deeplabcli.inference.segmenter import Segmenter
from deeplabcli.runtimes.cache import cache_dir
from deeplabcli.weights.checkpoint import save_checkpoint

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "data"
RUNTIMES = ("onnxruntime", "openvino")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory):
    """(checkpoint folder, its ONNX export, the model) of a random deeplabv3_tiny."""
    pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    model = build_model("deeplabv3_tiny").eval()
    folder = tmp_path_factory.mktemp("tiny")
    return save_checkpoint(model, folder / "ckpt"), export_onnx(model, folder / "tiny.onnx"), model


@pytest.fixture(params=RUNTIMES)
def runtime(request: pytest.FixtureRequest) -> str:
    pytest.importorskip(request.param)
    return request.param


def photo(path: Path, height: int = 30, width: int = 40, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)
    return path


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["predict", *args], catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def records(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def masks(folder: Path) -> dict[str, np.ndarray]:
    return {p.name: np.asarray(Image.open(p)) for p in sorted(folder.glob("*.png"))}


def agreement(ours: dict[str, np.ndarray], theirs: dict[str, np.ndarray]) -> float:
    """The share of pixels (over all images) where two runs' masks agree."""
    assert ours.keys() == theirs.keys() and ours
    same = sum(int((ours[k] == theirs[k]).sum()) for k in ours)
    return same / sum(m.size for m in ours.values())


def hide(monkeypatch: pytest.MonkeyPatch, *modules: str) -> None:
    for name in modules:
        monkeypatch.setitem(sys.modules, name, None)


# ---------------------------------------------------------------------- real photos
@pytest.fixture(scope="module")
def real_images() -> list[str]:
    """5 VOC val images and 3 photos (../shared/data), of eight sizes."""
    voc, photos = SHARED / "VOCdevkit" / "VOC2012", SHARED / "photos"
    if not (voc.is_dir() and photos.is_dir()):
        pytest.skip(f"real test data not found at {SHARED} (see ../shared/data/README.md)")
    ids = (voc / "ImageSets" / "Segmentation" / "val.txt").read_text().split()
    return [str(voc / "JPEGImages" / f"{i}.jpg") for i in ids[:5]] + [
        str(photos / name) for name in ("chelsea.png", "person.jpg", "grace_hopper.bmp")
    ]


#: (name, options, how many of the images): multi-scale + flip, tiles (the default model's
#: 513 px input at 257 px windows), and batches of four images of mixed sizes (one canvas)
REAL_RUNS = [
    ("tta", ["--scales", "0.75,1,1.25", "--flip"], 3),
    ("tiles", ["--tile", "257"], 2),
    ("batches", ["--batch-size", "4"], 8),
]


def predict_real(out: Path, images: list[str], backend: str, options: list[str]) -> dict:
    code, stdout, err = run(*images, "-o", str(out), "--format", "index", "--backend", backend,
                            "--json", *options)  # fmt: skip
    assert code == 0, err
    assert {r["backend"] for r in records(stdout)} == {backend}
    return masks(out)


@pytest.fixture(scope="module")
def torch_masks(tmp_path_factory, real_images) -> dict[str, dict[str, np.ndarray]]:
    """REAL_RUNS on torch: name → masks."""
    out = tmp_path_factory.mktemp("torch")
    return {name: predict_real(out / name, real_images[:count], "torch", options)
            for name, options, count in REAL_RUNS}  # fmt: skip


def test_runtimes_give_torchs_masks_on_real_photos(
    tmp_path, real_images, runtime, torch_masks
) -> None:
    for name, options, count in REAL_RUNS:
        ours = predict_real(tmp_path / name, real_images[:count], runtime, options)
        share = agreement(ours, torch_masks[name])
        print(f"{runtime} {name}: {100 * share:.4f}% of the pixels as torch")
        assert share >= 0.999, (name, share)


# ---------------------------------------------------------------------- backends and records
def test_auto_runs_a_runtime_and_falls_back_to_torch_without_one(tmp_path, tiny, monkeypatch):
    ckpt, _, _ = tiny
    src = str(photo(tmp_path / "a.png"))
    code, stdout, err = run(src, "-o", str(tmp_path / "auto"), "--model", str(ckpt), "--json")
    assert code == 0, err
    assert [r["backend"] for r in records(stdout)] == ["onnxruntime"]
    hide(monkeypatch, "onnxruntime", "openvino")
    code, stdout, err = run(src, "-o", str(tmp_path / "none"), "--model", str(ckpt), "--json")
    assert code == 0, err
    assert [r["backend"] for r in records(stdout)] == ["torch"]
    assert (masks(tmp_path / "none")["a.png"] == masks(tmp_path / "auto")["a.png"]).mean() > 0.999


def test_a_model_is_exported_once_across_runs(tmp_path, tiny, monkeypatch) -> None:
    ckpt, _, _ = tiny
    src = str(photo(tmp_path / "a.png", 33, 47))
    calls = []
    real_export = export_cache.export_onnx
    monkeypatch.setattr(export_cache, "export_onnx", lambda *a, **k: calls.append(a[1]) or
                        real_export(*a, **k))  # fmt: skip
    for i in range(2):
        code, _, err = run(src, "-o", str(tmp_path / f"{i}.png"), "--model", str(ckpt),
                           "--backend", "onnxruntime", "--flip")  # fmt: skip
        assert code == 0, err
    assert len(calls) == 1 and calls[0].parent == cache_dir()
    assert np.array_equal(np.asarray(Image.open(tmp_path / "0.png")),
                          np.asarray(Image.open(tmp_path / "1.png")))  # fmt: skip


def test_streams_share_one_session(tmp_path, tiny, runtime) -> None:
    ckpt, _, _ = tiny
    for i in range(6):
        photo(tmp_path / "in" / f"{i}.png", 30 + 4 * (i % 3), 40, seed=i)
    results = {}
    for streams in ("1", "2"):
        out = tmp_path / streams
        code, _, err = run(str(tmp_path / "in"), "-o", str(out), "--format", "index",
                           "--model", str(ckpt), "--backend", runtime, "--streams", streams,
                           "--flip")  # fmt: skip
        assert code == 0, err
        results[streams] = masks(out)
    assert agreement(results["2"], results["1"]) >= 0.999 and len(results["1"]) == 6


@pytest.mark.parametrize("extra", [[], ["--flip"]], ids=["plain", "flip"])
def test_an_exported_file_is_a_model_reference(tmp_path, tiny, extra) -> None:
    _, onnx_file, model = tiny
    src = photo(tmp_path / "a.png", 37, 52, seed=4)
    expected = Segmenter(model, flip=bool(extra)).predict(src)
    for backend in ("auto", "onnxruntime", "openvino"):
        if backend == "openvino":
            pytest.importorskip("openvino")
        out = tmp_path / f"{backend}.png"
        code, stdout, err = run(str(src), "-o", str(out), "--model", str(onnx_file),
                                "--backend", backend, "--json", *extra)  # fmt: skip
        assert code == 0, err
        ran = "onnxruntime" if backend == "auto" else backend
        assert [r["backend"] for r in records(stdout)] == [ran]
        assert (np.asarray(Image.open(out)) == expected).mean() >= 0.999


# ---------------------------------------------------------------------- mistakes
def fails_with(message: str | re.Pattern, *args: str, out: Path) -> None:
    """One ``Error:`` line (``message``: exact text or a pattern), exit 1, nothing at ``out``."""
    code, stdout, err = run(*args, "-o", str(out))
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 1 and stdout == "", err
    assert len(lines) == 1 and "Traceback" not in err, err
    if isinstance(message, str):
        assert lines[0] == f"Error: {message}"
    else:
        assert message.fullmatch(lines[0]), lines[0]
    assert not out.exists()


@pytest.mark.parametrize(
    ("backend", "extra", "packages"),
    [("onnxruntime", "onnx", "onnx onnxruntime"), ("openvino", "openvino", "openvino onnx nncf")],
)
def test_a_missing_runtime_is_one_line(tmp_path, tiny, monkeypatch, backend, extra, packages):
    ckpt, _, _ = tiny
    hide(monkeypatch, backend)
    src = str(photo(tmp_path / "a.png"))
    message = (
        f"the {backend} backend needs {backend}, which is not installed. Install it from the "
        f'deeplabcli checkout with pip install ".[{extra}]" (pipx: pipx inject deeplabcli '
        f'{packages}; from PyPI once published: pip install "deeplabcli[{extra}]")'
        "."
    )
    for options in ([], ["--flip"]):  # the torch-free path and the pipeline
        fails_with(message, src, "--model", str(ckpt), "--backend", backend, *options,
                   out=tmp_path / "out")  # fmt: skip
    assert not cache_dir().exists()


def test_a_corrupt_export_is_one_line(tmp_path, tiny) -> None:
    _, onnx_file, _ = tiny
    src = str(photo(tmp_path / "a.png"))
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(onnx_file.read_bytes()[: onnx_file.stat().st_size // 2])
    noise = tmp_path / "noise.onnx"
    noise.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, np.uint8).tobytes())
    for bad in (truncated, noise):
        before = bad.read_bytes()
        pattern = re.compile(
            f"Error: {re.escape(str(bad))} is not a readable ONNX model \\(.+\\)\\. Export it "
            "again with `deeplab export`\\."
        )
        for options in ([], ["--flip"]):
            fails_with(pattern, src, "--model", str(bad), *options, out=tmp_path / "out")
        assert bad.read_bytes() == before


def test_exported_file_and_option_mistakes_are_one_line(tmp_path, tiny) -> None:
    ckpt, onnx_file, _ = tiny
    src = str(photo(tmp_path / "a.png"))
    out = tmp_path / "out"
    xml = tmp_path / "model.xml"
    xml.write_text("<net/>")
    fails_with(f"{xml} has no model.bin beside it: OpenVINO IR is the .xml and its .bin. Copy "
               "both, or export again.", src, "--model", str(xml), out=out)  # fmt: skip
    fails_with(f"{onnx_file} was exported at output stride 16, which an exported graph cannot "
               "switch. Export the model again with --os 8 (deeplab export MODEL -o FILE --os "
               "8), or leave --os out.", src, "--model", str(onnx_file), "--os", "8", out=out)  # fmt: skip
    fails_with(f"{onnx_file} is an exported model, with no torch weights in it, so it cannot run "
               "on --backend torch. Use --backend auto, onnxruntime or openvino, or the model "
               "it was exported from (deeplab info shows its provenance).",
               src, "--model", str(onnx_file), "--backend", "torch", out=out)  # fmt: skip
    for model in (ckpt, onnx_file):
        fails_with("the onnxruntime backend runs on the CPU, not on cuda. Use --device cpu (or "
                   "auto) with --backend onnxruntime, or --backend torch to run on cuda.",
                   src, "--model", str(model), "--backend", "onnxruntime", "--device", "cuda",
                   out=out)  # fmt: skip
    assert not list(cache_dir().glob("*.onnx"))  # nothing was exported for the refused runs


# ---------------------------------------------------------------------- torchrun
@pytest.mark.distributed
def test_torchrun_ranks_each_run_their_own_session(tmp_path: Path, tiny) -> None:
    ckpt, _, _ = tiny
    for i in range(5):
        photo(tmp_path / "in" / f"{i}.jpg", seed=i)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc-per-node", "2", "-m", "deeplabcli", "predict", str(tmp_path / "in"),
               "-o", str(tmp_path / "out"), "--model", str(ckpt), "--json", "--backend",
               "onnxruntime", "--flip"]  # fmt: skip
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    written = records(done.stdout)
    assert sorted(r["output"] for r in written) == [str(tmp_path / "out" / f"{i}.png")
                                                    for i in range(5)]  # fmt: skip
    assert {r["backend"] for r in written} == {"onnxruntime"}
    assert len(list((tmp_path / "cache" / "deeplabcli" / "exported").glob("*.onnx"))) == 1
