"""The numpy/Pillow preprocessing is the Segmenter's (torch) preprocessing: same placement,
same resized and normalised pixels, on real photos and on hand-made images."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from support.threads import one_thread  # noqa: F401 - applies to this module
from torch.nn import functional as F

from deeplabcli import build_model
from deeplabcli.config import INCEPTION_MEAN, INCEPTION_STD, Preprocessing
from deeplabcli.data.images import read_image
from deeplabcli.inference.segmenter import Segmenter, as_pixels
from deeplabcli.runtimes.preprocess import normalise, placement, preprocess, resize_rgb

FIT_513 = Preprocessing(mean=INCEPTION_MEAN, std=INCEPTION_STD, resize="fit", size=513)
FIT_257 = Preprocessing(mean=INCEPTION_MEAN, std=INCEPTION_STD, resize="fit", size=257)
NONE = Preprocessing()  # ImageNet mean/std, each image at its own size
#: |numpy − torch| on normalised inputs (measured up to 1.8e-4 on the photos: Pillow resamples
#: in float64, torch in float32); 5e-4 is 0.03 of a grey level with ImageNet's std
TOLERANCE = 5e-4


def segmenter(prep: Preprocessing) -> Segmenter:
    return Segmenter(build_model("deeplabv3_mobilenetv2_tiny", preprocessing=prep), optimize=False)


def torch_input(seg: Segmenter, rgb: np.ndarray, scale: float = 1.0) -> tuple[np.ndarray, tuple]:
    """What the Segmenter feeds its network for ``rgb`` at ``scale``: (input, content)."""
    place = seg._placement(rgb.shape[:2], scale)
    x = seg._prepare(as_pixels(rgb).float()[None], place)
    return x.contiguous().numpy(), place.content


@pytest.mark.parametrize("prep", [FIT_513, FIT_257, NONE], ids=["fit513", "fit257", "none"])
@pytest.mark.parametrize("scale", [1.0, 0.5, 1.75])
def test_real_photos_match_the_segmenter(photos_dir: Path, prep, scale) -> None:
    seg = segmenter(prep)
    worst = 0.0
    for path in sorted(photos_dir.iterdir()):  # 9 photos: 300×451 to 773×512, PNG/JPEG/BMP
        rgb = np.asarray(read_image(path))
        x, content = preprocess(rgb, prep, scale=scale)
        expected, expected_content = torch_input(seg, rgb, scale)
        assert x.dtype == np.float32 and x.flags.c_contiguous
        assert x.shape == expected.shape and content == expected_content, path.name
        worst = max(worst, float(np.abs(x - expected).max()))
    print(f"{prep.resize} {prep.size} scale {scale}: max |numpy - torch| {worst:.2e}")
    assert worst <= TOLERANCE


@pytest.mark.parametrize("size", [(1, 1), (2, 7), (7, 2), (13, 9), (64, 64), (300, 417)])
@pytest.mark.parametrize("prep", [FIT_513, FIT_257, NONE], ids=["fit513", "fit257", "none"])
def test_placement_is_the_segmenters_for_every_shape(size, prep) -> None:
    seg = segmenter(prep)
    for scale in (0.25, 0.5, 1.0, 1.25, 2.0):
        place = seg._placement(size, scale)
        assert placement(size, prep, scale) == (place.content, place.canvas)


def test_small_images_are_upscaled_and_padded_like_torch() -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (5, 3, 3), dtype=np.uint8)
    x, content = preprocess(rgb, FIT_257)
    assert content == (257, 154) and x.shape == (1, 3, 257, 257)
    assert not x[..., :, 154:].any()  # padding: zeros, the mean colour after normalisation
    expected, _ = torch_input(segmenter(FIT_257), rgb)
    assert np.abs(x - expected).max() <= TOLERANCE


def test_normalise_is_the_documented_formula() -> None:
    pixels = np.array([0.0, 127.5, 255.0], dtype=np.float32).reshape(3, 1, 1).repeat(2, axis=2)
    out = normalise(pixels.copy(), NONE)
    mean, std = np.array(NONE.mean).reshape(3, 1, 1), np.array(NONE.std).reshape(3, 1, 1)
    np.testing.assert_allclose(out, (pixels / 255 - mean) / std, rtol=0, atol=1e-6)


def test_resize_rgb_keeps_an_image_at_its_size_and_antialiases_when_shrinking() -> None:
    rgb = np.random.default_rng(1).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    same = resize_rgb(rgb, (16, 16))
    assert same.shape == (3, 16, 16) and np.array_equal(same, rgb.transpose(2, 0, 1))
    small = resize_rgb(rgb, (5, 7))
    pixels = torch.from_numpy(rgb).permute(2, 0, 1)[None].float()

    def torch_resize(antialias: bool) -> np.ndarray:
        return F.interpolate(pixels, size=(5, 7), mode="bilinear", align_corners=False,
                             antialias=antialias)[0].numpy()  # fmt: skip

    np.testing.assert_allclose(small, torch_resize(antialias=True), atol=1e-3)
    assert np.abs(small - torch_resize(antialias=False)).max() > 10  # a 2-tap filter aliases


def test_bad_arrays_are_refused() -> None:
    with pytest.raises(ValueError, match=r"expected uint8 RGB pixels \(H, W, 3\), got float32"):
        preprocess(np.zeros((4, 4, 3), dtype=np.float32), NONE)
    with pytest.raises(ValueError, match=r"got uint8 \(4, 4\)"):
        preprocess(np.zeros((4, 4), dtype=np.uint8), NONE)


def test_it_does_not_import_torch() -> None:
    code = (
        "import sys, numpy as np\n"
        "from deeplabcli.config import Preprocessing\n"
        "from deeplabcli.runtimes.preprocess import preprocess\n"
        "from deeplabcli.runtimes.postprocess import class_map\n"
        "x, c = preprocess(np.zeros((5, 7, 3), np.uint8), Preprocessing(resize='fit', size=9))\n"
        "assert x.shape == (1, 3, 9, 9) and c == (6, 9)\n"
        "assert 'torch' not in sys.modules\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
