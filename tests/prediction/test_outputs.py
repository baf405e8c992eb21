"""Probability maps: ``predict(..., return_probs=True)``, ``--format probs`` (.npz float16) and
``--format confidence`` (grayscale PNG of the top-class probability)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from support.stubs import PixelModel

from deeplabcli import build_model, predict, predict_batch
from deeplabcli.cli import main
from deeplabcli.config import PredictConfig
from deeplabcli.errors import ConfigError
from deeplabcli.inference.segmenter import Segmenter
from deeplabcli.prediction.outputs import confidence_png, write_npz
from deeplabcli.prediction.pipeline import predict_files
from deeplabcli.weights.checkpoint import save_checkpoint


def photo(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return build_model("deeplabv3_tiny").eval()


@pytest.mark.parametrize(
    "options",
    [{}, {"scales": (0.75, 1.0), "flip": True}, {"tile": 32, "tile_overlap": 0.5}],
    ids=["plain", "multi-scale-flip", "tiles"],
)
def test_return_probs_gives_probabilities_and_their_argmax(tiny, options) -> None:
    image = photo(30, 41, seed=1)
    mask, probs = predict(tiny, image, return_probs=True, **options)
    assert probs.shape == (21, 30, 41) and probs.dtype == np.float32
    assert mask.shape == (30, 41) and mask.dtype == np.uint8
    np.testing.assert_allclose(probs.sum(0), 1.0, atol=1e-3)
    assert probs.min() >= 0
    assert np.array_equal(mask, probs.argmax(0))
    assert np.array_equal(mask, predict(tiny, image, **options))  # the plain call's mask
    expected = Segmenter(tiny, device="cpu", optimize=False, **options).probabilities(image)
    np.testing.assert_array_equal(probs, expected.numpy())
    pairs = predict_batch(tiny, [image, photo(20, 20)], return_probs=True, **options)
    assert [p.shape for _, p in pairs] == [(21, 30, 41), (21, 20, 20)]
    assert np.array_equal(pairs[0][0], mask)


def test_write_npz_is_atomic_compressed_float16_and_keeps_existing_files(tmp_path: Path) -> None:
    probs = np.random.default_rng(0).dirichlet(np.ones(3), (5, 7)).transpose(2, 0, 1)
    target = tmp_path / "deep" / "p.npz"
    assert write_npz(probs.astype(np.float32), ("a", "b", "c"), target, overwrite=False)
    with np.load(target, allow_pickle=False) as data:
        assert data["probs"].dtype == np.float16 and data["probs"].shape == (3, 5, 7)
        np.testing.assert_allclose(data["probs"], probs, atol=1e-3)
        assert data["classes"].tolist() == ["a", "b", "c"]
    digest = hashlib.sha256(target.read_bytes()).hexdigest()
    assert not write_npz(probs[::-1].copy(), ("a", "b", "c"), target, overwrite=False)
    assert hashlib.sha256(target.read_bytes()).hexdigest() == digest
    assert sorted(p.name for p in target.parent.iterdir()) == ["p.npz"]  # no temporaries
    big = np.zeros((3, 64, 64), np.float32)
    big[0] = 1
    assert write_npz(big, ("a", "b", "c"), tmp_path / "z.npz", overwrite=False)
    assert (tmp_path / "z.npz").stat().st_size < big.nbytes / 20  # compressed


def test_confidence_png_is_the_top_probability_in_0_255() -> None:
    probs = np.array([[[0.2, 1.0]], [[0.7, 0.0]], [[0.1, 0.0]]], np.float32)  # (3, 1, 2)
    image = confidence_png(probs)
    assert image.mode == "L" and np.asarray(image).tolist() == [[178, 255]]


def write_with(tmp_path: Path, fmt: str, **options) -> tuple[Path, list]:
    """Predict two images with the known-logit PixelModel into tmp_path/<fmt>/ as ``fmt``."""
    inputs = tmp_path / "in"
    inputs.mkdir(exist_ok=True)
    ramp = np.zeros((24, 40, 3), np.uint8)
    ramp[..., 0] = np.linspace(0, 255, 40, dtype=np.uint8)[None, :]  # all three classes
    Image.fromarray(ramp).save(inputs / "ramp.png")
    Image.fromarray(photo(17, 23, seed=2)).save(inputs / "noise.png")
    segmenter = Segmenter(PixelModel(), device="cpu", optimize=False, **options)
    config = PredictConfig(output=str(tmp_path / fmt), format=fmt)
    summary = predict_files(segmenter, [str(inputs)], config, progress=False)
    assert (summary.written, summary.failed) == (2, 0)
    return tmp_path / fmt, summary.results


@pytest.mark.parametrize("tile", [None, 16])
def test_probs_files_hold_float16_probabilities_whose_argmax_is_the_index_mask(
    tmp_path: Path, tile
) -> None:
    probs_dir, results = write_with(tmp_path, "probs", tile=tile)
    index_dir, _ = write_with(tmp_path, "index", tile=tile)
    assert sorted(p.name for p in probs_dir.iterdir()) == ["noise.npz", "ramp.npz"]
    for name, size in (("ramp", (24, 40)), ("noise", (17, 23))):
        with np.load(probs_dir / f"{name}.npz", allow_pickle=False) as data:
            probs, classes = data["probs"], data["classes"]
        assert probs.dtype == np.float16 and probs.shape == (3, *size)
        assert classes.tolist() == ["class0", "class1", "class2"]
        np.testing.assert_allclose(probs.astype(np.float32).sum(0), 1.0, atol=1e-3)
        index = np.asarray(Image.open(index_dir / f"{name}.png"))
        assert np.array_equal(probs.argmax(0), index)
    ramp = np.asarray(Image.open(index_dir / "ramp.png"))
    assert set(np.unique(ramp)) == {0, 1, 2}  # the stub's three classes all appear
    by_input = {Path(r.input).name: r for r in results}
    assert by_input["ramp.png"].output == str(probs_dir / "ramp.npz")
    assert (by_input["ramp.png"].width, by_input["ramp.png"].height) == (40, 24)
    shares = {c["index"]: c["share"] for c in by_input["ramp.png"].classes}
    assert shares == {c: round(float((ramp == c).mean()), 6) for c in (0, 1, 2)}


def test_confidence_files_are_the_top_probability(tmp_path: Path) -> None:
    out, _ = write_with(tmp_path, "confidence")
    segmenter = Segmenter(PixelModel(), device="cpu", optimize=False)
    for name in ("ramp", "noise"):
        image = Image.open(out / f"{name}.png")
        probs = segmenter.probabilities(tmp_path / "in" / f"{name}.png").numpy()
        assert image.mode == "L"
        assert np.array_equal(np.asarray(image), np.rint(probs.max(0) * 255).astype(np.uint8))


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["predict", *args], catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def test_probability_formats_on_the_command_line(tmp_path: Path, tiny) -> None:
    ckpt = save_checkpoint(tiny, tmp_path / "ckpt")
    src = tmp_path / "a.jpg"
    Image.fromarray(photo(30, 40)).save(src)
    code, out, err = invoke(str(src), "--format", "probs", "--model", str(ckpt), "--json")
    assert code == 0, err
    record = json.loads(out)
    assert record["output"] == str(tmp_path / "a_mask.npz") and record["width"] == 40
    with np.load(tmp_path / "a_mask.npz", allow_pickle=False) as data:
        assert data["probs"].shape == (21, 30, 40)
        assert data["classes"][15] == "person"
    code, _, err = invoke(str(src), "-o", str(tmp_path / "a.png"), "--format", "probs",
                          "--model", str(ckpt))  # fmt: skip
    assert (code, err.splitlines()) == (1, [
        "Error: probabilities are .npz files, not .png. Give -o a .npz name or a folder."
    ])  # fmt: skip
    code, _, err = invoke(str(src), "-o", str(tmp_path / "c.npz"), "--format", "confidence",
                          "--model", str(ckpt))  # fmt: skip
    assert code == 0, err  # .npz is no image suffix: a folder named c.npz
    assert (tmp_path / "c.npz" / "a.png").is_file()
    code, _, err = invoke(str(src), "-o", str(tmp_path / "p.npz"), "--format", "probs",
                          "--model", str(ckpt))  # fmt: skip
    assert code == 0 and (tmp_path / "p.npz").is_file()
    code, _, err = invoke(str(src), "--format", "chances", "--model", str(ckpt))
    assert code == 2 and "Invalid value for '--format'" in err.splitlines()[-1]
    assert not (tmp_path / "a.png").exists()


def test_probability_formats_accept_more_than_256_classes(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model("deeplabv3_tiny", num_classes=300).eval()
    src = tmp_path / "a.png"
    Image.fromarray(photo(8, 9)).save(src)
    config = PredictConfig(output=str(tmp_path / "p.npz"), format="probs", device="cpu")
    assert predict_files(model, [str(src)], config, progress=False).written == 1
    with pytest.raises(ConfigError, match="palette masks hold at most 256 classes"):
        predict_files(model, [str(src)], PredictConfig(format="palette"), progress=False)
