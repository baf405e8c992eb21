"""Real data (../shared/data): fine-tune Google's DeepLabv3-MobileNetV2 (converted from TFLite)
on the VOC trainaug slice, and bootstrap that list. Skipped where the data is absent."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from deeplabcli.cli import main
from deeplabcli.config import HARD_CLASSES, VOC_CLASSES
from deeplabcli.data import open_dataset
from deeplabcli.evaluation.protocol import evaluate_dataset
from deeplabcli.training.run_dir import MetricsLog
from deeplabcli.training.stage2 import finetune
from deeplabcli.weights.resolve import load_model


@pytest.mark.slow
def test_finetune_tflite_model_keeps_its_knowledge(
    voc_root: Path, tflite_float_path: Path, tmp_path: Path
) -> None:
    """60 iterations, crop 257, batch 4 on trainaug (400 images); mIoU on the 120 val images
    stays within 2 points of the start or improves.

    The model's batch norm is folded into its convolutions (no BN modules: "BN frozen" holds
    trivially). Folding rescales every conv weight by gamma/sigma, so a plain SGD step on the
    folded weights is far larger in effect than the same lr on the unfolded network: the
    paper's lr 0.001 (meant for weights behind frozen BN) wrecks this model (measured: mIoU
    0.467 → 0.041 after 60 steps). lr 1e-5 is used.
    """
    model = load_model(tflite_float_path)
    assert not any("BatchNorm" in type(m).__name__ for m in model.modules())
    val = open_dataset("voc", voc_root, "val")
    before = evaluate_dataset(model, val, device="cpu", optimize=False, workers=2).metrics.miou
    result = finetune(
        str(tflite_float_path), data_root=str(voc_root), split="trainaug", crop_size=257,
        batch_size=4, iters=60, lr=1e-5, val_split="val", val_every=60, log_every=10,
        workers=2, device="cpu", out=str(tmp_path / "run"), progress=False,
    )  # fmt: skip
    print(f"val mIoU before {before:.4f}, after 60 iterations {result.val_miou:.4f}")
    assert result.iteration == 60
    assert result.val_miou is not None and result.val_miou >= before - 0.02
    tuned = load_model(tmp_path / "run")
    assert tuned.config.preprocessing == model.config.preprocessing  # still Google's 257 "fit"


@pytest.mark.slow
def test_a_fresh_classifier_learns_on_real_data_on_a_cpu(
    voc_root: Path, tflite_float_path: Path, tmp_path: Path
) -> None:
    """The README's "what to expect from a CPU": Google's DeepLabv3-MobileNetV2 (depth 0.5,
    257, converted from TFLite) with its classifier re-initialised (nothing else), fine-tuned
    by `deeplab finetune` on the 400 trainaug images for 300 iterations of batch 4 at crop 257
    with the paper's poly schedule: metrics.jsonl shows the loss falling and the val mIoU of
    --val-every 100 rising, to ≥ 70 % of the original model's mIoU on the 120 val images.

    Issue 15 asked for 80 %. Measured: a classifier trained to convergence (Adam, 300 full
    passes) on the fixed features of these 400 images reaches 0.357 on val, 76 % of Google's
    0.467 (its classifier learnt from 10K images), so 80 % is out of reach for a fresh
    classifier on this slice; this run gets 0.346 (74 %).

    lr: the backbone's batch norm is folded into its convolutions, so it keeps lr 1e-5 (see
    the test above; backbone lr 1e-4 measured 0.272 after 300 steps, the backbone at lr 0
    the same as at 1e-5); the fresh classifier needs ~1e-2 to learn in 300 steps, hence
    --classifier-lr-mult 1000 (TF DeepLab's last_layer_gradient_multiplier). It runs as a
    separate process with OMP_WAIT_POLICY=PASSIVE: on a CPU shared with other work, spinning
    OpenMP threads made the same run 7x slower.
    """
    val = open_dataset("voc", voc_root, "val")
    original = load_model(tflite_float_path)
    before = evaluate_dataset(original, val, device="cpu", optimize=False, workers=2).metrics
    out = tmp_path / "run"
    command = [
        sys.executable, "-m", "deeplabcli", "finetune", str(tflite_float_path),
        "--data-root", str(voc_root), "--split", "trainaug", "--reinit-classifier",
        "--crop-size", "257", "--batch-size", "4", "--iters", "300", "--lr", "1e-5",
        "--classifier-lr-mult", "1000", "--val-split", "val", "--val-every", "100",
        "--log-every", "10", "--workers", "1", "--device", "cpu", "--out", str(out),
    ]  # fmt: skip
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, timeout=1800,
                          env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})  # fmt: skip
    seconds = time.perf_counter() - start
    assert done.returncode == 0, done.stderr[-3000:]
    assert (
        f"Re-initialised the classifier of {tflite_float_path} (--reinit-classifier): "
        "head.classifier.weight (21, 256, 1, 1), head.classifier.bias (21,). Every other tensor "
        "was loaded."
    ) in " ".join(done.stderr.split())
    records = MetricsLog(out).records()
    losses = [r["loss"] for r in records if "loss" in r]
    val_mious = {r["iteration"]: r["val_miou"] for r in records if "val_miou" in r}
    print(
        f"{seconds:.0f} s; val mIoU before {before.miou:.4f}, during the run {val_mious}; "
        f"loss every 10 iterations {[round(v, 3) for v in losses]}"
    )
    assert before.miou > 0.45  # Google's model on these 120 images (0.467)
    assert sorted(val_mious) == [100, 200, 300] and len(losses) == 30
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:3])  # the loss falls
    assert val_mious[300] > val_mious[100]
    assert val_mious[300] >= 0.7 * before.miou
    tuned = evaluate_dataset(load_model(out), val, device="cpu", optimize=False, workers=2)
    assert tuned.metrics.miou == pytest.approx(val_mious[300], abs=1e-6)  # the saved model


def test_bootstrap_real_trainaug(voc_root: Path, tmp_path: Path) -> None:
    output = tmp_path / "trainaug_bootstrap.txt"
    result = CliRunner().invoke(
        main, ["bootstrap", "--data-root", str(voc_root), "--split", "trainaug", "-o", str(output)]
    )
    assert result.exit_code == 0, result.output
    print(result.stderr)
    ids = (voc_root / "ImageSets" / "Segmentation" / "trainaug.txt").read_text().split()
    hard = [VOC_CLASSES.index(name) for name in HARD_CLASSES]
    expected = []
    for image_id in ids:  # read the masks independently of the data module
        mask = np.asarray(Image.open(voc_root / "SegmentationClassAug" / f"{image_id}.png"))
        expected.extend([image_id] * (2 if np.isin(mask, hard).any() else 1))
    assert output.read_text().split() == expected
    assert len(expected) > len(ids)  # the slice has some hard images
    assert len(open_dataset("voc", voc_root, str(output))) == len(expected)
