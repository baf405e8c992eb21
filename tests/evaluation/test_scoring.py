"""deeplabcli.evaluation.scoring: per-image scores (ImageScore), the worst-k images
(WorstImage) and the Scorer loop, checked against values worked out independently.

Two models: one whose logits are the same everywhere (it predicts class 0 on every pixel, so
each image's scores follow from its mask by hand), and a random tiny network whose predictions
are scored here again with numpy.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from support.threads import one_thread  # noqa: F401 (autouse: applies to this module)

from deeplabcli.config import InferenceConfig
from deeplabcli.data.folder import FolderDataset
from deeplabcli.evaluation import ImageScore, WorstImage, evaluate_dataset
from deeplabcli.evaluation.scoring import Scorer
from deeplabcli.inference.segmenter import Segmenter
from deeplabcli.models import DeepLabV3, build_model
from deeplabcli.progress import ProgressHandle

SIDE = 16
CLASSES = ("background", "cat", "dog")


def hand_masks() -> dict[str, np.ndarray]:
    """Masks whose scores under an all-class-0 prediction are easy to work out."""
    half = np.zeros((SIDE, SIDE), np.uint8)
    half[SIDE // 2 :] = 1
    quarter = np.full((SIDE, SIDE), 2, np.uint8)
    quarter[:4] = 0
    quarter[4:8] = 255
    return {
        "m0_all_background": np.zeros((SIDE, SIDE), np.uint8),
        "m1_half_cat": half,
        "m2_void": np.full((SIDE, SIDE), 255, np.uint8),
        "m3_cat": np.ones((SIDE, SIDE), np.uint8),
        "m4_quarter": quarter,
        "m5_dog": np.full((SIDE, SIDE), 2, np.uint8),
    }


#: (miou, pixel accuracy, labelled pixels) of each mask when every pixel is predicted 0:
#: IoU(0) = n0 / N, every other labelled class has IoU 0, and the mean runs over class 0 plus
#: the labelled classes; nothing labelled → NaN.
EXPECTED = [
    (1.0, 1.0, 256),
    ((128 / 256) / 2, 0.5, 256),
    (math.nan, math.nan, 0),
    (0.0, 0.0, 256),
    ((64 / 192) / 2, 64 / 192, 192),
    (0.0, 0.0, 256),
]
#: lowest mIoU first, ties by index; the unlabelled image (2) is never among them
WORST_ORDER = [3, 5, 4, 1, 0]


def write_folder(root: Path, masks: dict[str, np.ndarray], seed: int = 0) -> FolderDataset:
    """A custom data set of ``masks``; each image has two flat colours, left and right."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n", encoding="utf-8")
    for stem, mask in masks.items():
        image = np.empty((*mask.shape, 3), np.uint8)
        left, right = rng.integers(0, 256, (2, 3))
        image[:, : mask.shape[1] // 2] = left
        image[:, mask.shape[1] // 2 :] = right
        Image.fromarray(image).save(root / "images" / f"{stem}.png")
        Image.fromarray(mask).save(root / "masks" / f"{stem}.png")
    return FolderDataset(root)


def constant_model(winner: int) -> DeepLabV3:
    """Logits that favour ``winner`` on every pixel: classifier weights zero, one bias up."""
    model = build_model("deeplabv3_tiny", num_classes=len(CLASSES)).eval()
    with torch.no_grad():
        model.head.classifier.weight.zero_()
        model.head.classifier.bias.zero_()
        model.head.classifier.bias[winner] = 5.0
    return model


class Recorder(ProgressHandle):
    """A progress handle that remembers every advance."""

    def __init__(self) -> None:
        super().__init__(None, None)
        self.calls: list[tuple[float, dict]] = []

    def advance(self, amount: float = 1, **fields) -> None:
        self.calls.append((amount, fields))


@pytest.fixture(scope="module")
def hand(tmp_path_factory: pytest.TempPathFactory) -> FolderDataset:
    return write_folder(tmp_path_factory.mktemp("hand"), hand_masks())


@pytest.fixture(scope="module")
def zero_model() -> DeepLabV3:
    return constant_model(0)


@pytest.fixture(scope="module")
def zero_segmenter(zero_model: DeepLabV3) -> Segmenter:
    return Segmenter(zero_model, InferenceConfig(device="cpu", batch_size=1, streams=1))


def run(segmenter, dataset, indices, *, keep=0) -> tuple[Scorer, Recorder]:
    """Score ``indices`` in the main process (no loader workers), recording the progress."""
    scorer = Scorer(segmenter, dataset, keep)
    bar = Recorder()
    scorer.run(list(indices), 0, bar)
    return scorer, bar


def assert_score(score: ImageScore, miou: float, accuracy: float, pixels: int) -> None:
    for got, want in ((score.miou, miou), (score.pixel_accuracy, accuracy)):
        if math.isnan(want):
            assert math.isnan(got)
        else:
            assert got == pytest.approx(want, abs=1e-12)
    assert score.pixels == pixels


# ---------------------------------------------------------------------- known model output
def test_the_constant_model_predicts_class_zero_everywhere(hand, zero_segmenter) -> None:
    pixels = torch.from_numpy(hand.load(1).image).permute(2, 0, 1)
    prediction = zero_segmenter.masks([pixels])[0]
    assert prediction.dtype == torch.uint8 and tuple(prediction.shape) == (SIDE, SIDE)
    assert int(prediction.max()) == 0


def test_per_image_scores_by_hand(hand: FolderDataset, zero_segmenter: Segmenter) -> None:
    scorer, _ = run(zero_segmenter, hand, range(len(hand)))
    assert [s.index for s in scorer.scores] == list(range(6))
    assert [s.id for s in scorer.scores] == list(hand_masks())
    for score, expected in zip(scorer.scores, EXPECTED, strict=True):
        assert isinstance(score, ImageScore)
        assert_score(score, *expected)
    # the running matrix: every labelled pixel in column 0, rows = label counts
    labels = np.concatenate([m[m != 255] for m in hand_masks().values()])
    expected = np.zeros((3, 3), np.int64)
    expected[:, 0] = np.bincount(labels, minlength=3)
    np.testing.assert_array_equal(scorer.matrix.matrix.numpy(), expected)


@pytest.mark.parametrize(("keep", "expected"), [(1, [3]), (2, [3, 5]), (3, [3, 5, 4]),
                                                (10, WORST_ORDER)])  # fmt: skip
def test_worst_k_lowest_miou_first_ties_by_index(hand, zero_segmenter, keep, expected) -> None:
    scorer, _ = run(zero_segmenter, hand, range(len(hand)), keep=keep)
    worst = scorer.worst()
    assert all(isinstance(w, WorstImage) for w in worst)
    ranked = sorted(worst, key=lambda w: (w.score.miou, w.score.index))
    assert [w.score.index for w in ranked] == expected
    for w in worst:
        assert w.score is scorer.scores[w.score.index]  # the same score object
        assert w.prediction.dtype == np.uint8 and w.prediction.shape == (SIDE, SIDE)
        assert not w.prediction.any()  # class 0 everywhere


def test_worst_ties_go_to_the_lower_index_in_any_order(hand, zero_segmenter) -> None:
    scorer, _ = run(zero_segmenter, hand, [5, 4, 3, 2, 1, 0], keep=1)
    assert [s.index for s in scorer.scores] == [5, 4, 3, 2, 1, 0]  # scored in the given order
    assert [w.score.index for w in scorer.worst()] == [3]


def test_keep_zero_keeps_no_predictions(hand, zero_segmenter) -> None:
    scorer, _ = run(zero_segmenter, hand, range(len(hand)), keep=0)
    assert scorer.worst() == [] and len(scorer.scores) == 6


def test_a_subset_of_indices_is_scored_alone(hand, zero_segmenter) -> None:
    scorer, bar = run(zero_segmenter, hand, [4, 1], keep=5)
    assert [s.index for s in scorer.scores] == [4, 1]
    assert_score(scorer.scores[0], *EXPECTED[4])
    assert_score(scorer.scores[1], *EXPECTED[1])
    # labels of images 4 and 1: class 0 → 64 + 128, class 1 → 128, class 2 → 128
    np.testing.assert_array_equal(scorer.matrix.matrix[:, 0].numpy(), [192, 128, 128])
    assert [w.score.index for w in sorted(scorer.worst(), key=lambda w: w.score.miou)] == [4, 1]
    assert sum(amount for amount, _ in bar.calls) == 2


def test_no_indices_no_work(hand, zero_segmenter) -> None:
    scorer, bar = run(zero_segmenter, hand, [], keep=3)
    assert scorer.scores == [] and scorer.worst() == [] and bar.calls == []
    assert not scorer.matrix.matrix.any()
    assert scorer.loop_seconds == 0.0 and scorer.load_wait == 0.0


def test_progress_shows_the_running_miou(hand, zero_model) -> None:
    segmenter = Segmenter(zero_model, InferenceConfig(device="cpu", batch_size=2, streams=1))
    scorer, bar = run(segmenter, hand, range(6))
    assert [amount for amount, _ in bar.calls] == [2, 2, 2]
    # after all six images: IoU(0) = 448 / 1216 pixels, classes 1 and 2 IoU 0
    last = bar.calls[-1][1]["mIoU"]
    assert last == pytest.approx((448 / 1216) / 3)
    # after the first batch (images 0, 1): IoU(0) = 384 / 512, class 1 IoU 0
    assert bar.calls[0][1]["mIoU"] == pytest.approx((384 / 512) / 2)
    assert 0.0 <= scorer.first_wait <= scorer.load_wait <= scorer.loop_seconds
    assert scorer.loop_seconds > 0.0


def test_evaluate_dataset_returns_the_sorted_worst_images(hand, zero_model) -> None:
    result = evaluate_dataset(zero_model, hand, device="cpu", workers=0, keep_worst=3)
    assert [w.score.index for w in result.worst] == [3, 5, 4]
    assert [s.index for s in result.per_image] == list(range(6))
    for score, expected in zip(result.per_image, EXPECTED, strict=True):
        assert_score(score, *expected)


# ---------------------------------------------------------------------- a real network
def numpy_score(mask: np.ndarray, prediction: np.ndarray, classes: int) -> tuple[float, float, int]:
    keep = mask != 255
    t, p = mask[keep].astype(np.int64), prediction[keep].astype(np.int64)
    cm = np.bincount(t * classes + p, minlength=classes * classes).reshape(classes, classes)
    tp = np.diag(cm).astype(float)
    union = cm.sum(0) + cm.sum(1) - tp
    total = cm.sum()
    if total == 0:
        return math.nan, math.nan, 0
    return float(np.mean(tp[union > 0] / union[union > 0])), float(tp.sum() / total), int(total)


@pytest.fixture(scope="module")
def random_data(tmp_path_factory: pytest.TempPathFactory) -> FolderDataset:
    rng = np.random.default_rng(1)
    masks = {}
    for i, (h, w) in enumerate([(24, 32), (24, 32), (20, 20), (32, 24), (24, 32)]):
        mask = np.kron(rng.integers(0, 3, (h // 4, w // 4)), np.ones((4, 4), np.int64))
        mask = mask.astype(np.uint8)
        mask[0] = 255
        masks[f"r{i}"] = mask
    return write_folder(tmp_path_factory.mktemp("random"), masks, seed=2)


@pytest.fixture(scope="module")
def random_model() -> DeepLabV3:
    torch.manual_seed(3)
    model = build_model("deeplabv3_tiny", num_classes=3, output_stride=8).eval()
    with torch.no_grad():  # spread the logits so that several classes win somewhere
        model.head.classifier.bias.zero_()
        model.head.classifier.weight.mul_(50.0)
    return model


@pytest.mark.parametrize(("batch_size", "streams"), [(1, 1), (2, 2)])
def test_scores_match_numpy_on_the_networks_predictions(
    random_data, random_model, batch_size, streams
) -> None:
    config = InferenceConfig(device="cpu", batch_size=batch_size, streams=streams)
    segmenter = Segmenter(random_model, config)
    predictions = [segmenter.predict(random_data.load(i).image)
                   for i in range(len(random_data))]  # fmt: skip
    assert len({int(c) for p in predictions for c in np.unique(p)}) >= 2  # not constant
    scorer, bar = run(segmenter, random_data, range(len(random_data)), keep=2)
    expected = [numpy_score(random_data.load(i).mask, predictions[i], 3) for i in range(5)]
    assert [s.id for s in scorer.scores] == [f"r{i}" for i in range(5)]
    for score, (miou, accuracy, pixels) in zip(scorer.scores, expected, strict=True):
        assert score.miou == pytest.approx(miou, abs=1e-12)
        assert score.pixel_accuracy == pytest.approx(accuracy, abs=1e-12)
        assert score.pixels == pixels
    lowest = sorted(range(5), key=lambda i: (expected[i][0], i))[:2]
    worst = sorted(scorer.worst(), key=lambda w: (w.score.miou, w.score.index))
    assert [w.score.index for w in worst] == lowest
    for w in worst:
        np.testing.assert_array_equal(w.prediction, predictions[w.score.index])
    total = sum(numpy_confusion(random_data.load(i).mask, predictions[i]) for i in range(5))
    np.testing.assert_array_equal(scorer.matrix.matrix.numpy(), total)
    assert sum(amount for amount, _ in bar.calls) == 5


def numpy_confusion(mask: np.ndarray, prediction: np.ndarray) -> np.ndarray:
    keep = mask != 255
    t, p = mask[keep].astype(np.int64), prediction[keep].astype(np.int64)
    return np.bincount(t * 3 + p, minlength=9).reshape(3, 3)
