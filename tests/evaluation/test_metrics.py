"""Confusion-matrix metrics: a hand-computed case, n/a classes, parity with torchmetrics."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torchmetrics.classification import MulticlassJaccardIndex

from deeplabcli.data import open_dataset
from deeplabcli.evaluation.metrics import (
    ConfusionMatrix,
    _confusion_matrix_torch,
    compute_metrics,
    confusion_matrix,
)

LABELS = np.array([0, 0, 0, 1, 1, 2, 2, 2, 255])
PREDICTIONS = np.array([0, 0, 1, 1, 2, 2, 2, 0, 1])


def test_hand_computed_three_classes() -> None:
    cm = confusion_matrix(LABELS, PREDICTIONS, 3)
    assert cm.tolist() == [[2, 1, 0], [0, 1, 1], [1, 0, 2]]
    m = compute_metrics(cm, ["a", "b", "c"])
    # IoU = TP / (TP + FP + FN): 2/4, 1/3, 2/4
    np.testing.assert_allclose(m.iou, [0.5, 1 / 3, 0.5])
    assert m.miou == pytest.approx(4 / 9, abs=1e-15)
    assert m.pixel_accuracy == pytest.approx(5 / 8, abs=1e-15)
    np.testing.assert_allclose(m.accuracy, [2 / 3, 1 / 2, 2 / 3])
    assert m.mean_accuracy == pytest.approx(11 / 18, abs=1e-15)
    assert m.fw_iou == pytest.approx((3 * 0.5 + 2 / 3 + 3 * 0.5) / 8, abs=1e-15)
    assert m.absent == () and m.pixels == 8
    assert m.to_dict()["per_class_iou"] == pytest.approx({"a": 0.5, "b": 1 / 3, "c": 0.5})


def test_absent_classes_are_na_and_left_out_of_the_means() -> None:
    labels = np.array([0, 0, 1, 1, 255])
    predictions = np.array([0, 3, 1, 1, 2])  # class 2 absent (its one pixel is ignored)
    m = compute_metrics(confusion_matrix(labels, predictions, 4))
    assert m.absent == (2,)
    assert math.isnan(m.iou[2])
    assert m.iou[3] == 0.0  # predicted but never labelled: a real error, not n/a
    assert m.miou == pytest.approx((1 / 2 + 1 + 0) / 3)
    assert math.isnan(m.accuracy[3]) and m.mean_accuracy == pytest.approx((1 / 2 + 1) / 2)
    d = m.to_dict()
    assert d["per_class_iou"]["class_2"] is None and d["absent_classes"] == ["class_2"]
    assert d["per_class_accuracy"]["class_3"] is None


def test_nothing_labelled_gives_nan_not_an_exception() -> None:
    m = compute_metrics(confusion_matrix(np.full(4, 255), np.zeros(4, dtype=int), 3))
    assert math.isnan(m.miou) and math.isnan(m.pixel_accuracy) and m.absent == (0, 1, 2)
    assert m.to_dict()["miou"] is None


def test_numpy_and_torch_inputs_agree_and_bad_values_are_refused() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, (2, 30, 40)).astype(np.uint8)
    labels[:, :3] = 255
    predictions = rng.integers(0, 5, (2, 30, 40))
    as_numpy = confusion_matrix(labels, predictions, 5)
    as_torch = confusion_matrix(torch.from_numpy(labels), torch.from_numpy(predictions), 5)
    assert isinstance(as_numpy, np.ndarray) and as_torch.dtype == torch.int64
    np.testing.assert_array_equal(as_numpy, as_torch.numpy())
    assert as_numpy.sum() == (labels != 255).sum()
    # the on-device path (used for CUDA tensors) counts the same, also run here on the CPU
    on_device = _confusion_matrix_torch(
        torch.from_numpy(labels), torch.from_numpy(predictions), 5, 255
    )
    np.testing.assert_array_equal(on_device.numpy(), as_numpy)
    with pytest.raises(ValueError, match=r"outside \[0, 5\)"):
        confusion_matrix(labels, predictions + 1, 5)
    with pytest.raises(ValueError, match=r"outside \[0, 5\)"):
        _confusion_matrix_torch(torch.from_numpy(labels), torch.from_numpy(predictions) - 1, 5, 255)
    with pytest.raises(ValueError, match="differ in shape"):
        confusion_matrix(labels, predictions[0], 5)
    running = ConfusionMatrix(5)
    for i in range(2):
        running.update(labels[i], predictions[i])
    np.testing.assert_array_equal(running.matrix.numpy(), as_numpy)
    assert running.compute().miou == compute_metrics(as_numpy).miou


def _torchmetrics_iou(pairs: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """torchmetrics over all pixels at once (one update: its per-call validation is slow)."""
    metric = MulticlassJaccardIndex(num_classes=21, ignore_index=255, average="none")
    labels = np.concatenate([lab.ravel() for lab, _ in pairs])
    predictions = np.concatenate([p.ravel() for _, p in pairs])
    metric.update(torch.from_numpy(predictions).long(), torch.from_numpy(labels).long())
    return metric.compute().double().numpy()


def _ours(pairs: list[tuple[np.ndarray, np.ndarray]]):
    running = ConfusionMatrix(21)
    for labels, predictions in pairs:
        running.update(labels, predictions)
    return running.compute()


def _assert_parity(pairs: list[tuple[np.ndarray, np.ndarray]]) -> None:
    ours, theirs = _ours(pairs), _torchmetrics_iou(pairs)
    considered = ~np.isnan(ours.iou)  # torchmetrics reports 0 for absent classes
    assert considered.sum() >= 5
    np.testing.assert_allclose(ours.iou[considered], theirs[considered], atol=1e-6, rtol=0)
    assert abs(ours.miou - theirs[considered].mean()) <= 1e-6
    assert np.all(theirs[~considered] == 0)


def test_parity_with_torchmetrics_on_random_predictions() -> None:
    rng = np.random.default_rng(1)
    pairs = []
    for _ in range(4):
        labels = rng.integers(0, 21, (37, 53)).astype(np.uint8)
        labels[rng.random(labels.shape) < 0.1] = 255
        pairs.append((labels, rng.integers(0, 21, labels.shape).astype(np.uint8)))
    _assert_parity(pairs)
    # and with a few classes absent altogether
    _assert_parity(
        [(np.where(lab > 12, 0, lab).astype(np.uint8), np.where(p > 12, 1, p)) for lab, p in pairs]
    )


def _real_looking(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A plausible prediction: the true mask, shifted a little, borders resolved, one class
    confused with another and a spurious blob."""
    prediction = np.roll(
        mask, shift=(int(rng.integers(-6, 7)), int(rng.integers(-6, 7))), axis=(0, 1)
    )
    prediction = np.where(prediction == 255, 0, prediction)
    present = [c for c in np.unique(mask) if 0 < c < 255]
    if present:
        prediction[prediction == present[0]] = (present[0] % 20) + 1
    y, x = rng.integers(0, mask.shape[0] - 20), rng.integers(0, mask.shape[1] - 20)
    prediction[y : y + 20, x : x + 20] = rng.integers(0, 21)
    return prediction.astype(np.uint8)


def test_parity_with_torchmetrics_on_real_masks(voc_root: Path) -> None:
    val = open_dataset("voc", voc_root, "val")
    rng = np.random.default_rng(2)
    pairs = []
    for index in range(0, len(val), 4):
        mask = val.load_mask(index)
        pairs.append((mask, _real_looking(mask, rng)))
    _assert_parity(pairs)


def test_frequency_weighted_iou_weighs_by_the_labels_not_the_predictions() -> None:
    """Label counts (6, 2) and prediction counts (4, 4) differ, and so do the IoUs (2/3, 1/2):
    weighting by labels gives (6·2/3 + 2·1/2) / 8 = 0.625; by predictions it would be
    (4·2/3 + 4·1/2) / 8 ≈ 0.583."""
    labels = np.array([0, 0, 0, 0, 0, 0, 1, 1])
    predictions = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    m = compute_metrics(confusion_matrix(labels, predictions, 2))
    np.testing.assert_allclose(m.iou, [2 / 3, 1 / 2])
    assert m.fw_iou == pytest.approx(0.625, abs=1e-15)
    assert m.fw_iou != pytest.approx((4 * 2 / 3 + 4 * 0.5) / 8, abs=1e-3)
