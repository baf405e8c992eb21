"""Tiled inference: window placement, blend weights, band streaming, and tiles vs whole images."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from support.data_builders import make_folder
from support.stubs import RAW, PixelModel, PositionModel
from torch.nn import functional as F

from deeplabcli import build_model, load_model
from deeplabcli.cli import main
from deeplabcli.config import InferenceConfig, Preprocessing
from deeplabcli.errors import ConfigError
from deeplabcli.inference.scores import first_argmax
from deeplabcli.inference.segmenter import Segmenter
from deeplabcli.inference.tiles import (
    Tiling,
    blend_weights,
    falloff,
    resize_bands,
    window_bands,
    window_starts,
)
from deeplabcli.weights.checkpoint import save_checkpoint


def photo(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def pixels(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image).permute(2, 0, 1)


# ---------------------------------------------------------------------- placement and weights
def test_window_starts_by_hand() -> None:
    assert window_starts(10, 6, 0.5) == [0, 2, 4]  # stride 3: 2 steps of 2
    assert window_starts(13, 6, 0.5) == [0, 2, 5, 7]  # 7 / 3 = 2.33 per step
    assert window_starts(6, 6, 0.5) == [0]  # one window fits exactly
    assert window_starts(4, 6, 0.0) == [0]
    assert window_starts(1026, 513, 0.0) == [0, 513]  # no overlap needed, none made
    assert window_starts(1000, 257, 0.25) == [0, 186, 372, 557, 743]  # stride 192 → 5 windows


@pytest.mark.parametrize("overlap", [0.0, 0.25, 0.5, 0.9])
def test_windows_cover_every_pixel_and_overlap_at_least_as_asked(overlap: float) -> None:
    for length in range(1, 120):
        for window in (1, 2, 7, 16, 33):
            starts = window_starts(length, min(window, length), overlap)
            side = min(window, length)
            covered = np.zeros(length, bool)
            for s in starts:
                covered[s : s + side] = True
            assert covered.all() and starts[0] == 0 and starts[-1] == length - side
            steps = np.diff(starts)
            assert (steps >= 1).all()
            assert (side - steps >= math.floor(side * overlap)).all()  # the overlap in pixels
            stride = max(1, math.floor(side * (1 - overlap)))
            assert len(starts) == (1 if length <= side else math.ceil((length - side) / stride) + 1)


def test_falloff_weights_are_a_tent_that_never_reaches_zero() -> None:
    torch.testing.assert_close(falloff(6), torch.tensor([1, 2, 3, 3, 2, 1]) / 3.0)
    torch.testing.assert_close(falloff(5), torch.tensor([1, 2, 3, 2, 1]) / 3.0)
    torch.testing.assert_close(falloff(1), torch.tensor([1.0]))
    weights = blend_weights(4, 6, "falloff")
    torch.testing.assert_close(weights, falloff(4)[:, None] * falloff(6)[None, :])
    assert weights.min() == pytest.approx(1 / 2 * 1 / 3)
    assert torch.equal(blend_weights(4, 6, "mean"), torch.ones(4, 6))
    with pytest.raises(ValueError, match="unknown blend 'max'"):
        blend_weights(4, 6, "max")


def brute_force_blend(size, tile, overlap, blend, value) -> np.ndarray:
    """Reference: Σ_windows weight · value(window-local y, x) / Σ weights, pixel by pixel."""
    height, width = size
    rows, cols = min(tile, height), min(tile, width)
    weight = blend_weights(rows, cols, blend).numpy().astype(np.float64)
    total = np.zeros(size)
    acc = np.zeros(size)
    for top in window_starts(height, rows, overlap):
        for left in window_starts(width, cols, overlap):
            ys, xs = np.mgrid[:rows, :cols]
            acc[top : top + rows, left : left + cols] += weight * value(ys, xs)
            total[top : top + rows, left : left + cols] += weight
    return acc / total


@pytest.mark.parametrize("blend", ["falloff", "mean"])
@pytest.mark.parametrize("batch", [1, 3])
def test_blended_logits_of_a_position_model_match_the_hand_computed_sums(blend, batch) -> None:
    model = PositionModel()
    source = pixels(photo(10, 13))
    with torch.inference_mode():
        bands = list(
            window_bands(source, Tiling(6, 0.5, blend), lambda x: model(x)["out"], batch=batch)
        )
    blended = torch.cat(bands, 1)  # (2, 10, 13): blended (row, column) in the windows
    assert blended.shape == (2, 10, 13)
    # row 3 lies in the windows starting at rows 0 (local row 3, weight 3/3) and 2 (local 1,
    # weight 2/3); the column weights cancel out of the row channel
    expected_row3 = (1 * 3 + 2 / 3 * 1) / (1 + 2 / 3) if blend == "falloff" else (3 + 1) / 2
    assert blended[0, 3] == pytest.approx(np.full(13, expected_row3), abs=1e-5)
    for channel, value in ((0, lambda y, x: y), (1, lambda y, x: x)):
        expected = brute_force_blend((10, 13), 6, 0.5, blend, value)
        np.testing.assert_allclose(blended[channel].numpy(), expected, atol=1e-5)


def test_bands_stream_top_to_bottom_within_two_windows() -> None:
    model = PixelModel()
    source = pixels(photo(200, 30, seed=1))
    tiling = Tiling(20, 0.25)
    with torch.inference_mode():
        bands = list(window_bands(source, tiling, lambda x: model(x)["out"], batch=2))
        one_by_one = torch.cat(
            list(window_bands(source, tiling, lambda x: model(x)["out"], batch=1)), 1
        )
    assert sum(b.shape[1] for b in bands) == 200
    assert max(b.shape[1] for b in bands) <= 20  # released as soon as no window adds to them
    assert all(b.shape[0] == 3 and b.shape[2] == 30 for b in bands)
    torch.testing.assert_close(torch.cat(bands, 1), one_by_one, atol=1e-6, rtol=0)


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("size", [(50, 61), (20, 11), (37, 23)])
def test_resizing_bands_equals_resizing_the_whole_map(align_corners: bool, size) -> None:
    scores = torch.randn(4, 37, 23, generator=torch.Generator().manual_seed(0))
    cuts = [0, 5, 6, 19, 30, 37]
    bands = (scores[:, a:b] for a, b in itertools.pairwise(cuts))
    resized = torch.cat(list(resize_bands(bands, (37, 23), size, align_corners)), 1)
    expected = F.interpolate(scores[None], size=size, mode="bilinear", align_corners=align_corners)
    torch.testing.assert_close(resized, expected[0], atol=1e-5, rtol=0)


# ---------------------------------------------------------------------- tiles vs whole images
@pytest.mark.parametrize("which", ["model", "fit_model"])
@pytest.mark.parametrize("runs", [{}, {"scales": (0.5, 1.0), "flip": True}])
def test_a_window_at_least_as_large_as_the_image_is_plain_inference_exactly(
    request, which: str, runs: dict
) -> None:
    model = request.getfixturevalue(which)
    image = photo(37, 53, seed=2)
    plain = Segmenter(model, device="cpu", **runs)
    for tile in (53, 1000):  # as large as the image's long side, and larger
        tiled = Segmenter(model, device="cpu", tile=tile, **runs)
        assert tiled.tiling is not None and not tiled._tiled((37, 53))
        assert torch.equal(tiled.probabilities(image), plain.probabilities(image))
        assert np.array_equal(tiled.predict(image), plain.predict(image))


@pytest.mark.parametrize("blend", ["falloff", "mean"])
def test_tiles_equal_whole_images_for_a_model_without_context(blend: str) -> None:
    model = PixelModel()
    image = photo(70, 95, seed=3)
    for runs in ({}, {"scales": (0.5, 1.0, 1.5), "flip": True}):
        whole = Segmenter(model, device="cpu", optimize=False, **runs)
        for batch in (1, 4):
            tiled = Segmenter(model, device="cpu", optimize=False, tile=32, tile_overlap=0.3,
                              tile_blend=blend, batch_size=batch, **runs)  # fmt: skip
            probs = tiled.probabilities(image)
            assert probs.shape == (3, 70, 95)
            torch.testing.assert_close(probs, whole.probabilities(image), atol=1e-5, rtol=0)
            assert np.array_equal(tiled.predict(image), whole.predict(image))
            assert tiled.batch_key((70, 95)) == (0, 0)  # tiled images batch with anything


def test_fit_models_see_windows_padded_to_the_tile_square() -> None:
    seen: list[tuple[int, ...]] = []

    class Recording(PositionModel):
        def forward(self, x):
            seen.append(tuple(x.shape))
            return super().forward(x)

    image = photo(20, 6, seed=4)  # taller than the window, narrower than it
    fit = Preprocessing(mean=RAW.mean, std=RAW.std, resize="fit", size=8)
    for prep, window in ((RAW, (8, 6)), (fit, (8, 8))):
        seen.clear()
        segmenter = Segmenter(Recording(prep), device="cpu", optimize=False, tile=8, batch_size=5)
        probs = segmenter.probabilities(image)
        assert probs.shape == (2, 20, 6)
        assert seen == [(1, 3, *window)] * 3  # rows 0, 6, 12: one window each, one per pass


def test_multi_scale_mixes_whole_and_tiled_runs() -> None:
    model = PixelModel()
    image = photo(60, 40, seed=5)
    tiled = Segmenter(model, device="cpu", optimize=False, tile=32, scales=(0.5, 1.0))
    whole = Segmenter(model, device="cpu", optimize=False, scales=(0.5, 1.0))
    assert tiled._tiled((60, 40))  # at 0.5 it fits (30 × 20), at 1 it does not
    torch.testing.assert_close(tiled.probabilities(image), whole.probabilities(image), atol=1e-5,
                               rtol=0)  # fmt: skip


def test_a_real_model_tiled_gives_probabilities_and_their_argmax(model) -> None:
    image = photo(64, 96, seed=6)
    segmenter = Segmenter(model, device="cpu", tile=48, tile_overlap=0.5, scales=(1.0, 1.25))
    probs = segmenter.probabilities(image)
    assert probs.shape == (21, 64, 96) and probs.dtype == torch.float32
    torch.testing.assert_close(probs.sum(0), torch.ones(64, 96), atol=1e-5, rtol=0)
    mask = segmenter.predict(image)
    assert mask.shape == (64, 96) and mask.dtype == np.uint8
    assert np.array_equal(mask, first_argmax(probs).numpy())


# ---------------------------------------------------------------------- bad options
def test_bad_tile_options_are_config_errors(model) -> None:
    for fields, problem in (
        ({"tile": 0}, "tile size must be at least 1 pixel"),
        ({"tile": 64, "tile_overlap": 1.0}, "tile overlap must be at least 0 and below 1"),
        ({"tile_overlap": -0.1}, "tile overlap must be at least 0 and below 1"),
        ({"tile_overlap": float("nan")}, "tile overlap must be at least 0 and below 1"),
        ({"tile_blend": "max"}, "tile blend must be one of falloff, mean"),
    ):
        with pytest.raises(ConfigError) as caught:
            InferenceConfig(**fields)
        assert str(caught.value) == f"{problem}. Fix the inference option."
    with pytest.raises(ConfigError) as caught:
        Segmenter(model, device="cpu", tile=15)
    assert str(caught.value) == (
        "--tile 15 is smaller than the model's output stride (16): a window would not hold one "
        "feature. Use --tile of at least 16, e.g. 513 (the usual input size)."
    )
    Segmenter(model, device="cpu", tile=16)  # one feature per window is allowed
    Segmenter(model, device="cpu", tile=8, output_stride=8)


@pytest.fixture(scope="module")
def tiny3(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = build_model("deeplabv3_tiny", num_classes=3).eval()
    return save_checkpoint(model, tmp_path_factory.mktemp("ckpt") / "tiny3")


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def test_tile_options_on_the_command_line(tmp_path: Path, tiny3: Path) -> None:
    data = make_folder(tmp_path / "ds", ["a", "b"], size=(40, 56))
    image = str(data / "images" / "a.png")
    for command in (["predict", image, "-o", str(tmp_path / "m.png")], ["eval", "--dataset",
                    "folder", "--data-root", str(data), "--workers", "0"]):  # fmt: skip
        code, out, err = invoke(*command, "--model", str(tiny3), "--tile", "8")
        assert (code, out) == (1, "")
        assert err.splitlines() == [
            "Error: --tile 8 is smaller than the model's output stride (16): a window would not "
            "hold one feature. Use --tile of at least 16, e.g. 513 (the usual input size)."
        ]
        code, _, err = invoke(*command, "--model", str(tiny3), "--tile", "0")
        assert code == 2
        assert err.splitlines()[-1] == (
            "Error: Invalid value for '--tile': 0 is not in the range x>=1."
        )
        code, _, err = invoke(
            *command, "--model", str(tiny3), "--tile", "32", "--tile-overlap", "1"
        )
        assert code == 2
        assert err.splitlines()[-1] == (
            "Error: Invalid value for '--tile-overlap': 1.0 is not in the range 0<=x<1."
        )
    assert not (tmp_path / "m.png").exists()
    # eval reaches the tiles: a window as large as the images is the plain protocol exactly
    base = ["eval", "--dataset", "folder", "--data-root", str(data), "--workers", "0", "--json",
            "--model", str(tiny3), "-q"]  # fmt: skip
    plain = json.loads(invoke(*base)[1])
    same = json.loads(invoke(*base, "--tile", "56")[1])
    tiled = json.loads(invoke(*base, "--tile", "24", "--tile-overlap", "0.5")[1])
    assert same["miou"] == plain["miou"] and same["per_class_iou"] == plain["per_class_iou"]
    assert tiled["images"] == 2 and 0 <= tiled["miou"] <= 1
    # predict writes the tiled mask
    out = tmp_path / "tiled.png"
    code, _, err = invoke("predict", image, "-o", str(out), "--model", str(tiny3), "--tile", "24")
    assert code == 0, err
    expected = Segmenter(load_model(tiny3), device="cpu", tile=24).predict(image)
    assert np.array_equal(np.asarray(Image.open(out)), expected)
