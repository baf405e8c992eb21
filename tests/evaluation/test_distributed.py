"""``deeplab eval`` under ``torchrun --nproc-per-node 2`` on CPU (gloo): ranks split the
images, the confusion matrices are all-reduced, and only rank 0 prints and writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from support.data_builders import make_folder, save_mask

from deeplabcli import build_model
from deeplabcli.weights.checkpoint import save_checkpoint

pytestmark = pytest.mark.distributed

ROOT = Path(__file__).resolve().parents[2]
IMAGES = 16  # of the 120 shared val images: enough for both ranks, quick on 2 cores


def deeplab(args: list[str], *, ranks: int = 1) -> subprocess.CompletedProcess:
    """``python -m deeplabcli ...`` or the same under torchrun (free port via --standalone),
    one thread per process in both cases so their arithmetic is the same."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    launcher = [sys.executable]
    if ranks > 1:
        launcher += ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={ranks}"]
    command = [*launcher, "-m", "deeplabcli", "eval", "--device", "cpu", *args]
    return subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240, check=False
    )


def test_two_ranks_give_the_single_process_confusion_matrix(
    voc_root: Path, tflite_float_path: Path, tmp_path: Path
) -> None:
    common = ["--data-root", str(voc_root), "--model", str(tflite_float_path), "--limit",
              str(IMAGES), "--json", "--workers", "1", "--worst", "2"]  # fmt: skip
    single = deeplab([*common, "--report", str(tmp_path / "single"), "-q"])
    assert single.returncode == 0, single.stderr
    double = deeplab([*common, "--report", str(tmp_path / "double")], ranks=2)
    assert double.returncode == 0, double.stderr
    one, two = (
        json.loads((tmp_path / n / "metrics.json").read_text()) for n in ("single", "double")
    )
    assert np.array(two["confusion_matrix"]).sum() > 1_000_000
    assert two["confusion_matrix"] == one["confusion_matrix"]
    assert two["images"] == one["images"] == IMAGES
    assert [w["id"] for w in two["worst_images"]] == [w["id"] for w in one["worst_images"]]
    ids = (voc_root / "ImageSets" / "Segmentation" / "val.txt").read_text().split()[:IMAGES]
    rows = (tmp_path / "double" / "per_image.csv").read_text().splitlines()[1:]
    assert [row.split(",")[1] for row in rows] == ids  # both ranks' images, in order
    # only rank 0 printed and wrote
    assert len(double.stdout.strip().splitlines()) == 1
    assert json.loads(double.stdout)["miou"] == one["miou"]
    assert double.stderr.count("Per-class IoU") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["double", "single"]


def test_a_bad_file_on_one_rank_stops_every_rank(tmp_path: Path) -> None:
    data = make_folder(tmp_path / "ds", [f"im{i}" for i in range(7)])
    bad = data / "masks" / "im3.png"  # rank 1's second image
    mask = np.zeros((20, 30), np.uint8)
    mask[0, 0] = 42
    save_mask(bad, mask, "L")
    torch.manual_seed(0)
    ckpt = save_checkpoint(build_model("deeplabv3_tiny", num_classes=3), tmp_path / "tiny")
    done = deeplab(["--dataset", "folder", "--data-root", str(data), "--model", str(ckpt),
                    "--workers", "0", "--json"], ranks=2)  # fmt: skip
    assert done.returncode != 0
    message = (
        f"Error: {bad} has label values outside 0..2 and 255: 42. Fix the mask, or check that "
        "the data set has 3 classes."
    )
    assert [line for line in done.stderr.splitlines() if line.startswith("Error: ")] == [message]
    assert done.stdout == ""
