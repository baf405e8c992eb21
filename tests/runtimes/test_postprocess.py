"""Logits → class maps in numpy: the bilinear resizing is ``F.interpolate``'s, and a whole
numpy pre/post-processing round trip gives the Segmenter's mask on real photos."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from support.threads import one_thread  # noqa: F401 - applies to this module
from torch.nn import functional as F

from deeplabcli.data.images import read_image
from deeplabcli.inference.segmenter import Segmenter
from deeplabcli.runtimes.postprocess import class_map, resize_scores, source_index
from deeplabcli.runtimes.preprocess import preprocess
from deeplabcli.weights.resolve import load_model


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize(("src", "dst"), [((4, 5), (9, 7)), ((9, 7), (4, 5)), ((1, 3), (5, 1))])
def test_resize_scores_is_torch_bilinear(src, dst, align_corners) -> None:
    scores = np.random.default_rng(0).standard_normal((3, *src)).astype(np.float32)
    expected = F.interpolate(
        torch.from_numpy(scores)[None], size=dst, mode="bilinear", align_corners=align_corners
    )[0].numpy()
    np.testing.assert_allclose(resize_scores(scores, dst, align_corners), expected, atol=1e-5)


def test_source_index_by_hand() -> None:
    low, high, weight = source_index(4, 2, align_corners=False)  # src = (i + 0.5) / 2 - 0.5
    assert low.tolist() == [0, 0, 0, 1] and high.tolist() == [1, 1, 1, 1]  # ≥ 0, ≤ last
    np.testing.assert_allclose(weight, [0.0, 0.25, 0.75, 0.25])  # the last: 1 + 0.25 of x[1]
    low, high, weight = source_index(3, 2, align_corners=True)  # src = i / 2
    assert low.tolist() == [0, 0, 1] and high.tolist() == [1, 1, 1]
    np.testing.assert_allclose(weight, [0.0, 0.5, 0.0])


def test_class_map_crops_resizes_and_takes_the_first_of_equal_scores() -> None:
    logits = np.zeros((1, 3, 4, 4), dtype=np.float32)
    logits[0, 2, :2, :2] = 5.0  # class 2 in the top-left of the 2×2 content
    logits[0, 1, 2:, :] = 9.0  # in the padding only: cropped away
    mask = class_map(logits, (2, 2), (4, 4), align_corners=True)
    assert mask.dtype == np.uint8 and mask.shape == (4, 4)
    assert (mask == 2).all()  # ties of 0 and 0 elsewhere would pick class 0: none here
    flat = class_map(np.zeros((2, 3, 3), np.float32), (3, 3), (3, 3), False)
    assert (flat == 0).all()  # equal scores: the first class, as torch.argmax
    many = class_map(np.zeros((300, 2, 2), np.float32), (2, 2), (2, 2), False)
    assert many.dtype == np.int64


def test_numpy_round_trip_gives_the_segmenters_masks(photos_dir: Path, tflite_float_path) -> None:
    """preprocess → the torch network → class_map equals Segmenter.predict (the torch path)."""
    model = load_model(tflite_float_path)
    seg = Segmenter(model, optimize=False)
    for name in ("dog.jpg", "cat.bmp", "chelsea.png"):
        rgb = np.asarray(read_image(photos_dir / name))
        x, content = preprocess(rgb, model.config.preprocessing)
        with torch.inference_mode():
            logits = model(torch.from_numpy(x))["out"].numpy()
        mask = class_map(logits, content, rgb.shape[:2], model.config.align_corners)
        agreement = float((mask == seg.predict(rgb)).mean())
        assert agreement >= 0.9999, (name, agreement)
