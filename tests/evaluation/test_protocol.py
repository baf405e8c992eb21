"""The evaluation engine on synthetic data sets: exact answers, hand-computed confusion matrices,
multi-scale + flip, batching/worker invariance, per-image scores, the report, validation."""

from __future__ import annotations

import copy
import csv
import json
import multiprocessing
import os
import signal
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from support.data_builders import make_folder, make_voc, save_image, save_mask

from deeplabcli import EvalConfig, build_model, evaluate, run_evaluation
from deeplabcli.data import FolderDataset, open_dataset
from deeplabcli.errors import (
    ClassCountMismatchError,
    ConfigError,
    Interrupted,
    MissingDependencyError,
    OutputWriteError,
)
from deeplabcli.evaluation import protocol as evaluate_module
from deeplabcli.evaluation.metrics import compute_metrics
from deeplabcli.evaluation.protocol import evaluate_dataset
from deeplabcli.evaluation.scoring import Scorer, sigterm_raises
from deeplabcli.inference.segmenter import Segmenter
from deeplabcli.progress import ProgressHandle

STEMS = [f"im{i}" for i in range(5)]


def constant_model(num_classes: int, winner: int) -> torch.nn.Module:
    """A tiny model whose logits favour ``winner`` everywhere (classifier weights zeroed)."""
    model = build_model("deeplabv3_tiny", num_classes=num_classes).eval()
    with torch.no_grad():
        model.head.classifier.weight.zero_()
        model.head.classifier.bias.zero_()
        model.head.classifier.bias[winner] = 5.0
    return model


@pytest.fixture(scope="module")
def tiny3() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("deeplabv3_tiny", num_classes=3).eval()


@pytest.fixture
def folder(tmp_path: Path) -> FolderDataset:
    """5 random images (20×30) with blocky 3-class masks and a 255 top row."""
    return FolderDataset(make_folder(tmp_path / "ds", STEMS))


def hand_confusion(dataset, segmenter: Segmenter, count: int | None = None) -> np.ndarray:
    """The confusion matrix by hand: one prediction per image, numpy bincount over labelled
    pixels."""
    c = dataset.num_classes
    cm = np.zeros((c, c), dtype=np.int64)
    for i in range(count or len(dataset)):
        sample = dataset.load(i)
        pred = segmenter.masks([torch.from_numpy(sample.image).permute(2, 0, 1)])[0].numpy()
        keep = sample.mask != 255
        t, p = sample.mask[keep].astype(np.int64), pred[keep].astype(np.int64)
        cm += np.bincount(t * c + p, minlength=c * c).reshape(c, c)
    return cm


# ---------------------------------------------------------------------- exact answers
def test_perfect_predictions_give_miou_one(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "ds", [])
    for i, size in enumerate([(20, 30), (16, 16), (25, 18)]):
        save_image(root / "images" / f"p{i}.png", np.full((*size, 3), 40 * i, np.uint8))
        mask = np.ones(size, np.uint8)
        mask[:2] = 255  # ignored pixels are never counted, whatever is predicted there
        save_mask(root / "masks" / f"p{i}.png", mask, "L")
    metrics = evaluate(constant_model(3, winner=1), FolderDataset(root))
    assert metrics.miou == 1.0 and metrics.pixel_accuracy == 1.0
    assert metrics.mean_accuracy == 1.0 and metrics.fw_iou == 1.0
    assert metrics.absent == (0, 2)  # n/a: neither labelled nor predicted, not averaged
    assert metrics.to_dict()["per_class_iou"] == {"background": None, "cat": 1.0, "dog": None}
    assert metrics.pixels == 20 * 30 + 16 * 16 + 25 * 18 - 2 * (30 + 16 + 18)


def test_constant_prediction_has_a_known_confusion_matrix(folder: FolderDataset) -> None:
    labels = np.concatenate([folder.load(i).mask.ravel() for i in range(len(folder))])
    counts = np.bincount(labels[labels != 255], minlength=3)
    assert counts.all()  # every class is labelled somewhere
    metrics = evaluate(constant_model(3, winner=2), folder, scales=(0.75, 1.0), flip=True)
    expected = np.zeros((3, 3), np.int64)
    expected[:, 2] = counts
    np.testing.assert_array_equal(metrics.confusion, expected)
    total = counts.sum()
    assert metrics.iou[2] == pytest.approx(counts[2] / total)
    assert metrics.iou[0] == metrics.iou[1] == 0.0
    assert metrics.miou == pytest.approx(counts[2] / total / 3)
    assert metrics.pixel_accuracy == pytest.approx(counts[2] / total)
    assert metrics.mean_accuracy == pytest.approx(1 / 3)
    assert metrics.fw_iou == pytest.approx((counts[2] / total) ** 2)


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"output_stride": 8, "scales": (0.5, 1.0, 1.25), "flip": True},
    ],
    ids=["single-scale", "os8-multiscale-flip"],
)
def test_confusion_matrix_equals_the_hand_computed_one(folder, tiny3, options) -> None:
    segmenter = Segmenter(tiny3, device="cpu", **options)
    expected = hand_confusion(folder, segmenter)
    for workers in (0, 2):
        result = evaluate_dataset(tiny3, folder, device="cpu", workers=workers, **options)
        np.testing.assert_array_equal(result.metrics.confusion, expected)
        assert result.output_stride == options.get("output_stride", 16)
        assert result.scales == options.get("scales", (1.0,))
    assert tiny3.output_stride == 16  # the caller's model is untouched


@pytest.mark.parametrize(("streams", "batch_size"), [(2, 1), (3, 2)])
def test_streams_give_the_hand_computed_matrix_and_every_image(
    folder, tiny3, streams, batch_size
) -> None:
    expected = hand_confusion(folder, Segmenter(tiny3, device="cpu"))
    threads = torch.get_num_threads()
    result = evaluate_dataset(
        tiny3, folder, device="cpu", workers=0, streams=streams, batch_size=batch_size
    )
    assert torch.get_num_threads() == threads
    if batch_size == 1:
        np.testing.assert_array_equal(result.metrics.confusion, expected)
    assert result.metrics.confusion.sum() == expected.sum()
    assert [s.id for s in result.per_image] == [f"im{i}" for i in range(len(folder))]


def test_batching_equal_size_images_changes_nothing_but_rounding(folder, tiny3) -> None:
    one = evaluate(tiny3, folder, device="cpu").confusion
    batched = evaluate(tiny3, folder, device="cpu", batch_size=4, workers=2).confusion
    assert one.sum() == batched.sum()
    assert np.abs(one - batched).sum() <= 0.002 * one.sum()


def test_limit_takes_the_first_images(folder, tiny3) -> None:
    result = evaluate_dataset(tiny3, folder, device="cpu", workers=0, limit=2)
    assert [s.id for s in result.per_image] == ["im0", "im1"]
    expected = hand_confusion(folder, Segmenter(tiny3, device="cpu"), count=2)
    np.testing.assert_array_equal(result.metrics.confusion, expected)


def test_voc_layout_and_json_record(tmp_path: Path) -> None:
    voc = make_voc(tmp_path, {"val": ["a", "b", "c"]}, size=(24, 32))
    torch.manual_seed(1)
    model = build_model("deeplabv3_mobilenetv2_tiny", num_classes=21).eval()
    result = evaluate_dataset(
        model, open_dataset("voc", voc, "val"), device="cpu", model_name="tiny", flip=True
    )
    record = result.to_json()
    required = {"miou", "pixel_accuracy", "mean_accuracy", "fw_iou", "per_class_iou", "images",
                "model", "os", "scales", "flip"}  # fmt: skip
    assert required <= set(record)
    assert (record["images"], record["model"], record["os"]) == (3, "tiny", 8)  # its own OS
    assert (record["scales"], record["flip"], record["split"]) == ([1.0], True, "val")
    assert list(record["per_class_iou"]) == list(result.metrics.class_names)
    for key in ("miou", "pixel_accuracy", "mean_accuracy", "fw_iou"):
        assert 0.0 <= record[key] <= 1.0
    assert json.loads(json.dumps(record)) == record  # plain JSON, no NaN


def test_per_image_scores_and_worst_images(folder, tiny3) -> None:
    result = evaluate_dataset(tiny3, folder, device="cpu", workers=2, keep_worst=2)
    segmenter = Segmenter(tiny3, device="cpu")
    for score in result.per_image:
        sample = folder.load(score.index)
        own = compute_metrics(hand_confusion_one(sample, segmenter), folder.class_names)
        assert score.id == sample.id and score.pixels == own.pixels
        assert score.miou == pytest.approx(own.miou)
        assert score.pixel_accuracy == pytest.approx(own.pixel_accuracy)
    ranked = sorted(result.per_image, key=lambda s: (s.miou, s.index))
    assert [w.score.index for w in result.worst] == [s.index for s in ranked[:2]]
    for worst in result.worst:
        sample = folder.load(worst.score.index)
        assert worst.prediction.shape == sample.mask.shape and worst.prediction.dtype == np.uint8
    summed = sum(hand_confusion_one(folder.load(i), segmenter) for i in range(len(folder)))
    np.testing.assert_array_equal(result.metrics.confusion, summed)


def hand_confusion_one(sample, segmenter: Segmenter) -> np.ndarray:
    pred = segmenter.masks([torch.from_numpy(sample.image).permute(2, 0, 1)])[0].numpy()
    keep = sample.mask != 255
    t, p = sample.mask[keep].astype(np.int64), pred[keep].astype(np.int64)
    return np.bincount(t * 3 + p, minlength=9).reshape(3, 3)


def test_class_count_mismatch_is_an_error_before_any_work(folder, monkeypatch) -> None:
    def no_work(*args, **kwargs):
        raise AssertionError("a Segmenter was built")

    monkeypatch.setattr(evaluate_module, "Segmenter", no_work)
    with pytest.raises(ClassCountMismatchError) as caught:
        evaluate(build_model("deeplabv3_tiny", num_classes=5), folder)
    assert str(caught.value) == (
        "the model predicts 5 classes but the folder data set (split 'all') has 3. Evaluate a "
        "model trained for this data set's classes, or fine-tune one on it with "
        "`deeplab finetune`."
    )


def test_validation_during_training_runs_the_model_itself(folder, tiny3) -> None:
    """What training does: optimize=False runs the model as it is and restores train mode."""
    tiny3.train()
    try:
        result = evaluate_dataset(tiny3, folder, device="cpu", optimize=False, workers=0)
        assert tiny3.training
    finally:
        tiny3.eval()
    expected = hand_confusion(folder, Segmenter(tiny3, device="cpu", optimize=False))
    np.testing.assert_array_equal(result.metrics.confusion, expected)


def test_a_model_loaded_for_the_run_is_optimised_in_place(folder, tiny3, monkeypatch) -> None:
    built = []

    def segmenter(*args, **kwargs):
        built.append(kwargs)
        return Segmenter(*args, **kwargs)

    monkeypatch.setattr(evaluate_module, "Segmenter", segmenter)
    evaluate(tiny3, folder)  # the caller's model: optimised on a copy, left as it was
    assert built[-1]["inplace"] is False
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in tiny3.modules())
    monkeypatch.setattr("deeplabcli.weights.resolve.load_model", lambda ref: copy.deepcopy(tiny3))
    config = EvalConfig(dataset="folder", data_root=str(folder.root), model="x", workers=0)
    run_evaluation(config, progress=False)
    assert built[-1]["inplace"] is True


# ---------------------------------------------------------------------- report
def report_config(root: Path, report: Path, **changes) -> EvalConfig:
    options = {"dataset": "folder", "data_root": str(root), "report": str(report), "worst": 2,
               "workers": 0, "device": "cpu"}  # fmt: skip
    return EvalConfig(**{**options, **changes})


def test_report_files(tmp_path: Path, folder, tiny3) -> None:
    report = tmp_path / "report"
    result = run_evaluation(report_config(folder.root, report), model=tiny3, progress=False)
    names = sorted(p.relative_to(report).as_posix() for p in report.rglob("*") if p.is_file())
    worst = [f"worst/{i + 1:02d}_{w.score.id}.png" for i, w in enumerate(result.worst)]
    assert names == sorted(["metrics.json", "per_class.csv", "per_image.csv", "index.html",
                            "confusion_matrix.png", "per_class_iou.png", *worst])  # fmt: skip
    data = json.loads((report / "metrics.json").read_text())
    assert data["confusion_matrix"] == result.metrics.confusion.tolist()
    assert data["miou"] == pytest.approx(result.metrics.miou) and data["images"] == 5
    assert data["model"] == "deeplabv3_tiny"  # no reference given: the model's architecture
    assert [w["file"] for w in data["worst_images"]] == worst
    rows = list(csv.DictReader((report / "per_class.csv").open()))
    assert [r["class"] for r in rows] == ["background", "cat", "dog"]
    for row, iou in zip(rows, result.metrics.iou, strict=True):
        assert float(row["iou"]) == pytest.approx(iou, abs=1e-6)
    assert [int(r["label_pixels"]) for r in rows] == result.metrics.confusion.sum(1).tolist()
    per_image = list(csv.DictReader((report / "per_image.csv").open()))
    assert [r["id"] for r in per_image] == STEMS
    for name in ("confusion_matrix.png", "per_class_iou.png"):
        with Image.open(report / name) as chart:
            assert chart.format == "PNG" and min(chart.size) >= 300
    with Image.open(report / worst[0]) as picture:  # image | ground truth | prediction
        assert picture.width > 3 * 30 and picture.height > 20
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds", "report"]  # no temporaries


def test_report_replaces_an_earlier_reports_files_and_keeps_the_users(
    tmp_path: Path, folder, tiny3
) -> None:
    """Issue 13: a report replaces what an earlier report wrote (its two worst images shrink to
    one), and nothing else: a file the user put among them stays as it was."""
    report = tmp_path / "report"
    run_evaluation(report_config(folder.root, report), model=tiny3, progress=False)
    earlier = sorted(p.name for p in (report / "worst").iterdir())
    assert len(earlier) == 2
    users = report / "worst" / "99_old.png"
    users.write_bytes(b"old")
    run_evaluation(report_config(folder.root, report, worst=1), model=tiny3, progress=False)
    worst = sorted(p.name for p in (report / "worst").iterdir())
    assert users.read_bytes() == b"old"
    assert len(worst) == 2 and "99_old.png" in worst  # one new worst image + the user's file
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds", "report"]


def test_report_refuses_a_folder_that_is_not_a_report(tmp_path, folder, tiny3, monkeypatch):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    monkeypatch.setattr(evaluate_module, "evaluate_dataset", pytest.fail)
    with pytest.raises(OutputWriteError) as caught:
        run_evaluation(report_config(folder.root, tmp_path / "mine"), model=tiny3)
    assert str(caught.value) == (
        f"{tmp_path / 'mine'} already holds files that are not an eval report. Give --report "
        "a new or empty folder (an earlier report there is replaced)."
    )
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_report_without_matplotlib_says_how_to_install_it(tmp_path, folder, tiny3, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib → ImportError
    monkeypatch.setattr(evaluate_module, "evaluate_dataset", pytest.fail)
    with pytest.raises(MissingDependencyError) as caught:
        run_evaluation(report_config(folder.root, tmp_path / "r"), model=tiny3)
    assert str(caught.value) == (
        "--report needs matplotlib to draw its charts, and it is not installed. "
        'Install it from the deeplabcli checkout with pip install ".[report]" (pipx: pipx '
        'inject deeplabcli matplotlib; from PyPI once published: pip install "deeplabcli[report]").'
    )
    assert not (tmp_path / "r").exists()


# ---------------------------------------------------------------------- stopping
def test_sigterm_stops_the_loop_and_its_loader_processes(folder, tiny3, monkeypatch) -> None:
    segmenter = Segmenter(tiny3, device="cpu")
    real_masks, calls = segmenter.masks, []

    def masks(pixels):
        calls.append(len(multiprocessing.active_children()))
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return real_masks(pixels)

    monkeypatch.setattr(segmenter, "masks", masks)
    scorer = Scorer(segmenter, folder, keep=0)
    with pytest.raises(Interrupted) as caught:
        scorer.run(list(range(len(folder))), workers=2, bar=ProgressHandle(None, None))
    assert caught.value.exit_code == 128 + signal.SIGTERM
    assert str(caught.value) == (
        "the evaluation was stopped by SIGTERM; nothing was written. Run it again to get the "
        "metrics."
    )
    assert calls[0] == 2 and multiprocessing.active_children() == []  # workers shut down
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handler restored


def test_sigterm_is_left_to_a_handler_already_installed(folder, tiny3) -> None:
    received = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: received.append(signum))
    try:
        with sigterm_raises():
            os.kill(os.getpid(), signal.SIGTERM)
        assert received == [signal.SIGTERM]
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_eval_config_defaults_and_checks() -> None:
    assert EvalConfig().split_name == "val"
    assert EvalConfig(dataset="folder").split_name == "all"
    assert EvalConfig(split="train").split_name == "train"
    assert EvalConfig(scales=[1, 2]).scales == (1.0, 2.0)
    for changes, problem in [
        ({"dataset": "coco"}, "dataset must be one of voc, folder"),
        ({"scales": (1.0, 0.0)}, "scales must be positive"),
        ({"batch_size": 0}, "batch size must be at least 1"),
        ({"workers": -1}, "workers must not be negative"),
        ({"limit": 0}, "limit must be at least 1"),
    ]:
        with pytest.raises(ConfigError) as caught:
            EvalConfig(**changes)
        assert str(caught.value) == f"{problem}. Fix the evaluation option."
